"""Where the BigQuery statements run: BigQuery itself, or a local DuckDB stand-in.

The assets talk to a small ``Warehouse`` interface and hand it the statements of
``taxi_platform/lib/sql/bigquery.py``. ``BigQueryWarehouse`` sends them to BigQuery through the
official client. ``DuckDBWarehouse`` runs the *same strings*, transpiled by sqlglot
(``read="bigquery"``, ``write="duckdb"``), on a DuckDB file, so the whole graph
materializes offline and the tests prove the statements production runs. What the
transpiler cannot carry over is handled here, visibly, and nowhere else:

* ``CREATE EXTERNAL TABLE`` would become an empty native table (sqlglot drops
  ``EXTERNAL``); it becomes a view over ``read_csv`` of the object's file in the
  fake-gcs-server folder, built from the statement's own column list, ``uris`` and
  ``skip_leading_rows``.
* ``NUMERIC`` would become DuckDB's ``DECIMAL(18,3)``; it is BigQuery's ``DECIMAL(38,9)``.
* ``PARTITION BY`` and column ``OPTIONS`` are storage properties without effect on rows;
  they are dropped. Anything else sqlglot cannot translate fails the statement.
* BigQuery's ``TIMESTAMP`` is an instant (DuckDB ``TIMESTAMPTZ``) and prints in UTC as
  ``2019-01-01 00:10:16+00``; every DuckDB session sets ``TimeZone = 'UTC'`` so the ids,
  which hash that text, are the ones BigQuery computes.

This module knows nothing of assets; the resources in ``gcp.py`` hand out a warehouse.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import duckdb
import sqlglot
from google.api_core import exceptions as google_exceptions
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from taxi_platform.lib.sql import bigquery as bq_sql

# BigQuery's NUMERIC: 38 digits, 9 after the point.
BIGQUERY_NUMERIC = exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb")


class GcpError(Exception):
    """A Google Cloud step failed in a way the message explains; assets turn it into a Failure."""


class GcpSettingMissing(GcpError):
    """A setting the step needs is not configured; the message names the variable."""


class GcpPermissionDenied(GcpError):
    """Google answered 403; the message names the role to grant and on what."""


STORAGE_ADMIN = "Storage Admin (roles/storage.admin)"
BIGQUERY_ADMIN = "BigQuery Admin (roles/bigquery.admin)"


@contextmanager
def explain_forbidden(action: str, target: str, role: str) -> Iterator[None]:
    """Turn a 403 into the role to grant; the service's own reason is kept, the key never."""
    try:
        yield
    except google_exceptions.Forbidden as error:
        raise GcpPermissionDenied(
            f"permission denied: {action} on {target} was refused (403). Grant the "
            f"service account the {role} role on it (IAM & Admin in the console), or use "
            f"credentials that have it. Google said: {error.message}"
        ) from None


@dataclass(frozen=True)
class StatementResult:
    """What a statement reports: its job, the bytes it scanned, the rows it changed."""

    job_id: str | None
    bytes_processed: int | None
    rows_affected: int | None


@dataclass(frozen=True)
class DatasetState:
    created: bool
    location: str | None


class Warehouse(Protocol):
    engine: str
    project: str

    def ensure_dataset(self, dataset: str, location: str) -> DatasetState: ...

    def run(self, sql: str) -> StatementResult: ...

    def scalar(self, sql: str) -> Any: ...

    def rows(self, sql: str) -> list[tuple]: ...

    def table_link(self, dataset: str, table: str) -> dg.MetadataValue: ...


class BigQueryWarehouse:
    """BigQuery through the official client; job ids and bytes come from the jobs."""

    engine = "bigquery"

    def __init__(self, client: Any, project: str, location: str | None):
        self.client = client
        self.project = project
        self.location = location

    def ensure_dataset(self, dataset: str, location: str) -> DatasetState:
        from google.cloud import bigquery

        dataset_id = f"{self.project}.{dataset}"
        with explain_forbidden("reading or creating dataset", dataset_id, BIGQUERY_ADMIN):
            try:
                existing = self.client.get_dataset(dataset_id)
                return DatasetState(created=False, location=existing.location)
            except google_exceptions.NotFound:
                pass
            wanted = bigquery.Dataset(dataset_id)
            wanted.location = location
            self.client.create_dataset(wanted, exists_ok=True)
        return DatasetState(created=True, location=location)

    def run(self, sql: str) -> StatementResult:
        with (
            _query_errors("BigQuery"),
            explain_forbidden("running a query job", f"project {self.project}", BIGQUERY_ADMIN),
        ):
            job = self.client.query(sql, location=self.location)
            job.result()
        return StatementResult(
            job_id=job.job_id,
            bytes_processed=job.total_bytes_processed,
            rows_affected=job.num_dml_affected_rows,
        )

    def rows(self, sql: str) -> list[tuple]:
        with (
            _query_errors("BigQuery"),
            explain_forbidden("running a query job", f"project {self.project}", BIGQUERY_ADMIN),
        ):
            return [tuple(row.values()) for row in self.client.query(sql).result()]

    def scalar(self, sql: str) -> Any:
        return self.rows(sql)[0][0]

    def table_link(self, dataset: str, table: str) -> dg.MetadataValue:
        return dg.MetadataValue.url(bq_sql.console_url(self.project, dataset, table))


MISSING_HINT = (
    "materialize bigquery/dataset and this month's upstream assets first if the dataset "
    "or a table is missing"
)


@contextmanager
def _query_errors(engine: str) -> Iterator[None]:
    """A failed statement as a message that says which engine and what to do."""
    try:
        yield
    except google_exceptions.NotFound as error:
        raise GcpError(f"{engine}: {error.message}; {MISSING_HINT}") from None
    except google_exceptions.BadRequest as error:
        raise GcpError(f"{engine} refused the statement: {error.message}") from None
    except duckdb.CatalogException as error:
        raise GcpError(f"{engine}: {error}; {MISSING_HINT}") from None
    except duckdb.Error as error:
        raise GcpError(f"{engine}: {error}") from None


def to_duckdb(sql: str, gcs_root: Path) -> str:
    """One BigQuery statement as DuckDB runs it (see the module docstring for the rules)."""
    statement = sqlglot.parse_one(sql, read="bigquery")
    properties = statement.args.get("properties")
    if isinstance(statement, exp.Create) and properties is not None:
        if any(isinstance(p, exp.ExternalProperty) for p in properties.expressions):
            return _external_table_as_view(statement, gcs_root)
        for prop in list(properties.expressions):
            if isinstance(prop, exp.PartitionedByProperty):
                prop.pop()
        if not properties.expressions:
            properties.pop()
    for constraint in list(statement.find_all(exp.ColumnConstraint)):
        if isinstance(constraint.args.get("kind"), exp.Properties):
            constraint.pop()  # column OPTIONS (description = ...)
    for data_type in list(statement.find_all(exp.DataType)):
        if data_type.this == exp.DataType.Type.DECIMAL and not data_type.expressions:
            data_type.replace(BIGQUERY_NUMERIC.copy())
    return statement.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _external_table_as_view(statement: exp.Create, gcs_root: Path) -> str:
    """The external table's columns, URIs and header rows, as a DuckDB view over read_csv."""
    options: dict[str, exp.Expression] = {}
    for prop in statement.args["properties"].expressions:
        if isinstance(prop, exp.FileFormatProperty):
            options["format"] = prop.this
        elif isinstance(prop, exp.Property) and "value" in prop.args:
            options[prop.name.lower()] = prop.args["value"]
    file_format = options.get("format")
    if file_format is None or file_format.name.upper() != "CSV":
        raise ValueError("the local stand-in reads CSV external tables only")
    uris = [literal.name for literal in options["uris"].expressions]
    skip_rows = int(options["skip_leading_rows"].name) if "skip_leading_rows" in options else 0
    # BigQuery's allow_jagged_rows: missing trailing columns are NULL.
    jagged = "allow_jagged_rows" in options and options["allow_jagged_rows"].sql().upper() == "TRUE"
    schema = statement.this
    columns = []
    for column in schema.expressions:
        data_type = column.args["kind"].copy()
        if data_type.this == exp.DataType.Type.DECIMAL and not data_type.expressions:
            data_type = BIGQUERY_NUMERIC.copy()
        columns.append(f"{_sql_string(column.name)}: {_sql_string(data_type.sql('duckdb'))}")
    paths = [_sql_string(str(_local_object_path(uri, gcs_root))) for uri in uris]
    view = schema.this.sql(dialect="duckdb")
    return (
        f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_csv([{', '.join(paths)}], "
        f"header = false, skip = {skip_rows}, auto_detect = false, delim = ',', quote = '\"', "
        f"null_padding = {'true' if jagged else 'false'}, columns = {{{', '.join(columns)}}})"
    )


def _local_object_path(uri: str, gcs_root: Path) -> Path:
    """``gs://bucket/name`` -> the file fake-gcs-server's filesystem backend keeps it in."""
    if not uri.startswith("gs://"):
        raise ValueError(f"external table URI {uri!r} is not a gs:// URI")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return gcs_root / bucket / name


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
                    connection.execute(f"ATTACH {_sql_string(str(self.database))} AS {catalog}")
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

    def run(self, sql: str) -> StatementResult:
        statement = to_duckdb(sql, self.gcs_root)
        with _query_errors("local BigQuery stand-in (DuckDB)"), self.connect() as connection:
            result = connection.execute(statement).fetchall()
        is_merge = statement.lstrip().upper().startswith("MERGE")
        return StatementResult(
            job_id=None,
            bytes_processed=None,
            rows_affected=int(result[0][0]) if is_merge and result else None,
        )

    def rows(self, sql: str) -> list[tuple]:
        with _query_errors("local BigQuery stand-in (DuckDB)"), self.connect() as connection:
            return connection.execute(to_duckdb(sql, self.gcs_root)).fetchall()

    def scalar(self, sql: str) -> Any:
        return self.rows(sql)[0][0]

    def table_link(self, dataset: str, table: str) -> dg.MetadataValue:
        return dg.MetadataValue.text(f"{self.database} :: {self.project}.{dataset}.{table}")
