"""BigQuery jobs as a real project runs them: where, labelled, waited for, retried.

Stand-in: a local HTTP server on 127.0.0.1 answering as Google's BigQuery and Storage JSON
APIs do (``taxi_platform_tests/google_standin.py``: datasets.get with the dataset's
location, jobs.insert/get/getQueryResults/cancel, buckets.get with the bucket's location,
errors in Google's shape); the official clients talk to it with anonymous credentials.
The assets run in real Dagster runs (``dg.materialize``).
"""

from collections.abc import Iterator

import dagster as dg
import pytest

from taxi_platform.defs.trips.gcp import (
    bigquery_table_asset,
    build_gcp_assets,
    external_asset,
    gcp_setup_assets,
)
from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.pool_limits import BIGQUERY_MERGE_POOL, apply_pool_limits
from taxi_platform.lib.warehouse import (
    GcpConcurrentUpdate,
    GcpError,
    GcpJobTimeout,
    job_labels,
    label_value,
)
from taxi_platform.resources.gcp import TaxiBigQueryResource, TaxiGCSResource
from taxi_platform_tests.support.google_standin import Answer, BigQueryJobs, GoogleStub
from taxi_platform_tests.support.run_results import failure_message, metadata

JANUARY = "2019-01-01"
SERIALIZATION = (
    "Could not serialize access to table taxi-p:zoomcamp.green_tripdata due to concurrent update"
)
PROJECT = "taxi-p"  # a valid project id: the statements check it
JOBS = rf"/bigquery/v2/projects/{PROJECT}/jobs(\?|$)"


class GoogleProject:
    """One project's BigQuery (``jobs``) and its bucket ``trips`` in ``bucket_location``."""

    def __init__(self, jobs: BigQueryJobs, bucket_location: str = "US"):
        self.jobs, self.bucket_location = jobs, bucket_location
        self.stub = GoogleStub(self.route)

    def route(self, method: str, path: str, body: dict) -> Answer:
        if path.startswith("/storage/v1/b/trips"):
            return 200, {
                "kind": "storage#bucket",
                "name": "trips",
                "id": "trips",
                "location": self.bucket_location,
            }
        return self.jobs.route(method, path, body)

    def resources(self, location: str = "US", **bigquery_settings) -> dict:
        return {
            "gcs": TaxiGCSResource(
                project=PROJECT, location=location, bucket_name="trips", emulator_host=self.stub.url
            ),
            "bigquery": TaxiBigQueryResource(
                project=PROJECT,
                location=location,
                dataset="zoomcamp",
                api_endpoint=self.stub.url,
                serialization_backoff_seconds=0.01,
                **bigquery_settings,
            ),
        }


@pytest.fixture
def google() -> Iterator[list[GoogleProject]]:
    projects: list[GoogleProject] = []
    yield projects
    for project in projects:
        project.stub.close()


def project_of(google: list[GoogleProject], jobs: BigQueryJobs, bucket: str = "US"):
    google.append(GoogleProject(jobs, bucket))
    return google[-1]


def test_jobs_run_in_the_datasets_own_location_read_once(google):
    """A dataset made earlier in EU, GCP_LOCATION US: jobs go to EU, not 404 in US."""
    project = project_of(google, BigQueryJobs(PROJECT, dataset_location="EU"))
    bigquery = project.resources(location="US")["bigquery"]
    with bigquery.warehouse() as warehouse:
        warehouse.run("SELECT 1")
        warehouse.run("SELECT 2")
    sent = project.stub.sent("POST", JOBS)
    assert [job["jobReference"]["location"] for job in sent] == ["EU", "EU"]
    assert len(project.stub.sent("GET", r"/datasets/zoomcamp")) == 1


def test_setup_fails_when_the_dataset_cannot_read_the_bucket(google):
    project = project_of(google, BigQueryJobs(PROJECT, dataset_location="EU"), bucket="US")
    result = dg.materialize(
        gcp_setup_assets(), resources=project.resources(location="US"), raise_on_error=False
    )
    message = failure_message(result)
    assert f"dataset {PROJECT}.zoomcamp is in EU and bucket gs://trips is in US" in message
    assert "GCP_BUCKET_NAME" in message and "GCP_DATASET" in message
    assert metadata(result, "gcs/bucket")["location"] == "US"  # the bucket itself is fine


def test_external_table_whose_bucket_is_elsewhere_fails_before_the_query(google):
    project = project_of(
        google, BigQueryJobs(PROJECT, dataset_location="europe-west1"), bucket="US"
    )
    result = dg.materialize(
        [external_asset(GREEN)],
        partition_key=JANUARY,
        resources=project.resources(),
        raise_on_error=False,
    )
    message = failure_message(result)
    assert "green_tripdata_2019-01.csv (partition green 2019-01-01)" in message
    assert (
        f"dataset {PROJECT}.zoomcamp is in europe-west1 and bucket gs://trips is in US" in message
    )
    assert project.stub.sent("POST", JOBS) == []  # no query was sent


def test_external_table_reads_a_bucket_in_a_region_of_the_datasets_multi_region(google):
    project = project_of(google, BigQueryJobs(PROJECT, dataset_location="US"), bucket="US-CENTRAL1")
    result = dg.materialize(
        [external_asset(GREEN)], partition_key=JANUARY, resources=project.resources()
    )
    assert result.success
    (sent,) = project.stub.sent("POST", JOBS)
    assert "CREATE OR REPLACE EXTERNAL TABLE" in sent["configuration"]["query"]["query"]


def test_every_query_job_of_a_month_carries_taxi_month_and_asset_labels(google):
    project = project_of(google, BigQueryJobs(PROJECT, result_rows=[5]))
    result = dg.materialize(
        [bigquery_table_asset(GREEN)], partition_key=JANUARY, resources=project.resources()
    )
    assert result.success, failure_message(result)
    sent = project.stub.sent("POST", JOBS)
    # create table, one ALTER per drift column, merge, two counts
    assert len(sent) == 1 + len(GREEN.optional_columns) + 3
    expected = {"taxi": "green", "month": "2019-01", "asset": "bigquery__green_tripdata"}
    assert all(job["configuration"]["labels"] == expected for job in sent)
    assert (
        metadata(result, "bigquery/green_tripdata")["merge_job_id"]
        == (sent[1 + len(GREEN.optional_columns)]["jobReference"]["jobId"])
    )


def test_label_values_follow_bigquerys_rules():
    assert label_value("Bigquery/Green Tripdata.CSV") == "bigquery_green_tripdata_csv"
    assert len(label_value("x" * 100)) == 63
    labels = job_labels("green", "2019-01-01", "bigquery/green_tripdata_month")
    assert labels == {
        "taxi": "green",
        "month": "2019-01",
        "asset": "bigquery__green_tripdata_month",
    }


def test_merge_that_loses_a_race_for_the_table_is_retried_with_backoff(google):
    """The stand-in fails the first job as BigQuery fails a conflicting DML statement."""

    def outcome(number: int, configuration: dict) -> dict | None:
        return {"reason": "invalidQuery", "message": SERIALIZATION} if number == 1 else None

    project = project_of(google, BigQueryJobs(PROJECT, outcome=outcome))
    retries: list[str] = []
    with project.resources()["bigquery"].warehouse(on_retry=retries.append) as warehouse:
        result = warehouse.run("MERGE INTO `taxi-p.zoomcamp.green_tripdata` T USING ...")
    first, second = project.stub.sent("POST", JOBS)
    assert result.job_id == second["jobReference"]["jobId"] != first["jobReference"]["jobId"]
    assert len(retries) == 1 and "concurrent update" in retries[0] and "2 of 6" in retries[0]


def test_merge_that_keeps_losing_fails_after_the_attempts_naming_the_cause(google):
    project = project_of(
        google,
        BigQueryJobs(
            PROJECT, outcome=lambda n, config: {"reason": "invalidQuery", "message": SERIALIZATION}
        ),
    )
    bigquery = project.resources(serialization_attempts=3)["bigquery"]
    with bigquery.warehouse() as warehouse, pytest.raises(GcpConcurrentUpdate) as raised:
        warehouse.run("MERGE INTO `taxi-p.zoomcamp.green_tripdata` T USING ...")
    assert "3 attempts" in str(raised.value) and SERIALIZATION in str(raised.value)
    assert raised.value.retryable
    assert len(project.stub.sent("POST", JOBS)) == 3


def test_other_bad_statements_are_not_retried(google):
    syntax = "Syntax error: Unexpected keyword USING at [1:40]"
    project = project_of(
        google,
        BigQueryJobs(
            PROJECT, outcome=lambda n, config: {"reason": "invalidQuery", "message": syntax}
        ),
    )
    with project.resources()["bigquery"].warehouse() as warehouse:
        with pytest.raises(GcpError, match="refused the statement: Syntax error"):
            warehouse.run("MERGE INTO USING")
    assert len(project.stub.sent("POST", JOBS)) == 1


def test_job_that_never_finishes_fails_with_a_timeout_message_and_is_cancelled(google):
    project = project_of(google, BigQueryJobs(PROJECT, finishes=False))
    bigquery = project.resources(job_timeout_seconds=0.5)["bigquery"]
    with bigquery.warehouse() as warehouse, pytest.raises(GcpJobTimeout) as raised:
        warehouse.run("SELECT 1")
    (sent,) = project.stub.sent("POST", JOBS)
    job_id = sent["jobReference"]["jobId"]
    text = str(raised.value)
    assert job_id in text and "within 0.5 s" in text
    assert "TAXI_BIGQUERY_JOB_TIMEOUT_SECONDS" in text
    assert project.stub.sent("POST", rf"/jobs/{job_id}/cancel")


def test_merges_into_the_trip_tables_share_one_pool():
    pools = {asset.key.to_user_string(): asset.op.pool for asset in build_gcp_assets(GREEN)}
    assert pools.pop("bigquery/green_tripdata") == BIGQUERY_MERGE_POOL == "bigquery_merge"
    assert set(pools.values()) == {None}


def pool_limits(instance: dg.DagsterInstance) -> dict[str, tuple[int, bool]]:
    return {
        limit.name: (limit.limit, limit.from_default)
        for limit in instance.event_log_storage.get_pool_limits()
    }


def test_the_merge_pool_gets_one_slot_unless_an_operator_set_its_limit():
    """On a real (SQLite) instance: no limit yet, the default's, and one set by hand."""
    with (
        dg.instance_for_test() as fresh,
        dg.instance_for_test(
            overrides={"concurrency": {"pools": {"default_limit": 2}}}
        ) as defaulted,
        dg.instance_for_test() as by_hand,
    ):
        defaulted.event_log_storage.initialize_concurrency_limit_to_default(BIGQUERY_MERGE_POOL)
        by_hand.event_log_storage.set_concurrency_slots(BIGQUERY_MERGE_POOL, 3)
        before = pool_limits(defaulted)[BIGQUERY_MERGE_POOL]
        for instance in (fresh, defaulted, by_hand):
            apply_pool_limits(instance)

        assert before == (2, True)
        assert pool_limits(fresh)[BIGQUERY_MERGE_POOL] == (1, False)
        assert pool_limits(defaulted)[BIGQUERY_MERGE_POOL] == (1, False)
        assert pool_limits(by_hand)[BIGQUERY_MERGE_POOL] == (3, False)


def test_a_run_using_bigquery_sets_the_merge_pool_before_its_steps_run(google):
    """Resources are set up before the steps claim slots (in-process executor)."""
    project = project_of(google, BigQueryJobs(PROJECT))
    bigquery = project.resources()["bigquery"]

    @dg.asset(pool=BIGQUERY_MERGE_POOL)
    def merge_like(bigquery: TaxiBigQueryResource) -> None:
        """Stands for a merge: it only needs the resource set up."""

    with dg.instance_for_test() as instance:
        assert BIGQUERY_MERGE_POOL not in pool_limits(instance)
        result = dg.materialize([merge_like], resources={"bigquery": bigquery}, instance=instance)

        assert result.success
        assert pool_limits(instance)[BIGQUERY_MERGE_POOL] == (1, False)
