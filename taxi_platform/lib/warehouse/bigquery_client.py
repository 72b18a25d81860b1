"""BigQuery through the official client: jobs in the dataset's own location, labelled,
waited for with a deadline, and retried when another statement changed the table first.

Every job is sent with the location the dataset actually has (read once from the API), not
``GCP_LOCATION``: a dataset created earlier in another location then still works, where
BigQuery would answer 404 "Dataset ... was not found in location EU" to every job.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
from google.api_core import exceptions as google_exceptions

from taxi_platform.lib.sql import bigquery as bq_sql
from taxi_platform.lib.warehouse.base import DatasetState, StatementResult
from taxi_platform.lib.warehouse.errors import (
    GcpConcurrentUpdate,
    GcpError,
    GcpJobTimeout,
    GoogleCall,
    google_errors,
    is_serialization_failure,
)

MISSING_HINT = (
    "materialize bigquery/dataset and this month's upstream assets first if the dataset "
    "or a table is missing"
)


@dataclass(frozen=True)
class JobSettings:
    """How long to wait for a job, and how often to retry a statement that lost a race."""

    timeout_seconds: float = 3600.0
    serialization_attempts: int = 6
    serialization_backoff_seconds: float = 2.0


@contextmanager
def _query_errors() -> Iterator[None]:
    """A failed statement as a message that says what to do."""
    try:
        yield
    except google_exceptions.NotFound as error:
        raise GcpError(f"BigQuery: {error.message}; {MISSING_HINT}") from None
    except google_exceptions.BadRequest as error:
        raise GcpError(f"BigQuery refused the statement: {error.message}") from None


class BigQueryWarehouse:
    """BigQuery through the official client; job ids and bytes come from the jobs."""

    engine = "bigquery"

    def __init__(
        self,
        client: Any,
        project: str,
        dataset: str | None,
        settings: JobSettings | None = None,
        on_retry: Callable[[str], None] | None = None,
        bucket: str | None = None,
    ):
        self.client = client
        self.project = project
        self.dataset = dataset
        self.bucket = bucket  # what external tables read: named when storage.* is refused
        self.settings = settings or JobSettings()
        self.on_retry = on_retry or (lambda message: None)
        self._location: str | None = None

    @property
    def dataset_id(self) -> str | None:
        return f"{self.project}.{self.dataset}" if self.dataset else None

    def _call(self, action: str) -> GoogleCall:
        return GoogleCall(action, self.project, bucket=self.bucket, dataset=self.dataset_id)

    def ensure_dataset(self, dataset: str, location: str) -> DatasetState:
        from google.cloud import bigquery

        dataset_id = f"{self.project}.{dataset}"
        call = GoogleCall(
            f"reading or creating dataset {dataset_id}", self.project, None, dataset_id
        )
        with google_errors(call):
            try:
                existing = self.client.get_dataset(dataset_id)
                self._location = existing.location
                return DatasetState(created=False, location=existing.location)
            except google_exceptions.NotFound:
                pass
            wanted = bigquery.Dataset(dataset_id)
            wanted.location = location
            created = self.client.create_dataset(wanted, exists_ok=True)
        self._location = created.location or location
        return DatasetState(created=True, location=self._location)

    def dataset_location(self) -> str:
        """Where the dataset is, read once: every job of this warehouse runs there."""
        if self._location is None:
            if not self.dataset_id:
                raise GcpError("no dataset given: GCP_DATASET names the trip tables' dataset")
            with google_errors(self._call(f"reading dataset {self.dataset_id}")):
                try:
                    self._location = self.client.get_dataset(self.dataset_id).location
                except google_exceptions.NotFound:
                    raise GcpError(
                        f"dataset {self.dataset_id} does not exist; materialize "
                        "bigquery/dataset first"
                    ) from None
        return self._location

    def _start(self, sql: str, labels: dict[str, str] | None) -> Any:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(labels=dict(labels or {}))
        return self.client.query(sql, job_config=config, location=self.dataset_location())

    def _wait(self, job: Any) -> Any:
        timeout = self.settings.timeout_seconds
        try:
            return job.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            try:
                job.cancel()
            except google_exceptions.GoogleAPICallError:
                pass  # the timeout is what the user needs to hear about
            raise GcpJobTimeout(
                f"BigQuery job {job.job_id} (location {job.location}) did not finish within "
                f"{timeout:g} s and was asked to cancel; see it under Job history in the "
                "console, and raise the wait (TAXI_BIGQUERY_JOB_TIMEOUT_SECONDS) if a month "
                "needs longer"
            ) from None

    def _finished_job(self, sql: str, labels: dict[str, str] | None) -> tuple[Any, Any]:
        """The finished job and its rows; a lost race for the table is retried with backoff."""
        attempts = self.settings.serialization_attempts
        with _query_errors(), google_errors(self._call("running a query job")):
            for attempt in range(1, attempts + 1):
                job = self._start(sql, labels)
                try:
                    return job, self._wait(job)
                except google_exceptions.BadRequest as error:
                    if not is_serialization_failure(error):
                        raise
                    if attempt == attempts:
                        raise GcpConcurrentUpdate(
                            f"BigQuery: another statement kept changing the table through "
                            f"{attempts} attempts; run the month again once the other loads "
                            f"are done. Google said: {error.message}"
                        ) from None
                    delay = self.settings.serialization_backoff_seconds * 2 ** (attempt - 1)
                    self.on_retry(
                        f"job {job.job_id} lost a race for the table (concurrent update); "
                        f"attempt {attempt + 1} of {attempts} in {delay:g} s"
                    )
                    time.sleep(delay)  # backoff between attempts, not a synchronisation
        raise AssertionError("unreachable: the loop returns or raises")

    def run(self, sql: str, labels: dict[str, str] | None = None) -> StatementResult:
        job, _ = self._finished_job(sql, labels)
        return StatementResult(
            job_id=job.job_id,
            bytes_processed=job.total_bytes_processed,
            rows_affected=job.num_dml_affected_rows,
        )

    def rows(self, sql: str, labels: dict[str, str] | None = None) -> list[tuple]:
        _, result = self._finished_job(sql, labels)
        with _query_errors(), google_errors(self._call("reading query results")):
            return [tuple(row.values()) for row in result]

    def scalar(self, sql: str, labels: dict[str, str] | None = None) -> Any:
        return self.rows(sql, labels)[0][0]

    def table_link(self, dataset: str, table: str) -> dg.MetadataValue:
        return dg.MetadataValue.url(bq_sql.console_url(self.project, dataset, table))
