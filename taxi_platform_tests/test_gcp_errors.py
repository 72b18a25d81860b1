"""What users see when Google Cloud refuses, and what the real clients send.

Stand-ins: Google's APIs are played by local HTTP servers on 127.0.0.1 answering as Google
does (``taxi_platform_tests/google_standin.py``: status, JSON error body with ``reason``,
query jobs with ``status.errorResult``); the official google-cloud-storage and
google-cloud-bigquery clients talk to them unchanged, with anonymous credentials. The
missing-credentials test runs the real google-auth lookup in a child process with no
credentials anywhere.
"""

import base64
import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import dagster as dg
import pytest
from google.api_core import exceptions as google_exceptions

from taxi_platform.defs.resources import gcp_resources_from_env
from taxi_platform.defs.trips.gcp import gcp_setup_assets
from taxi_platform.lib.warehouse import (
    GcpBillingNotEnabled,
    GcpBucketNameTaken,
    GcpPermissionDenied,
    GcpQuotaExceeded,
    GcpSettingMissing,
    GoogleCall,
)
from taxi_platform.lib.warehouse.errors import explain
from taxi_platform.resources.gcp import (
    TaxiBigQueryResource,
    TaxiGCSResource,
    service_account_credentials,
)
from taxi_platform_tests.support.google_standin import (
    Answer,
    BigQueryJobs,
    GoogleStub,
    forbidden,
    google_error,
    not_found,
)


@pytest.fixture
def stub_factory() -> Iterator[Callable[[Callable[[str, str, dict], Answer]], GoogleStub]]:
    stubs: list[GoogleStub] = []

    def make(route):
        stubs.append(GoogleStub(route))
        return stubs[-1]

    yield make
    for stub in stubs:
        stub.close()


def failure_descriptions(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        event.step_key: event.step_failure_data.user_failure_data.description
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data.user_failure_data
    }


GCP_VARIABLES = (
    "GCP_PROJECT_ID",
    "GCP_LOCATION",
    "GCP_BUCKET_NAME",
    "GCP_DATASET",
    "GCP_CREDS",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "TAXI_LOCAL_BIGQUERY_DATABASE",
    "TAXI_LOCAL_GCS_ROOT",
)


@pytest.fixture
def no_gcp_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in GCP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_missing_variables_fail_at_first_use_naming_them(no_gcp_env):
    resources = gcp_resources_from_env()  # nothing set: building them must not fail
    result = dg.materialize(gcp_setup_assets(), resources=resources, raise_on_error=False)
    failures = failure_descriptions(result)
    assert "GCP_BUCKET_NAME is not set" in failures["gcs__bucket"]
    assert "GCP_DATASET is not set" in failures["bigquery__dataset"]

    no_gcp_env.setenv("GCP_BUCKET_NAME", "trips")
    no_gcp_env.setenv("GCP_DATASET", "zoomcamp")
    result = dg.materialize(
        gcp_setup_assets(), resources=gcp_resources_from_env(), raise_on_error=False
    )
    failures = failure_descriptions(result)
    assert "GCP_LOCATION is not set" in failures["gcs__bucket"]
    assert "GCP_LOCATION is not set" in failures["bigquery__dataset"]

    no_gcp_env.setenv("GCP_LOCATION", "EU")
    with pytest.raises(GcpSettingMissing, match="GCP_PROJECT_ID is not set"):
        gcp_resources_from_env()["gcs"].process_config_and_initialize().get_client()


NO_CREDENTIALS_SCRIPT = """
import json, dagster as dg
from taxi_platform.defs.trips.gcp import gcp_setup_assets
from taxi_platform.defs.resources import gcp_resources_from_env
result = dg.materialize(gcp_setup_assets(), resources=gcp_resources_from_env(),
                        raise_on_error=False)
print(json.dumps({e.step_key: e.step_failure_data.user_failure_data.description
                  for e in result.all_events if e.is_step_failure}))
"""


def test_no_credentials_anywhere_names_the_variables_to_set(tmp_path, no_gcp_env):
    """The real google-auth lookup, in a process with no key, no gcloud login, no metadata
    server (``NO_GCE_CHECK``): each setup step names the three ways to give credentials."""
    import os

    env = {key: value for key, value in os.environ.items() if key not in GCP_VARIABLES}
    env.update(
        HOME=str(tmp_path),
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        NO_GCE_CHECK="true",
        GCP_PROJECT_ID="p",
        GCP_LOCATION="US",
        GCP_BUCKET_NAME="trips",
        GCP_DATASET="zoomcamp",
    )
    done = subprocess.run(
        [sys.executable, "-c", NO_CREDENTIALS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(failures) == {"gcs__bucket", "bigquery__dataset"}
    for description in failures.values():
        assert "no Google Cloud credentials found" in description
        assert "GCP_CREDS" in description and "GOOGLE_APPLICATION_CREDENTIALS" in description
        assert "gcloud auth application-default login" in description


def test_a_bad_key_is_refused_without_showing_it():
    secret = '{"type": "service_account", "private_key": "SECRET-KEY-MATERIAL"}'
    with pytest.raises(GcpSettingMissing) as raised:
        service_account_credentials(secret)
    assert "SECRET" not in str(raised.value) and "GCP_CREDS" in str(raised.value)
    with pytest.raises(GcpSettingMissing, match="neither a JSON"):
        service_account_credentials("not base64 !!")


def service_account_key() -> dict:
    """A service-account key file's fields, with a freshly made RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "taxi-loader@p.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def test_base64_key_with_line_breaks_is_accepted():
    """``cat key.json | base64`` wraps at 76 columns; the key must still load."""
    key_json = json.dumps(service_account_key(), indent=2)
    wrapped = base64.encodebytes(key_json.encode()).decode()  # 76-column lines, as base64(1)
    assert wrapped.count("\n") > 10
    credentials = service_account_credentials(wrapped)
    assert credentials.service_account_email == "taxi-loader@p.iam.gserviceaccount.com"
    one_line = base64.b64encode(key_json.encode()).decode()
    assert service_account_credentials(one_line).service_account_email.startswith("taxi-")
    assert service_account_credentials(key_json).project_id == "p"


def setup_resources(stub: GoogleStub, location: str = "US") -> dict:
    return {
        "gcs": TaxiGCSResource(
            project="p", location=location, bucket_name="trips", emulator_host=stub.url
        ),
        "bigquery": TaxiBigQueryResource(
            project="p", location=location, dataset="zoomcamp", api_endpoint=stub.url
        ),
    }


def test_refused_storage_and_bigquery_permissions_name_the_role_and_resource(stub_factory):
    def route(method: str, path: str, body: dict) -> Answer:
        if path.startswith("/storage/v1/b"):
            return forbidden("storage.buckets.get", "the Google Cloud Storage bucket")
        return forbidden("bigquery.datasets.get", "dataset p:zoomcamp")

    stub = stub_factory(route)
    result = dg.materialize(
        gcp_setup_assets(), resources=setup_resources(stub), raise_on_error=False
    )
    failures = failure_descriptions(result)
    bucket_failure, dataset_failure = failures["gcs__bucket"], failures["bigquery__dataset"]
    assert "Storage Admin (roles/storage.admin) role on bucket gs://trips" in bucket_failure
    assert "does not have storage.buckets.get access" in bucket_failure  # Google's reason
    assert "BigQuery Admin (roles/bigquery.admin) role on dataset p.zoomcamp" in dataset_failure
    assert "does not have bigquery.datasets.get access" in dataset_failure


def test_refused_object_read_in_a_query_names_the_bucket_not_bigquery(stub_factory):
    """The external table's object is read by a BigQuery job; the refusal is storage's."""
    message = (
        "Access Denied: BigQuery BigQuery: Permission denied while globbing file pattern. "
        "taxi-loader@p.iam.gserviceaccount.com does not have storage.objects.list access "
        "to the Google Cloud Storage bucket."
    )
    jobs = BigQueryJobs(outcome=lambda n, config: {"reason": "accessDenied", "message": message})
    stub = stub_factory(jobs.route)
    bigquery = TaxiBigQueryResource(project="p", dataset="zoomcamp", api_endpoint=stub.url)
    with bigquery.warehouse(reads_bucket="trips") as warehouse:
        with pytest.raises(GcpPermissionDenied) as raised:
            warehouse.run("CREATE TABLE `p.zoomcamp.m` AS SELECT * FROM `p.zoomcamp.m_ext`")
    text = str(raised.value)
    assert "Storage Admin (roles/storage.admin) role on bucket gs://trips" in text
    assert "missing storage.objects.list" in text and "BigQuery Admin" not in text
    assert "Permission denied while globbing file pattern" in text


def test_refused_job_creation_names_the_project(stub_factory):
    stub = stub_factory(lambda method, path, body: forbidden("bigquery.jobs.create", "project p"))
    bigquery = TaxiBigQueryResource(project="p", dataset="d", api_endpoint=stub.url)
    with bigquery.warehouse() as warehouse, pytest.raises(GcpPermissionDenied) as raised:
        warehouse.run("SELECT 1")
    assert "BigQuery Job User (roles/bigquery.jobUser)" in str(raised.value)
    assert "on project p" in str(raised.value)


QUOTA_MESSAGE = "Quota exceeded: Your project exceeded quota for free query bytes scanned."
BILLING_MESSAGE = (
    "Billing has not been enabled for this project. Enable billing at "
    "https://console.cloud.google.com/billing. DML queries are not allowed in the free tier."
)


@pytest.mark.parametrize(
    ("reason", "message", "error_class", "fix"),
    [
        ("quotaExceeded", QUOTA_MESSAGE, GcpQuotaExceeded, "IAM & Admin > Quotas, project p"),
        ("billingNotEnabled", BILLING_MESSAGE, GcpBillingNotEnabled, "link a billing account"),
    ],
)
def test_quota_and_billing_failures_say_so_not_missing_role(
    stub_factory, reason, message, error_class, fix
):
    """A job that fails with Google's errorResult reason (both map to 403 in the client)."""
    jobs = BigQueryJobs(outcome=lambda n, config: {"reason": reason, "message": message})
    stub = stub_factory(jobs.route)
    bigquery = TaxiBigQueryResource(project="p", dataset="zoomcamp", api_endpoint=stub.url)
    with bigquery.warehouse() as warehouse, pytest.raises(error_class) as raised:
        warehouse.run("MERGE INTO `p.zoomcamp.t` T USING `p.zoomcamp.s` S ON FALSE")
    text = str(raised.value)
    assert fix in text and message in text and reason in text
    assert "Grant" not in text  # not a permission problem


def test_quota_answer_on_the_api_itself_says_quota(stub_factory):
    """jobs.insert refused with 403 quotaExceeded (domain usageLimits), not a job failure."""
    stub = stub_factory(
        lambda method, path, body: google_error(403, "quotaExceeded", QUOTA_MESSAGE, "usageLimits")
    )
    bigquery = TaxiBigQueryResource(project="p", dataset="zoomcamp", api_endpoint=stub.url)
    with bigquery.warehouse() as warehouse, pytest.raises(GcpQuotaExceeded, match="quotaExceeded"):
        warehouse.run("SELECT 1")


def test_rate_limit_is_a_quota_error_and_may_be_retried():
    """429 rateLimitExceeded, as google-api-core builds it from Google's answer (the clients
    themselves retry it for minutes first, so no server round trip here)."""
    error = google_exceptions.from_http_status(
        429,
        "Exceeded rate limits: too many table update operations for this table.",
        errors=[{"reason": "rateLimitExceeded", "domain": "usageLimits", "message": "..."}],
    )
    explained = explain(error, GoogleCall("merging", "p", dataset="p.zoomcamp"))
    assert isinstance(explained, GcpQuotaExceeded) and explained.retryable
    assert "rateLimitExceeded" in str(explained) and "too many table update" in str(explained)


TAKEN = (
    "The requested bucket name is not available. The bucket namespace is shared by all "
    "users of the system. Please select a different name and try again."
)


@pytest.mark.parametrize(
    "create_answer",
    [
        google_error(409, "conflict", TAKEN),
        google_error(
            403,
            "forbidden",
            "The bucket you tried to create is a domain name owned by another user.",
        ),
    ],
    ids=["409", "403-domain"],
)
def test_bucket_name_taken_by_another_project_says_choose_another_name(stub_factory, create_answer):
    def route(method: str, path: str, body: dict) -> Answer:
        if method == "GET":  # someone else's bucket: reading it is refused
            return forbidden("storage.buckets.get", "the Google Cloud Storage bucket")
        return create_answer

    stub = stub_factory(route)
    gcs = setup_resources(stub)["gcs"]
    with pytest.raises(GcpBucketNameTaken) as raised:
        gcs.ensure_bucket()
    text = str(raised.value)
    assert "gs://trips is taken by another project" in text
    assert "choose another GCP_BUCKET_NAME" in text
    assert create_answer[1]["error"]["message"] in text  # Google's own reason


def test_own_bucket_that_cannot_be_read_is_a_permission_problem(stub_factory):
    def route(method: str, path: str, body: dict) -> Answer:
        if method == "GET":
            return forbidden("storage.buckets.get", "the Google Cloud Storage bucket")
        return google_error(
            409,
            "conflict",
            "Your previous request to create the named bucket succeeded and you already own it.",
        )

    stub = stub_factory(route)
    with pytest.raises(GcpPermissionDenied) as raised:
        setup_resources(stub)["gcs"].ensure_bucket()
    assert "Storage Admin (roles/storage.admin) role on bucket gs://trips" in str(raised.value)


def test_refused_bucket_creation_names_the_project(stub_factory):
    def route(method: str, path: str, body: dict) -> Answer:
        if method == "GET":
            return not_found()
        return forbidden("storage.buckets.create", "project p")

    stub = stub_factory(route)
    with pytest.raises(GcpPermissionDenied) as raised:
        setup_resources(stub)["gcs"].ensure_bucket()
    assert "Storage Admin (roles/storage.admin) role on project p" in str(raised.value)


def test_bucket_and_dataset_are_created_in_the_configured_location(stub_factory):
    def route(method: str, path: str, body: dict) -> Answer:
        if method == "GET":
            return not_found()
        if path.startswith("/storage/v1/b"):
            return 200, {**body, "kind": "storage#bucket", "id": body["name"]}
        return 200, {**body, "kind": "bigquery#dataset"}

    stub = stub_factory(route)
    result = dg.materialize(gcp_setup_assets(), resources=setup_resources(stub, "EU"))
    assert result.success
    created = {path.split("?")[0]: body for method, path, body in stub.requests if method == "POST"}
    assert created["/storage/v1/b"]["name"] == "trips"
    assert created["/storage/v1/b"]["location"] == "EU"
    dataset = created["/bigquery/v2/projects/p/datasets"]
    assert dataset["datasetReference"] == {"projectId": "p", "datasetId": "zoomcamp"}
    assert dataset["location"] == "EU"


def test_existing_dataset_is_left_as_it_is(stub_factory):
    stub = stub_factory(BigQueryJobs(dataset_location="US").route)
    bigquery = TaxiBigQueryResource(
        project="p", location="EU", dataset="zoomcamp", api_endpoint=stub.url
    )
    with bigquery.warehouse() as warehouse:
        state = warehouse.ensure_dataset("zoomcamp", "EU")
    assert state.created is False and state.location == "US"
    assert [method for method, _, _ in stub.requests] == ["GET"]


def test_query_job_reports_job_id_bytes_and_affected_rows(stub_factory):
    stub = stub_factory(BigQueryJobs().route)
    bigquery = TaxiBigQueryResource(project="p", location="US", dataset="d", api_endpoint=stub.url)
    with bigquery.warehouse() as warehouse:
        result = warehouse.run(
            "MERGE INTO `p.d.t` T USING `p.d.s` S ON T.a = S.a "
            "WHEN NOT MATCHED THEN INSERT (a) VALUES (S.a)"
        )
    (sent,) = stub.sent("POST", r"/projects/p/jobs(\?|$)")
    assert result.job_id == sent["jobReference"]["jobId"]
    assert result.bytes_processed == 1024
    assert result.rows_affected == 7
    assert sent["configuration"]["query"]["query"].startswith("MERGE INTO `p.d.t`")
    assert sent["configuration"]["query"]["useLegacySql"] is False
