"""What users see when Google Cloud is misconfigured, and what the real clients send.

Google's APIs are played by small HTTP servers on 127.0.0.1 that answer as Google does
(403 with an error body, 404 for a missing dataset, a finished query job); the official
google-cloud-storage and google-cloud-bigquery clients talk to them unchanged.
"""

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from taxi_platform.defs.trips.gcp import gcp_setup_assets
from taxi_platform.lib.warehouse import GcpPermissionDenied, GcpSettingMissing
from taxi_platform.resources.gcp import (
    TaxiBigQueryResource,
    TaxiGCSResource,
    gcp_resources_from_env,
    service_account_credentials,
)

Answer = tuple[int, dict]


class GoogleStub:
    """Answers each request with ``route(method, path, body)``; records every request."""

    def __init__(self, route: Callable[[str, str, dict], Answer]):
        self.requests: list[tuple[str, str, dict]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                stub.requests.append((self.command, self.path, body))
                status, answer = route(self.command, self.path, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def forbidden(permission: str) -> Answer:
    message = f"taxi-loader@p.iam.gserviceaccount.com does not have {permission} access."
    return 403, {"error": {"code": 403, "message": message, "errors": [{"reason": "forbidden"}]}}


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


@pytest.fixture
def no_gcp_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "GCP_PROJECT_ID",
        "GCP_LOCATION",
        "GCP_BUCKET_NAME",
        "GCP_DATASET",
        "GCP_CREDS",
        "STORAGE_EMULATOR_HOST",
        "BIGQUERY_EMULATOR_HOST",
        "TAXI_LOCAL_BIGQUERY_DATABASE",
        "TAXI_LOCAL_GCS_ROOT",
    ):
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


def test_a_bad_key_is_refused_without_showing_it():
    secret = '{"type": "service_account", "private_key": "SECRET-KEY-MATERIAL"}'
    with pytest.raises(GcpSettingMissing) as raised:
        service_account_credentials(secret)
    assert "SECRET" not in str(raised.value) and "GCP_CREDS" in str(raised.value)
    with pytest.raises(GcpSettingMissing, match="neither a JSON"):
        service_account_credentials("not base64 !!")


def test_refused_storage_permission_names_the_role_and_bucket(stub_factory):
    stub = stub_factory(lambda method, path, body: forbidden("storage.buckets.get"))
    gcs = TaxiGCSResource(project="p", location="US", bucket_name="trips", emulator_host=stub.url)
    bigquery = TaxiBigQueryResource(
        project="p", location="US", dataset="zoomcamp", api_endpoint=stub.url
    )
    result = dg.materialize(
        gcp_setup_assets(), resources={"gcs": gcs, "bigquery": bigquery}, raise_on_error=False
    )
    failures = failure_descriptions(result)
    assert "Storage Admin (roles/storage.admin)" in failures["gcs__bucket"]
    assert "gs://trips" in failures["gcs__bucket"]
    assert "storage.buckets.get" in failures["gcs__bucket"]  # Google's own reason is kept
    assert "BigQuery Admin (roles/bigquery.admin)" in failures["bigquery__dataset"]
    assert "p.zoomcamp" in failures["bigquery__dataset"]


def test_refused_query_names_the_bigquery_role(stub_factory):
    stub = stub_factory(lambda method, path, body: forbidden("bigquery.jobs.create"))
    bigquery = TaxiBigQueryResource(project="p", location="US", dataset="d", api_endpoint=stub.url)
    with bigquery.warehouse() as warehouse, pytest.raises(GcpPermissionDenied) as raised:
        warehouse.run("SELECT 1")
    assert "BigQuery Admin" in str(raised.value) and "project p" in str(raised.value)


def test_bucket_and_dataset_are_created_in_the_configured_location(stub_factory):
    def route(method: str, path: str, body: dict) -> Answer:
        if method == "GET":
            return 404, {"error": {"code": 404, "message": "Not found", "errors": []}}
        if path.startswith("/storage/v1/b"):
            return 200, {**body, "kind": "storage#bucket", "id": body["name"]}
        return 200, {**body, "kind": "bigquery#dataset"}

    stub = stub_factory(route)
    gcs = TaxiGCSResource(project="p", location="EU", bucket_name="trips", emulator_host=stub.url)
    bigquery = TaxiBigQueryResource(
        project="p", location="EU", dataset="zoomcamp", api_endpoint=stub.url
    )
    result = dg.materialize(gcp_setup_assets(), resources={"gcs": gcs, "bigquery": bigquery})
    assert result.success
    created = {path.split("?")[0]: body for method, path, body in stub.requests if method == "POST"}
    assert created["/storage/v1/b"]["name"] == "trips"
    assert created["/storage/v1/b"]["location"] == "EU"
    dataset = created["/bigquery/v2/projects/p/datasets"]
    assert dataset["datasetReference"] == {"projectId": "p", "datasetId": "zoomcamp"}
    assert dataset["location"] == "EU"


def test_existing_dataset_is_left_as_it_is(stub_factory):
    def route(method: str, path: str, body: dict) -> Answer:
        reference = {"projectId": "p", "datasetId": "zoomcamp"}
        return 200, {"kind": "bigquery#dataset", "datasetReference": reference, "location": "US"}

    stub = stub_factory(route)
    bigquery = TaxiBigQueryResource(
        project="p", location="EU", dataset="zoomcamp", api_endpoint=stub.url
    )
    with bigquery.warehouse() as warehouse:
        state = warehouse.ensure_dataset("zoomcamp", "EU")
    assert state.created is False and state.location == "US"
    assert [method for method, _, _ in stub.requests] == ["GET"]


def test_query_job_reports_job_id_bytes_and_affected_rows(stub_factory):
    job = {
        "kind": "bigquery#job",
        "jobReference": {"projectId": "p", "jobId": "job_merge_1", "location": "US"},
        "status": {"state": "DONE"},
        "statistics": {
            "query": {
                "totalBytesProcessed": "123456",
                "numDmlAffectedRows": "42",
                "statementType": "MERGE",
            }
        },
    }

    def route(method: str, path: str, body: dict) -> Answer:
        if method == "POST" and re.match(r"/bigquery/v2/projects/p/jobs", path):
            return 200, {**job, "configuration": body.get("configuration", {})}
        if "/queries/" in path:
            return 200, {
                "kind": "bigquery#getQueryResultsResponse",
                "jobReference": job["jobReference"],
                "jobComplete": True,
                "totalRows": "0",
                "schema": {"fields": []},
                "numDmlAffectedRows": "42",
            }
        return 200, job

    stub = stub_factory(route)
    bigquery = TaxiBigQueryResource(project="p", location="US", dataset="d", api_endpoint=stub.url)
    with bigquery.warehouse() as warehouse:
        result = warehouse.run(
            "MERGE INTO `p.d.t` T USING `p.d.s` S ON T.a = S.a "
            "WHEN NOT MATCHED THEN INSERT (a) VALUES (S.a)"
        )
    assert result.job_id == "job_merge_1"
    assert result.bytes_processed == 123456
    assert result.rows_affected == 42
    sent = next(body for method, path, body in stub.requests if method == "POST")
    assert sent["configuration"]["query"]["query"].startswith("MERGE INTO `p.d.t`")
    assert sent["configuration"]["query"]["useLegacySql"] is False
