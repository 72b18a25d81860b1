"""Where the BigQuery statements run: BigQuery itself, or a local DuckDB stand-in.

The assets talk to a small ``Warehouse`` interface (``base``) and hand it the statements of
``taxi_platform/lib/sql/bigquery.py``. ``BigQueryWarehouse`` (``bigquery_client``) sends them
to BigQuery through the official client; ``DuckDBWarehouse`` (``duckdb_standin``) runs the
*same strings*, transpiled by sqlglot (``transpile``), on a DuckDB file, so the whole graph
materializes offline. Google's errors become messages naming the fix in ``errors``.

The stand-in is imported from its own module, where it is used, not from here: sqlglot
costs every process that imports it about 0.2 s of CPU and 8 MB, and every run's process
loads this package with the definitions, while only the local BigQuery's steps need it.

This package knows nothing of assets; the resources in ``resources/gcp.py`` hand out a
warehouse.
"""

from taxi_platform.lib.warehouse.base import (
    DatasetState,
    StatementResult,
    Warehouse,
    check_colocated,
    job_labels,
    label_value,
    locations_compatible,
)
from taxi_platform.lib.warehouse.bigquery_client import BigQueryWarehouse, JobSettings
from taxi_platform.lib.warehouse.errors import (
    BIGQUERY_ADMIN,
    STORAGE_ADMIN,
    GcpBillingNotEnabled,
    GcpBucketNameTaken,
    GcpConcurrentUpdate,
    GcpCredentialsMissing,
    GcpError,
    GcpJobTimeout,
    GcpLocationMismatch,
    GcpPermissionDenied,
    GcpQuotaExceeded,
    GcpSettingMissing,
    GoogleCall,
    google_errors,
)

__all__ = [
    "BIGQUERY_ADMIN",
    "STORAGE_ADMIN",
    "BigQueryWarehouse",
    "DatasetState",
    "GcpBillingNotEnabled",
    "GcpBucketNameTaken",
    "GcpConcurrentUpdate",
    "GcpCredentialsMissing",
    "GcpError",
    "GcpJobTimeout",
    "GcpLocationMismatch",
    "GcpPermissionDenied",
    "GcpQuotaExceeded",
    "GcpSettingMissing",
    "GoogleCall",
    "JobSettings",
    "StatementResult",
    "Warehouse",
    "check_colocated",
    "google_errors",
    "job_labels",
    "label_value",
    "locations_compatible",
]
