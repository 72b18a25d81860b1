"""Google Cloud Storage and BigQuery: dagster-gcp's resources, with the zoomcamp's settings.

``TaxiGCSResource`` and ``TaxiBigQueryResource`` are thin subclasses of dagster-gcp's
``GCSResource`` and ``BigQueryResource``; they add the settings users already keep for the
zoomcamp flows (``GCP_PROJECT_ID``, ``GCP_LOCATION``, ``GCP_BUCKET_NAME``, ``GCP_DATASET``,
``GCP_CREDS``) and two things the base classes leave to the caller:

* every setting is optional at load time, so a deployment that only loads Postgres starts
  without them; a step that needs one fails at its first use with a message naming the
  environment variable to set;
* credentials come from ``GOOGLE_APPLICATION_CREDENTIALS`` (read by google-auth itself) or
  from a service-account JSON key in ``GCP_CREDS`` (raw, or base64 with or without line
  breaks, as ``cat key.json | base64`` prints it), handed to the clients
  directly. dagster-gcp's own ``gcp_credentials`` writes the key to a temporary file and
  points the process-wide ``GOOGLE_APPLICATION_CREDENTIALS`` at it, which concurrent steps
  in one process would trip over; the key is never logged either way.

Local stand-ins (``taxi_platform/local/gcp_standins.py``) are configured here too: ``emulator_host``
points the storage client at fake-gcs-server, ``local_database`` makes BigQuery a DuckDB
file (``lib/warehouse``). The variables are read in ``defs/resources.py``
(``gcp_resources_from_env``), like every other setting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_gcp import BigQueryResource, GCSResource
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from pydantic import Field

from taxi_platform.lib.pool_limits import apply_pool_limits
from taxi_platform.lib.warehouse import (
    BigQueryWarehouse,
    GcpError,
    GcpSettingMissing,
    GoogleCall,
    JobSettings,
    Warehouse,
    google_errors,
)
from taxi_platform.lib.warehouse.errors import (
    bucket_name_taken,
    is_bucket_name_taken,
    permission_denied,
)

# Each setting, the variable users set it with, and what it is for (the error message).
SETTINGS = {
    "project": ("GCP_PROJECT_ID", "the Google Cloud project that holds the bucket and dataset"),
    "location": ("GCP_LOCATION", "where the bucket and dataset are created, e.g. US or EU"),
    "bucket_name": ("GCP_BUCKET_NAME", "the GCS bucket the trip files are uploaded to"),
    "dataset": ("GCP_DATASET", "the BigQuery dataset that holds the trip tables"),
}
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def _required(resource: dg.ConfigurableResource, field: str) -> str:
    value = getattr(resource, field)
    if not value:
        variable, purpose = SETTINGS[field]
        raise GcpSettingMissing(
            f"{variable} is not set: it names {purpose}. Set {variable} in the environment "
            f"(or the resource's `{field}` field) and run again."
        )
    return value


def service_account_credentials(key: str | None) -> Credentials | None:
    """Credentials from a service-account JSON key, given as JSON or as base64 of it.

    ``None`` lets google-auth find them itself (``GOOGLE_APPLICATION_CREDENTIALS``, the
    metadata server, ``gcloud auth application-default login``).
    """
    if not key:
        return None
    from google.oauth2 import service_account

    text = key.strip()
    if not text.startswith("{"):
        try:
            # `base64` wraps its output at 76 columns; the line breaks are not part of it.
            text = base64.b64decode("".join(text.split()), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise GcpSettingMissing(
                "GCP_CREDS is neither a JSON service-account key nor base64 of one"
            ) from None
    try:
        info = json.loads(text)
        return service_account.Credentials.from_service_account_info(
            info, scopes=[CLOUD_PLATFORM_SCOPE]
        )
    except (ValueError, KeyError):
        # The key's content stays out of the message: it is a secret.
        raise GcpSettingMissing(
            "GCP_CREDS does not hold a usable service-account key (expected the JSON file "
            "downloaded from IAM & Admin > Service accounts > Keys)"
        ) from None


class UploadCorrupted(GcpError):
    """The object in the bucket is not the local file: it was removed, nothing reads it."""


@dataclass(frozen=True)
class BucketState:
    created: bool
    location: str | None


@dataclass(frozen=True)
class UploadResult:
    uri: str
    bytes: int
    md5_base64: str
    uploaded: bool
    generation: int | None
    duration_seconds: float


def file_md5_base64(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """The file's MD5 as GCS reports it (``md5Hash``: base64 of the digest)."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


class TaxiGCSResource(GCSResource):
    """The trip files' bucket: ``gs://{bucket_name}/{taxi}_tripdata_{YYYY}-{MM}.csv``."""

    bucket_name: str | None = Field(default=None, description="GCS bucket (GCP_BUCKET_NAME).")
    location: str | None = Field(
        default=None, description="Location the bucket is created in (GCP_LOCATION)."
    )
    gcp_credentials: str | None = Field(
        default=None,
        description="Service-account JSON key, raw or base64 (GCP_CREDS). Unset: "
        "GOOGLE_APPLICATION_CREDENTIALS or the environment's default credentials.",
    )
    emulator_host: str | None = Field(
        default=None,
        description="URL of a fake-gcs-server to use instead of Google "
        "(STORAGE_EMULATOR_HOST); requests then go unauthenticated.",
    )
    upload_chunk_bytes: int = Field(
        default=16 * 1024 * 1024,
        description="Resumable upload chunk size; a multiple of 256 KiB.",
    )

    @property
    def required_project(self) -> str:
        return _required(self, "project")

    @property
    def required_bucket(self) -> str:
        return _required(self, "bucket_name")

    @property
    def required_location(self) -> str:
        return _required(self, "location")

    def get_object_to_set_on_execution_context(self) -> Any:
        # dagster-gcp builds a client here, when the step starts; ours is built at first
        # use, so a missing setting fails with its message and a step that never calls
        # Google needs no credentials.
        return self

    def get_client(self) -> storage.Client:
        if self.emulator_host:
            return storage.Client(
                project=self.project or "local",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.emulator_host},
            )
        project = self.required_project
        with google_errors(GoogleCall("connecting to Cloud Storage", project)):
            return storage.Client(
                project=project, credentials=service_account_credentials(self.gcp_credentials)
            )

    def _call(self, action: str) -> GoogleCall:
        return GoogleCall(action, self.project or "(unset)", bucket=self.bucket_name)

    def ensure_bucket(self) -> BucketState:
        """Create the bucket in ``location`` if absent; an existing one is left as it is."""
        name, location = self.required_bucket, self.required_location
        client = self.get_client()
        with google_errors(self._call(f"reading bucket gs://{name}")):
            try:
                existing = client.lookup_bucket(name)
            except google_exceptions.Forbidden as refused:
                # 403 on a bucket: ours without storage.buckets.get, or another project's.
                return self._create_bucket(client, name, location, refused)
        if existing is not None:
            return BucketState(created=False, location=existing.location)
        return self._create_bucket(client, name, location, None)

    def _create_bucket(
        self,
        client: storage.Client,
        name: str,
        location: str,
        read_refused: google_exceptions.Forbidden | None,
    ) -> BucketState:
        with google_errors(self._call(f"creating bucket gs://{name} in project {client.project}")):
            try:
                created = client.create_bucket(name, project=client.project, location=location)
            except (google_exceptions.Conflict, google_exceptions.Forbidden) as error:
                already_ours = "already own" in (error.message or "")
                if already_ours and read_refused is not None:
                    raise permission_denied(
                        read_refused, self._call(f"reading gs://{name}")
                    ) from None
                if already_ours:  # created meanwhile by another step of ours
                    return BucketState(created=False, location=None)
                if is_bucket_name_taken(error):
                    raise bucket_name_taken(name, error) from None
                raise
        return BucketState(created=True, location=created.location)

    def existing_bucket_location(self) -> str | None:
        """Where the bucket is; ``None`` when it does not exist (yet)."""
        name = self.required_bucket
        with google_errors(self._call(f"reading bucket gs://{name}")):
            bucket = self.get_client().lookup_bucket(name)
        return bucket.location if bucket is not None else None

    def bucket_location(self) -> str:
        """Where the bucket is; it must exist."""
        location = self.existing_bucket_location()
        if location is None:
            raise GcpError(
                f"bucket gs://{self.bucket_name} does not exist; materialize gcs/bucket first"
            )
        return location

    def upload_file(self, local_path: Path, object_name: str) -> UploadResult:
        """Put ``local_path`` at ``gs://{bucket}/{object_name}``, unless it is there already.

        An object with the file's MD5 is left alone (a re-run uploads nothing). Otherwise
        the upload is resumable (a dropped connection resumes at the last chunk) and
        checksummed by the client; the object's MD5 is then read back and compared, and an
        object that differs is deleted, so a cut-off upload never reaches BigQuery.
        """
        started = time.monotonic()
        name = self.required_bucket
        uri = f"gs://{name}/{object_name}"
        local_md5 = file_md5_base64(local_path)
        size = local_path.stat().st_size
        bucket = self.get_client().bucket(name)
        with google_errors(self._call(f"uploading {uri}")):
            try:
                existing = bucket.get_blob(object_name)
            except google_exceptions.NotFound:
                existing = None
            if existing is not None and existing.md5_hash == local_md5:
                return UploadResult(
                    uri, size, local_md5, False, existing.generation, time.monotonic() - started
                )
            blob = bucket.blob(object_name, chunk_size=self.upload_chunk_bytes)
            try:
                blob.upload_from_filename(str(local_path), content_type="text/csv", checksum="md5")
            except DataCorruption:
                raise UploadCorrupted(
                    f"{uri}: the upload arrived corrupted (MD5 mismatch); the object was "
                    "deleted, run again"
                ) from None
            except google_exceptions.NotFound:
                raise GcpError(
                    f"bucket gs://{name} does not exist; materialize gcs/bucket first"
                ) from None
            generation = self.verify_object(object_name, local_md5, size)
        return UploadResult(uri, size, local_md5, True, generation, time.monotonic() - started)

    def verify_object(self, object_name: str, expected_md5: str, expected_bytes: int) -> int:
        """Check the stored object against the local file; delete it if it differs."""
        name = self.required_bucket
        uri = f"gs://{name}/{object_name}"
        bucket = self.get_client().bucket(name)
        with google_errors(self._call(f"checking and deleting {uri}")):
            stored = bucket.get_blob(object_name)
            if stored is None:
                raise UploadCorrupted(f"{uri}: the object is missing after the upload")
            if stored.md5_hash != expected_md5 or stored.size != expected_bytes:
                stored.delete(if_generation_match=stored.generation)
                raise UploadCorrupted(
                    f"{uri}: the stored object ({stored.size} bytes, MD5 {stored.md5_hash}) "
                    f"is not the local file ({expected_bytes} bytes, MD5 {expected_md5}); "
                    "the object was deleted so BigQuery cannot read a partial file"
                )
        return stored.generation


class TaxiBigQueryResource(BigQueryResource):
    """The trip tables' dataset, handed out as a ``Warehouse`` that runs our statements.

    ``project``, ``location`` and ``gcp_credentials`` are dagster-gcp's fields (the key may
    be raw JSON here, not only base64). With ``local_database`` set, the warehouse is the
    DuckDB stand-in reading external tables from ``local_gcs_root``.
    """

    dataset: str | None = Field(default=None, description="BigQuery dataset (GCP_DATASET).")
    api_endpoint: str | None = Field(
        default=None,
        description="Another BigQuery API endpoint (an emulator); requests go unauthenticated.",
    )
    local_database: str | None = Field(
        default=None,
        description="Path of a DuckDB file standing in for BigQuery (set by the local run).",
    )
    local_gcs_root: str | None = Field(
        default=None,
        description="fake-gcs-server's filesystem root, where the local stand-in reads "
        "external tables' objects.",
    )
    job_timeout_seconds: float = Field(
        default=3600.0,
        description="How long a step waits for one BigQuery job before cancelling it "
        "(TAXI_BIGQUERY_JOB_TIMEOUT_SECONDS).",
    )
    serialization_attempts: int = Field(
        default=6,
        description="Attempts of a statement that BigQuery refuses because another one "
        "changed the table at the same time.",
    )
    serialization_backoff_seconds: float = Field(
        default=2.0, description="First pause between those attempts; it doubles each time."
    )

    @property
    def required_project(self) -> str:
        return _required(self, "project")

    @property
    def required_dataset(self) -> str:
        return _required(self, "dataset")

    @property
    def required_location(self) -> str:
        return _required(self, "location")

    def get_object_to_set_on_execution_context(self) -> Any:
        return self  # as for GCS: the client is made at first use, not at step start

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Runs set up their resources before their steps claim pool slots: the BigQuery
        merges' one-slot pool is in place before this run's merge asks for a slot."""
        if context.instance is not None:
            apply_pool_limits(context.instance, context.log.info if context.log else None)

    @contextmanager
    def get_client(self) -> Iterator[Any]:
        from google.cloud import bigquery

        # No client-wide location: every job is sent with the dataset's own (warehouse).
        if self.api_endpoint:
            yield bigquery.Client(
                project=self.required_project,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.api_endpoint},
            )
            return
        project = self.required_project
        with google_errors(GoogleCall("connecting to BigQuery", project)):
            client = bigquery.Client(
                project=project, credentials=service_account_credentials(self.gcp_credentials)
            )
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def warehouse(
        self, on_retry: Callable[[str], None] | None = None, reads_bucket: str | None = None
    ) -> Iterator[Warehouse]:
        """The dataset's warehouse; ``on_retry`` hears of each statement retried, and
        ``reads_bucket`` is the bucket a refused ``storage.*`` permission is to be granted on."""
        if self.local_database:
            if not self.local_gcs_root:
                raise GcpSettingMissing(
                    "TAXI_LOCAL_GCS_ROOT is not set: the local BigQuery stand-in reads "
                    "external tables from fake-gcs-server's folder"
                )
            # Here, not at the top: only the local stand-in needs sqlglot (lib/warehouse).
            from taxi_platform.lib.warehouse.duckdb_standin import DuckDBWarehouse

            yield DuckDBWarehouse(
                Path(self.local_database), Path(self.local_gcs_root), self.required_project
            )
            return
        settings = JobSettings(
            timeout_seconds=self.job_timeout_seconds,
            serialization_attempts=self.serialization_attempts,
            serialization_backoff_seconds=self.serialization_backoff_seconds,
        )
        with self.get_client() as client:
            yield BigQueryWarehouse(
                client,
                self.required_project,
                self.dataset,
                settings,
                on_retry=on_retry,
                bucket=reads_bucket,
            )


# Variables the local run sets (taxi_platform/local/gcp_standins.py) besides the GCP_* ones.
LOCAL_BIGQUERY_DATABASE = "TAXI_LOCAL_BIGQUERY_DATABASE"
LOCAL_GCS_ROOT = "TAXI_LOCAL_GCS_ROOT"
STORAGE_EMULATOR_HOST = "STORAGE_EMULATOR_HOST"
BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"
BIGQUERY_JOB_TIMEOUT = "TAXI_BIGQUERY_JOB_TIMEOUT_SECONDS"
