"""The competitor's SQL: what the zoomcamp Kestra flow (``04_postgres_taxi.yaml``) runs.

Kept apart from ``taxi_platform.lib.sql`` on purpose: this is not our SQL, it is the sequence
users run today, written as the flow writes it so the benchmark measures the real thing.
The flow's DDL leaves names unquoted (Postgres folds them to lower case) and formats the
file name into the ``UPDATE``; column names come from our catalogue, a closed set, so
printing them unquoted is as safe as the flow's template. Per statement, like the flow's
``Queries`` tasks, each runs in its own transaction.

One addition the flow does not have, and only when asked for (the ``zoomcamp`` contender
of ``bench.run``; ``zoomcamp as run`` goes without): the indexes our final table carries (a
btree on the pickup time, a BRIN on ``filename``;
``taxi_platform.lib.sql.postgres.final_table_indexes``), so that both loads pay for the
same index maintenance. The flow's ``MERGE`` joins on ``unique_row_id``, which neither
index serves: it hash-joins the whole final table, as it does in the flow.
"""

from __future__ import annotations

from datetime import date

from psycopg import sql

from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.sql.postgres import final_table_indexes

SCHEMA = "public"


def final_table_name(taxi: TaxiType) -> str:
    return f"{SCHEMA}.{taxi.table}"


def staging_table_name(taxi: TaxiType) -> str:
    # One staging table per taxi type, truncated by every run (hence the flow's
    # concurrency limit of 1).
    return f"{SCHEMA}.{taxi.table}_staging"


def _ddl(table_name: str, taxi: TaxiType) -> sql.SQL:
    columns = ",\n    ".join(f"{column.name:<22} {column.postgres_type}" for column in taxi.columns)
    return sql.SQL(
        f"CREATE TABLE IF NOT EXISTS {table_name} (\n"
        f"    unique_row_id          text,\n"
        f"    filename               text,\n"
        f"    {columns}\n)"
    )


def create_final_table(taxi: TaxiType) -> sql.SQL:
    return _ddl(final_table_name(taxi), taxi)


def create_staging_table(taxi: TaxiType) -> sql.SQL:
    return _ddl(staging_table_name(taxi), taxi)


def create_final_indexes(taxi: TaxiType) -> list[sql.Composable]:
    """Not in the flow: the same indexes our final table has (see the module docstring)."""
    return final_table_indexes(taxi, SCHEMA)


def truncate_staging(taxi: TaxiType) -> sql.SQL:
    return sql.SQL(f"TRUNCATE TABLE {staging_table_name(taxi)}")


def copy_into_staging(taxi: TaxiType) -> sql.SQL:
    """The flow's ``CopyIn`` task: CSV with header, the file's columns in file order."""
    columns = ",".join(taxi.header)
    return sql.SQL(
        f"COPY {staging_table_name(taxi)} ({columns}) FROM STDIN WITH (FORMAT CSV, HEADER true)"
    )


def row_id_expression(taxi: TaxiType) -> str:
    """The flow's id: md5 over seven fields' text, each coalesced to ''."""
    id_parts = []
    for position, name in enumerate(taxi.postgres_id_columns):
        # The flow casts VendorID to text although it is already text; kept as written.
        if position == 0 or taxi.column(name).postgres_type != "text":
            id_parts.append(f"COALESCE(CAST({name} AS text), '')")
        else:
            id_parts.append(f"COALESCE({name}, '')")
    return "md5(\n      " + " ||\n      ".join(id_parts) + "\n  )"


def add_unique_id_and_filename(taxi: TaxiType, month_start: date) -> sql.Composed:
    """The flow's second pass over every staged row: the id, and the file name."""
    return sql.SQL(
        f"UPDATE {staging_table_name(taxi)}\nSET\n"
        f"  unique_row_id = {row_id_expression(taxi)},\n"
        "  filename = {filename}"
    ).format(filename=sql.Literal(taxi.csv_name(month_start)))


def merge_into_final(taxi: TaxiType) -> sql.SQL:
    columns = ["unique_row_id", "filename", *taxi.header]
    return sql.SQL(
        f"MERGE INTO {final_table_name(taxi)} AS T\n"
        f"USING {staging_table_name(taxi)} AS S\n"
        "ON T.unique_row_id = S.unique_row_id\n"
        "WHEN NOT MATCHED THEN\n"
        f"  INSERT ({', '.join(columns)})\n"
        f"  VALUES ({', '.join('S.' + name for name in columns)})"
    )
