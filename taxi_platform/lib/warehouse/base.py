"""What every warehouse reports and takes: results, dataset state, job labels, locations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg

from taxi_platform.lib.warehouse.errors import GcpLocationMismatch


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


_LABEL_INVALID = re.compile(r"[^a-z0-9_-]+")


def label_value(text: str) -> str:
    """``text`` as a BigQuery label value: lower case, ``[a-z0-9_-]``, at most 63 characters."""
    return _LABEL_INVALID.sub("_", text.lower())[:63]


def job_labels(taxi: str, month: str, asset: str) -> dict[str, str]:
    """The labels a query job carries, so its cost can be traced to a taxi, month and asset.

    ``asset`` is the asset key (``bigquery/green_tripdata``); ``month`` a partition key or
    ``YYYY-MM``.
    """
    return {
        "taxi": label_value(taxi),
        "month": label_value(month[:7]),
        "asset": label_value(asset.replace("/", "__")),
    }


class Warehouse(Protocol):
    engine: str
    project: str

    def ensure_dataset(self, dataset: str, location: str) -> DatasetState: ...

    def dataset_location(self) -> str | None: ...

    def run(self, sql: str, labels: dict[str, str] | None = None) -> StatementResult: ...

    def scalar(self, sql: str, labels: dict[str, str] | None = None) -> Any: ...

    def rows(self, sql: str, labels: dict[str, str] | None = None) -> list[tuple]: ...

    def table_link(self, dataset: str, table: str) -> dg.MetadataValue: ...


_MULTI_REGION_PREFIXES = {"us": "us-", "eu": "europe-"}


def locations_compatible(dataset_location: str, bucket_location: str) -> bool:
    """Whether BigQuery can read an external table in ``bucket_location`` from the dataset.

    BigQuery's rule for querying Cloud Storage: a regional dataset reads buckets in the same
    region; a multi-region dataset (``US``, ``EU``) reads buckets in that multi-region or in
    a region inside it (``us-central1``, ``europe-west1``). Dual-regions and other names are
    compared as written.
    """
    dataset, bucket = dataset_location.lower(), bucket_location.lower()
    if dataset == bucket:
        return True
    prefix = _MULTI_REGION_PREFIXES.get(dataset)
    return prefix is not None and bucket.startswith(prefix)


def check_colocated(dataset_id: str, dataset_location: str, bucket: str, bucket_location: str):
    """Fail, before any query, when the dataset cannot read the bucket's objects."""
    if locations_compatible(dataset_location, bucket_location):
        return
    raise GcpLocationMismatch(
        f"dataset {dataset_id} is in {dataset_location} and bucket gs://{bucket} is in "
        f"{bucket_location}: BigQuery reads external tables only from a bucket in the "
        f"dataset's location. Either set GCP_BUCKET_NAME to a bucket in {dataset_location} "
        f"(a new name, created there by gcs/bucket with GCP_LOCATION={dataset_location}), or "
        f"set GCP_DATASET to a dataset in {bucket_location} (created by bigquery/dataset with "
        f"GCP_LOCATION={bucket_location})."
    )
