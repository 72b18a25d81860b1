"""Every Postgres statement the platform runs, built from the catalogue.

Identifiers come from the catalogue (a closed set) and are quoted with
``psycopg.sql.Identifier``; values are parameters. The assets, the tests and the benchmark
all build their SQL here, so what is measured is what runs.

How a month moves, and why it is cheap:
- ``COPY`` streams the file into an unlogged staging table private to the month: no WAL,
  no index, nothing computed (as fast as a bare COPY).
- One ``INSERT ... SELECT`` moves the rows whose id the final table does not hold yet,
  computing ``unique_row_id`` and ``filename`` on the way: the one pass that writes the
  final table also computes the ids (the zoomcamp flow's ``UPDATE`` rewrites every staged
  row first). It commits together with a ledger entry and the drop of the staging table.
  Rows duplicated inside one file are all kept, as the zoomcamp ``MERGE ... WHEN NOT
  MATCHED`` keeps them.
- The id check reads only the final table's rows that could share an id with the month:
  the id hashes the pickup, so equal ids have equal pickups, and the rows at the month's
  pickups are those inside the month (a range of the pickup btree) plus the exact
  pickups of its few out-of-month rows. They go into a temporary table, and the insert
  anti-joins the staged rows against it by hash: a cost that grows with the month and
  with what already sits at its pickups, never with the table's history (a lookup per
  staged row in the 124M-row index cost more as the table grew). Months arrive roughly
  in time order, so the pickup btree grows at its right edge, where a btree on md5 ids
  would be written all over for every row. A BRIN index on ``filename`` (rows of a file
  are appended together) finds a month's rows for the checks at almost no cost to the
  load.
- The ledger (``taxi_platform.loaded_files``) lets a re-run of a loaded, unchanged file
  finish without touching the data.
"""

from __future__ import annotations

from datetime import date

from psycopg import sql

from taxi_platform.lib.catalog import Column, TaxiType

STAGING_SCHEMA = "taxi_staging"
LEDGER_SCHEMA = "taxi_platform"

# The id's text casts are Postgres's own (timestamps as `2019-01-01 00:10:16`, doubles in
# shortest form: `.86` -> `0.86`), and depend on two settings; the merge pins them.
SESSION_SETTINGS = (
    sql.SQL("set local datestyle to 'ISO, MDY'"),
    sql.SQL("set local extra_float_digits to 1"),
)

# The duplicate check's id lookup should probe the pickup index once per row of the
# month, a cost that grows with the month, never with the table's history. Left alone, the
# planner hashes the whole final table instead, and the hash only grows as months
# accumulate.
ID_LOOKUP_PLAN_SETTINGS = (
    sql.SQL("set local enable_hashjoin to off"),
    sql.SQL("set local enable_mergejoin to off"),
)

# The merge's anti-join against the rows at the month's pickups: by hash, one pass over the
# staged rows. A nested loop would scan the candidates once per staged row.
MERGE_PLAN_SETTINGS = (
    sql.SQL("set local enable_nestloop to off"),
    sql.SQL("set local enable_mergejoin to off"),
)

LEDGER_TABLE = sql.Identifier(LEDGER_SCHEMA, "loaded_files")
# Rows of the final table at the pickups of the month being merged (``collect_rows_at_pickups``).
ROWS_AT_PICKUPS = sql.Identifier("taxi_platform_rows_at_pickups")


def setup_statements(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """Schemas, the id function, the final table (zoomcamp DDL), its id index, the ledger."""
    return [
        sql.SQL("create schema if not exists {}").format(sql.Identifier(STAGING_SCHEMA)),
        sql.SQL("create schema if not exists {}").format(sql.Identifier(LEDGER_SCHEMA)),
        sql.SQL("create schema if not exists {}").format(sql.Identifier(final_schema)),
        sql.SQL(
            "create table if not exists {table} (unique_row_id text, filename text, {columns})"
        ).format(table=final_table(taxi, final_schema), columns=column_definitions(taxi.columns)),
        *add_optional_columns(taxi, final_schema),
        *final_table_indexes(taxi, final_schema),
        sql.SQL(
            "create table if not exists {ledger} (table_name text, filename text, "
            "sha256 text not null, rows_staged bigint not null, rows_inserted bigint not null, "
            "loaded_at timestamptz not null default now(), primary key (table_name, filename))"
        ).format(ledger=LEDGER_TABLE),
    ]


def add_optional_columns(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """The catalogue's optional trailing columns (schema drift), added to a table that lacks
    them; NULL for the months loaded before. The catalog is looked at first, so a table
    that has them is not locked (``alter table`` takes an exclusive lock even when it ends
    up doing nothing, and would wait for a merge running on another month)."""
    return [
        sql.SQL(
            "do $$ begin if not exists (select 1 from information_schema.columns "
            "where table_schema = {schema} and table_name = {table} and column_name = {name}) "
            "then alter table {final} add column if not exists {column} {type}; end if; end $$"
        ).format(
            schema=sql.Literal(final_schema),
            table=sql.Literal(taxi.table),
            name=sql.Literal(column.postgres_name),
            final=final_table(taxi, final_schema),
            column=sql.Identifier(column.postgres_name),
            type=sql.SQL(column.postgres_type),
        )
        for column in taxi.optional_columns
    ]


def final_table_indexes(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """The two indexes we add to the zoomcamp table (see the module docstring for why)."""
    return [
        sql.SQL("create index if not exists {index} on {table} ({pickup})").format(
            index=sql.Identifier(f"{taxi.table}_pickup_idx"),
            table=final_table(taxi, final_schema),
            pickup=pickup_identifier(taxi),
        ),
        sql.SQL("create index if not exists {index} on {table} using brin (filename)").format(
            index=sql.Identifier(f"{taxi.table}_filename_brin"),
            table=final_table(taxi, final_schema),
        ),
    ]


def column_definitions(columns: tuple[Column, ...]) -> sql.Composable:
    """Columns with their zoomcamp types, as a table definition lists them."""
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(column.postgres_name), sql.SQL(column.postgres_type))
        for column in columns
    )


def final_table(taxi: TaxiType, final_schema: str = "public") -> sql.Identifier:
    return sql.Identifier(final_schema, taxi.table)


def staging_table(taxi: TaxiType, month_start: date) -> sql.Identifier:
    return sql.Identifier(STAGING_SCHEMA, taxi.month_table(month_start))


def pickup_identifier(taxi: TaxiType) -> sql.Identifier:
    """The pickup time's column, as the final table spells it (every index and check uses it)."""
    return sql.Identifier(taxi.column(taxi.pickup_column).postgres_name)


def unique_row_id(taxi: TaxiType) -> sql.Composable:
    """The zoomcamp id: md5 over the id columns' text, an empty string for a NULL."""
    return sql.SQL("md5({})").format(
        sql.SQL(" || ").join(
            sql.SQL("coalesce(cast({} as text), '')").format(
                sql.Identifier(taxi.column(name).postgres_name)
            )
            for name in taxi.postgres_id_columns
        )
    )


def create_staging(taxi: TaxiType, month_start: date) -> sql.Composable:
    """An unlogged table for one month, with every catalogue column and nothing else (the
    optional ones stay NULL when the file lacks them).

    Autovacuum is off for it: the table is written once, analyzed by the staging step,
    read once by the merge and dropped. Left on, autovacuum read whole staged months
    (a yellow month is a GB) while the merges it competes with for the disk ran
    (``bench.history``, yellow 2019).
    """
    return sql.SQL(
        "create unlogged table {staging} ({columns}) with (autovacuum_enabled = false)"
    ).format(staging=staging_table(taxi, month_start), columns=column_definitions(taxi.all_columns))


def drop_staging(taxi: TaxiType, month_start: date) -> sql.Composable:
    return sql.SQL("drop table if exists {}").format(staging_table(taxi, month_start))


def copy_into_staging(
    taxi: TaxiType, month_start: date, columns: tuple[Column, ...] | None = None
) -> sql.Composable:
    """COPY of a landed CSV; ``columns`` those its header has (the course layout by default,
    ``taxi.columns_of_header`` says which)."""
    columns = taxi.columns if columns is None else columns
    return sql.SQL("copy {staging} ({columns}) from stdin with (format csv, header true)").format(
        staging=staging_table(taxi, month_start),
        columns=sql.SQL(", ").join(sql.Identifier(c.postgres_name) for c in columns),
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


def heap_bytes(table: sql.Identifier) -> sql.Composable:
    """The table's size on disk: exact and free, unlike a count or a stale estimate."""
    return sql.SQL("select pg_relation_size({name})").format(name=sql.Literal(table.as_string()))


def count_rows(table: sql.Identifier) -> sql.Composable:
    return sql.SQL("select count(*) from {}").format(table)


def relation_exists(qualified_name: str) -> sql.Composable:
    """Whether a table (``schema.name``) exists, without locking or failing."""
    return sql.SQL("select to_regclass({name}) is not null").format(
        name=sql.Literal(qualified_name)
    )


def staging_exists(taxi: TaxiType, month_start: date) -> sql.Composable:
    return relation_exists(f"{STAGING_SCHEMA}.{taxi.month_table(month_start)}")


def collect_rows_at_pickups(
    taxi: TaxiType, month_start: date, final_schema: str = "public"
) -> sql.Composable:
    """The final table's (pickup, id) at the staged month's pickups, into a temporary table.

    Parameters: ``month_start``, ``month_end``, and ``final_has_rows`` (false skips
    reading the staged month for its out-of-month pickups and NULLs: an empty table holds
    nothing to meet). Everything stays in the server: the out-of-month pickups are a
    semi-join, not a list sent to the client and back (when a file's pickups lie all in
    another month, that list was the whole month, and a run's memory grew by 180 MB). The
    table lives until the commit.
    """
    pickup = pickup_identifier(taxi)
    final = final_table(taxi, final_schema)
    staging = staging_table(taxi, month_start)
    return sql.SQL(
        "create temporary table {rows} on commit drop as "
        "select {pickup} as pickup, unique_row_id from {final} "
        "where {pickup} >= %(month_start)s and {pickup} < %(month_end)s "
        "union all select existing.{pickup}, existing.unique_row_id from {final} as existing "
        "where %(final_has_rows)s and existing.{pickup} in (select staged.{pickup} "
        "from {staging} as staged where staged.{pickup} < %(month_start)s "
        "or staged.{pickup} >= %(month_end)s) "
        "union all select {pickup}, unique_row_id from {final} where %(final_has_rows)s "
        "and {pickup} is null and exists (select 1 from {staging} where {pickup} is null)"
    ).format(rows=ROWS_AT_PICKUPS, pickup=pickup, final=final, staging=staging)


def analyze_rows_at_pickups() -> sql.Composable:
    """Tells the planner how many candidates there are (a temporary table has no stats)."""
    return sql.SQL("analyze {}").format(ROWS_AT_PICKUPS)


def merge_into_final(
    taxi: TaxiType, month_start: date, final_schema: str = "public"
) -> sql.Composable:
    """Insert the staged rows whose id the final table does not hold yet, ids computed here.

    "Holds" is asked of the rows at the month's pickups (``collect_rows_at_pickups``, run
    first in the same transaction): equal ids have equal pickups, and a row without a
    pickup time is compared with the rows without one.
    """
    file_columns = [sql.Identifier(c.postgres_name) for c in taxi.all_columns]
    target_columns = sql.SQL(", ").join(
        [sql.Identifier("unique_row_id"), sql.Identifier("filename"), *file_columns]
    )
    pickup = pickup_identifier(taxi)
    return sql.SQL(
        "insert into {final} ({target_columns}) "
        "select {target_columns} from ("
        "select {id} as unique_row_id, {filename} as filename, {file_columns} from {staging}"
        # offset 0 keeps the subquery whole, so md5 runs once per row, not once for the
        # lookup and again for the insert.
        " offset 0) as staged "
        "where not exists (select 1 from {rows} as existing "
        "where existing.unique_row_id = staged.unique_row_id "
        "and (existing.pickup = staged.{pickup} "
        "or (existing.pickup is null and staged.{pickup} is null)))"
    ).format(
        final=final_table(taxi, final_schema),
        staging=staging_table(taxi, month_start),
        target_columns=target_columns,
        id=unique_row_id(taxi),
        filename=sql.Literal(taxi.csv_name(month_start)),
        file_columns=sql.SQL(", ").join(file_columns),
        rows=ROWS_AT_PICKUPS,
        pickup=pickup,
    )


def summarize_filename_index(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """Summarize the BRIN ranges of ``filename`` the merge just filled.

    A BRIN index covers new pages only once they are summarized, which on its own happens
    when (auto)vacuum runs: on an insert-only table, after it grew by a fifth. Until then
    every lookup by file name (each of the month's checks) reads all unsummarized pages:
    at the history's size, millions of rows of other months per check. Measured by
    ``bench.history`` (green, 2019): the ``no_id_inserted_twice`` check took 11 s with one
    month in the table and 21 s with two. Summarizing in the merge reads the month's pages
    once, while they are still in memory.
    """
    return sql.SQL("select brin_summarize_new_values({index}::regclass)").format(
        index=sql.Literal(f"{final_schema}.{taxi.table}_filename_brin")
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
