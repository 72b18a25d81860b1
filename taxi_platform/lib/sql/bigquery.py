"""The BigQuery statements of the Google Cloud path, one builder per statement.

They are the statements of the zoomcamp GCP flow (``08_gcp_taxi.yaml``), kept to the letter
where it matters for tables users already have: the final table partitioned by the pickup
day, amounts ``NUMERIC``, ``unique_row_id BYTES = MD5(CONCAT(...))`` over five columns each
cast to ``STRING`` and coalesced to ``""``, month tables ``{taxi}_tripdata_YYYY_MM`` and
external tables ``{taxi}_tripdata_YYYY_MM_ext`` over ``gs://{bucket}/{taxi}_tripdata_YYYY-MM.csv``.

The same strings run on BigQuery and, transpiled by sqlglot, on the local DuckDB stand-in
(``lib/warehouse/``), so the statements the tests prove are the ones production runs.

Identifiers come from the catalogue (a closed set) and from the project, dataset and bucket
settings, which are checked against Google's naming rules before they reach a statement.
The only value written into SQL, the file name, is a catalogue-made string.
"""

from __future__ import annotations

import re
from datetime import date

from taxi_platform.lib.catalog import TaxiType

# Google's naming rules (project ids, dataset ids, bucket names), stricter than needed to
# quote safely: nothing matching these can close a backquote or a string literal.
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9.:-]{1,99}$")
_DATASET_ID = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"{value!r} is not a valid {what}")
    return value


def object_name(taxi: TaxiType, month_start: date) -> str:
    """The object's name in the bucket: the CSV's own name, as the zoomcamp flow uploads it."""
    return taxi.csv_name(month_start)


def gcs_uri(bucket: str, taxi: TaxiType, month_start: date) -> str:
    _checked(bucket, _BUCKET_NAME, "bucket name")
    return f"gs://{bucket}/{object_name(taxi, month_start)}"


def table_id(project: str, dataset: str, table: str) -> str:
    """``project.dataset.table`` as the client libraries take it (no quotes)."""
    _checked(project, _PROJECT_ID, "project id")
    _checked(dataset, _DATASET_ID, "dataset id")
    _checked(table, _DATASET_ID, "table name")
    return f"{project}.{dataset}.{table}"


def _ref(project: str, dataset: str, table: str) -> str:
    return f"`{table_id(project, dataset, table)}`"


def final_table(taxi: TaxiType) -> str:
    return taxi.table


def month_table(taxi: TaxiType, month_start: date) -> str:
    return taxi.month_table(month_start)


def external_table(taxi: TaxiType, month_start: date) -> str:
    return f"{taxi.month_table(month_start)}_ext"


def _column_list(taxi: TaxiType, indent: str = "    ") -> str:
    """Every catalogue column, the optional trailing ones (schema drift) last."""
    return ",\n".join(
        f"{indent}{column.name} {column.bigquery_type}" for column in taxi.all_columns
    )


def create_final_table(taxi: TaxiType, project: str, dataset: str) -> str:
    """The zoomcamp's final table; ``IF NOT EXISTS`` leaves a user's existing one alone."""
    return (
        f"CREATE TABLE IF NOT EXISTS {_ref(project, dataset, final_table(taxi))}\n(\n"
        "    unique_row_id BYTES,\n"
        "    filename STRING,\n"
        f"{_column_list(taxi)}\n)\n"
        f"PARTITION BY DATE({taxi.pickup_column})"
    )


def add_optional_columns(taxi: TaxiType, project: str, dataset: str) -> list[str]:
    """The optional trailing columns, added to a final table created before they existed
    (NULL for the months it holds); nothing happens to a table that has them. One
    statement per column, as the local stand-in takes them."""
    return [
        f"ALTER TABLE {_ref(project, dataset, final_table(taxi))} "
        f"ADD COLUMN IF NOT EXISTS {column.name} {column.bigquery_type}"
        for column in taxi.optional_columns
    ]


def create_external_table(
    taxi: TaxiType, project: str, dataset: str, bucket: str, month_start: date
) -> str:
    """An external table over the month's object: BigQuery reads the CSV where it lies.

    Columns are declared (not auto-detected) so every month gets the same types whatever
    its first rows hold; ``skip_leading_rows = 1`` skips the header. A course month's file
    lacks the optional trailing columns: ``allow_jagged_rows`` reads them as NULL.
    """
    uri = gcs_uri(bucket, taxi, month_start)
    return (
        "CREATE OR REPLACE EXTERNAL TABLE "
        f"{_ref(project, dataset, external_table(taxi, month_start))}\n(\n"
        f"{_column_list(taxi)}\n)\n"
        "OPTIONS (\n"
        "    format = 'CSV',\n"
        f"    uris = ['{uri}'],\n"
        "    skip_leading_rows = 1,\n"
        "    allow_jagged_rows = TRUE,\n"
        "    ignore_unknown_values = TRUE\n"
        ")"
    )


def unique_row_id_expression(taxi: TaxiType) -> str:
    """The zoomcamp GCP flow's id: MD5 (BYTES) over five columns' STRING casts.

    No float column takes part, so the id does not depend on how an engine prints a number;
    the timestamps print as BigQuery casts a TIMESTAMP, ``2019-01-01 00:10:16+00``.
    """
    parts = ",\n    ".join(
        f'COALESCE(CAST({name} AS STRING), "")' for name in taxi.bigquery_id_columns
    )
    return f"MD5(CONCAT(\n    {parts}\n  ))"


def create_month_table(taxi: TaxiType, project: str, dataset: str, month_start: date) -> str:
    """The month as a native table, ids and filename added in the one pass that copies it."""
    filename = taxi.csv_name(month_start)
    return (
        f"CREATE OR REPLACE TABLE {_ref(project, dataset, month_table(taxi, month_start))}\n"
        "AS\nSELECT\n"
        f"  {unique_row_id_expression(taxi)} AS unique_row_id,\n"
        f'  "{filename}" AS filename,\n'
        "  *\n"
        f"FROM {_ref(project, dataset, external_table(taxi, month_start))}"
    )


def merge_month(taxi: TaxiType, project: str, dataset: str, month_start: date) -> str:
    """Insert the month's rows whose id the final table does not hold yet.

    ``WHEN NOT MATCHED`` inserts every unmatched source row, so duplicate rows inside one
    file are all kept and the totals equal the files' row counts, as users check them.
    """
    names = ["unique_row_id", "filename", *taxi.full_header]
    return (
        f"MERGE INTO {_ref(project, dataset, final_table(taxi))} T\n"
        f"USING {_ref(project, dataset, month_table(taxi, month_start))} S\n"
        "ON T.unique_row_id = S.unique_row_id\n"
        "WHEN NOT MATCHED THEN\n"
        f"  INSERT ({', '.join(names)})\n"
        f"  VALUES ({', '.join(f'S.{name}' for name in names)})"
    )


def count_rows(project: str, dataset: str, table: str) -> str:
    return f"SELECT COUNT(*) FROM {_ref(project, dataset, table)}"


def console_url(project: str, dataset: str, table: str) -> str:
    """The table's page in the Google Cloud console."""
    table_id(project, dataset, table)
    return (
        "https://console.cloud.google.com/bigquery"
        f"?project={project}&ws=!1m5!1m4!4m3!1s{project}!2s{dataset}!3s{table}"
    )
