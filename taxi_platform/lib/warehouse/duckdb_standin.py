"""The local BigQuery stand-in: the same statements, transpiled, on a DuckDB file.

BigQuery's ``TIMESTAMP`` is an instant (DuckDB ``TIMESTAMPTZ``) and prints in UTC as
``2019-01-01 00:10:16+00``; every session sets ``TimeZone = 'UTC'`` so the ids, which hash
that text, are the ones BigQuery computes. A DuckDB schema has no location and a query no
labels: both are accepted and ignored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from taxi_platform.lib.sql import bigquery as bq_sql
from taxi_platform.lib.warehouse.base import DatasetState, StatementResult
from taxi_platform.lib.warehouse.errors import GcpError
from taxi_platform.lib.warehouse.transpile import sql_string, to_duckdb

ENGINE_NAME = "local BigQuery stand-in (DuckDB)"
MISSING_HINT = (
    "materialize bigquery/dataset and this month's upstream assets first if the dataset "
    "or a table is missing"
)


@contextmanager
def _duckdb_errors() -> Iterator[None]:
    try:
        yield
    except duckdb.CatalogException as error:
        raise GcpError(f"{ENGINE_NAME}: {error}; {MISSING_HINT}") from None
    except duckdb.Error as error:
        raise GcpError(f"{ENGINE_NAME}: {error}") from None


class DuckDBWarehouse:
    """The local stand-in: a DuckDB file, one schema per dataset, the project as catalog.

    DuckDB lets one process at a time write a file, so each call opens the file for as long
    as it runs and waits (up to ``lock_timeout_seconds``) while another step holds it; two
    months can then run at once, one statement after the other.
    """

    engine = "duckdb"

    def __init__(
        self, database: Path, gcs_root: Path, project: str, lock_timeout_seconds: float = 300
    ):
        self.database = database
        self.gcs_root = gcs_root
        self.project = project
        self.lock_timeout_seconds = lock_timeout_seconds

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        connection = duckdb.connect()
        try:
            connection.execute("SET TimeZone = 'UTC'")
            catalog = '"' + self.project.replace('"', '""') + '"'
            while True:
                try:
                    connection.execute(f"ATTACH {sql_string(str(self.database))} AS {catalog}")
                    break
                except duckdb.IOException as error:
                    if "lock" not in str(error).lower() or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # another step holds the file: poll until the deadline
            connection.execute(f"USE {catalog}")
            yield connection
        finally:
            connection.close()

    def ensure_dataset(self, dataset: str, location: str) -> DatasetState:
        bq_sql.table_id(self.project, dataset, "probe")  # the same naming rules as BigQuery
        with self.connect() as connection:
            exists = connection.execute(
                "SELECT count(*) FROM information_schema.schemata "
                "WHERE catalog_name = ? AND schema_name = ?",
                [self.project, dataset],
            ).fetchone()[0]
            if not exists:
                connection.execute(f'CREATE SCHEMA "{dataset}"')
        return DatasetState(created=not exists, location=None)

    def dataset_location(self) -> str | None:
        return None  # a DuckDB schema has no location

    def run(self, sql: str, labels: dict[str, str] | None = None) -> StatementResult:
        statement = to_duckdb(sql, self.gcs_root)
        with _duckdb_errors(), self.connect() as connection:
            result = connection.execute(statement).fetchall()
        is_merge = statement.lstrip().upper().startswith("MERGE")
        return StatementResult(
            job_id=None,
            bytes_processed=None,
            rows_affected=int(result[0][0]) if is_merge and result else None,
        )

    def rows(self, sql: str, labels: dict[str, str] | None = None) -> list[tuple]:
        with _duckdb_errors(), self.connect() as connection:
            return connection.execute(to_duckdb(sql, self.gcs_root)).fetchall()

    def scalar(self, sql: str, labels: dict[str, str] | None = None) -> Any:
        return self.rows(sql, labels)[0][0]

    def table_link(self, dataset: str, table: str) -> dg.MetadataValue:
        return dg.MetadataValue.text(f"{self.database} :: {self.project}.{dataset}.{table}")
