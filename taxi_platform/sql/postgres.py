"""Every Postgres statement the platform runs, built from the catalogue.

Identifiers come from the catalogue (a closed set) and are quoted with
``psycopg.sql.Identifier``; values are parameters. The assets, the tests and the benchmark
all build their SQL here, so what is measured is what runs.

How a month moves, and why it is cheap:
- ``COPY`` streams the file into an unlogged staging table private to the month, whose
  ``unique_row_id`` is a stored generated column: the ids are computed while the rows
  arrive, instead of in a second pass (the zoomcamp flow's ``UPDATE`` rewrites every row).
- One ``INSERT ... SELECT ... WHERE NOT EXISTS`` moves the rows whose id the final table
  does not hold yet, in the same transaction that records the file in a ledger and drops
  the staging table. Rows duplicated inside one file are all kept, like the zoomcamp
  ``MERGE ... WHEN NOT MATCHED`` keeps them.
- The ledger (``taxi_platform.loaded_files``) lets a re-run of a loaded, unchanged file
  finish without touching the data.
"""

from __future__ import annotations

from datetime import date

from psycopg import sql

from taxi_platform.catalog import TaxiType

STAGING_SCHEMA = "taxi_staging"
LEDGER_SCHEMA = "taxi_platform"
ROW_ID_FUNCTION = "zoomcamp_row_id"

# The id's text casts are Postgres's own (timestamps as `2019-01-01 00:10:16`, doubles in
# shortest form: `.86` -> `0.86`). Declared IMMUTABLE so that it can feed a generated
# column; that holds because every session that writes staging rows pins the two settings
# the casts depend on (see SESSION_SETTINGS).
CREATE_ROW_ID_FUNCTION = sql.SQL(
    """
create or replace function {schema}.{function}(
    vendor_id text, pickup timestamp, dropoff timestamp, pickup_location text,
    dropoff_location text, fare_amount double precision, trip_distance double precision
) returns text language sql immutable parallel safe as $$
    select md5(coalesce(vendor_id::text, '') || coalesce(pickup::text, '')
        || coalesce(dropoff::text, '') || coalesce(pickup_location, '')
        || coalesce(dropoff_location, '') || coalesce(fare_amount::text, '')
        || coalesce(trip_distance::text, ''))
$$
"""
).format(schema=sql.Identifier(STAGING_SCHEMA), function=sql.Identifier(ROW_ID_FUNCTION))

SESSION_SETTINGS = (
    sql.SQL("set datestyle to 'ISO, MDY'"),
    sql.SQL("set extra_float_digits to 1"),
)

LEDGER_TABLE = sql.Identifier(LEDGER_SCHEMA, "loaded_files")


def setup_statements(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """Schemas, the id function, the final table (zoomcamp DDL), its id index, the ledger."""
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(column.postgres_name), sql.SQL(column.postgres_type))
        for column in taxi.columns
    ]
    return [
        sql.SQL("create schema if not exists {}").format(sql.Identifier(STAGING_SCHEMA)),
        sql.SQL("create schema if not exists {}").format(sql.Identifier(LEDGER_SCHEMA)),
        sql.SQL("create schema if not exists {}").format(sql.Identifier(final_schema)),
        CREATE_ROW_ID_FUNCTION,
        sql.SQL(
            "create table if not exists {table} (unique_row_id text, filename text, {columns})"
        ).format(table=final_table(taxi, final_schema), columns=sql.SQL(", ").join(columns)),
        sql.SQL("create index if not exists {index} on {table} (unique_row_id)").format(
            index=sql.Identifier(f"{taxi.table}_unique_row_id_idx"),
            table=final_table(taxi, final_schema),
        ),
        sql.SQL(
            "create table if not exists {ledger} (table_name text, filename text, "
            "sha256 text not null, rows_staged bigint not null, rows_inserted bigint not null, "
            "loaded_at timestamptz not null default now(), primary key (table_name, filename))"
        ).format(ledger=LEDGER_TABLE),
    ]


def final_table(taxi: TaxiType, final_schema: str = "public") -> sql.Identifier:
    return sql.Identifier(final_schema, taxi.table)


def staging_table(taxi: TaxiType, month_start: date) -> sql.Identifier:
    return sql.Identifier(STAGING_SCHEMA, taxi.month_table(month_start))


def _id_arguments(taxi: TaxiType) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.Identifier(taxi.column(name).postgres_name) for name in taxi.postgres_id_columns
    )


def create_staging(taxi: TaxiType, month_start: date) -> sql.Composable:
    """An unlogged table for one month whose ids and filename fill in as COPY writes."""
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(column.postgres_name), sql.SQL(column.postgres_type))
        for column in taxi.columns
    ]
    return sql.SQL(
        "create unlogged table {staging} ("
        "unique_row_id text generated always as ({schema}.{function}({id_arguments})) stored, "
        "filename text not null default {filename}, {columns})"
    ).format(
        staging=staging_table(taxi, month_start),
        schema=sql.Identifier(STAGING_SCHEMA),
        function=sql.Identifier(ROW_ID_FUNCTION),
        id_arguments=_id_arguments(taxi),
        filename=sql.Literal(taxi.csv_name(month_start)),
        columns=sql.SQL(", ").join(columns),
    )


def drop_staging(taxi: TaxiType, month_start: date) -> sql.Composable:
    return sql.SQL("drop table if exists {}").format(staging_table(taxi, month_start))


def copy_into_staging(taxi: TaxiType, month_start: date) -> sql.Composable:
    return sql.SQL("copy {staging} ({columns}) from stdin with (format csv, header true)").format(
        staging=staging_table(taxi, month_start),
        columns=sql.SQL(", ").join(sql.Identifier(c.postgres_name) for c in taxi.columns),
    )


def month_lock(taxi: TaxiType, month_start: date) -> sql.Composable:
    """Serializes two runs of the same month (they would share a staging table)."""
    return sql.SQL("select pg_advisory_xact_lock(hashtext({key}))").format(
        key=sql.Literal(f"taxi_platform:staging:{taxi.month_table(month_start)}")
    )


def table_lock(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """Serializes merges into one final table, so that concurrent months cannot both
    insert an id that neither saw (out-of-month pickups make ids meet across files)."""
    return sql.SQL("select pg_advisory_xact_lock(hashtext({key}))").format(
        key=sql.Literal(f"taxi_platform:merge:{final_schema}.{taxi.table}")
    )


def count_rows(table: sql.Identifier) -> sql.Composable:
    return sql.SQL("select count(*) from {}").format(table)


def staging_exists(taxi: TaxiType, month_start: date) -> sql.Composable:
    return sql.SQL("select to_regclass({name}) is not null").format(
        name=sql.Literal(f"{STAGING_SCHEMA}.{taxi.month_table(month_start)}")
    )


def merge_into_final(
    taxi: TaxiType, month_start: date, final_schema: str = "public"
) -> sql.Composable:
    """Insert the staged rows whose id the final table does not hold yet."""
    target_columns = sql.SQL(", ").join(
        [sql.Identifier("unique_row_id"), sql.Identifier("filename")]
        + [sql.Identifier(c.postgres_name) for c in taxi.columns]
    )
    return sql.SQL(
        "insert into {final} ({columns}) select {columns} from {staging} as staged "
        "where not exists (select 1 from {final} as existing "
        "where existing.unique_row_id = staged.unique_row_id)"
    ).format(
        final=final_table(taxi, final_schema),
        staging=staging_table(taxi, month_start),
        columns=target_columns,
    )


def ledger_entry(taxi: TaxiType, month_start: date, final_schema: str = "public") -> sql.Composable:
    return sql.SQL(
        "select sha256, rows_staged, rows_inserted from {ledger} "
        "where table_name = {table} and filename = {filename}"
    ).format(
        ledger=LEDGER_TABLE,
        table=sql.Literal(f"{final_schema}.{taxi.table}"),
        filename=sql.Literal(taxi.csv_name(month_start)),
    )


def record_load(taxi: TaxiType, month_start: date, final_schema: str = "public") -> sql.Composable:
    """Upsert the ledger row; parameters: sha256, rows_staged, rows_inserted."""
    return sql.SQL(
        "insert into {ledger} (table_name, filename, sha256, rows_staged, rows_inserted) "
        "values ({table}, {filename}, %s, %s, %s) on conflict (table_name, filename) do update "
        "set sha256 = excluded.sha256, rows_staged = excluded.rows_staged, "
        "rows_inserted = excluded.rows_inserted, loaded_at = now()"
    ).format(
        ledger=LEDGER_TABLE,
        table=sql.Literal(f"{final_schema}.{taxi.table}"),
        filename=sql.Literal(taxi.csv_name(month_start)),
    )
