"""Working files: landed months go once read, by hand with `purge`, and come back on demand."""

import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from taxi_platform.defs.trips.gcp import build_gcp_assets
from taxi_platform.defs.trips.postgres import etl_assets
from taxi_platform.lib.asset_keys import gcs_asset_key
from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.months import partition_key
from taxi_platform.local.gcp_standins import start_fake_gcs, stop_local_gcp
from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource
from taxi_platform.resources.gcp import TaxiGCSResource
from taxi_platform.tools.generate import write_month
from taxi_platform.tools.mirror import ReleaseMirror
from taxi_platform_tests.support.run_results import failure_message, metadata

taxi_assets = etl_assets()

MONTHS = [date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)]
GREEN_ASSETS = [asset for asset in taxi_assets if "green_tripdata" in asset.key.path[-1]]


@pytest.fixture
def mirror(tmp_path: Path):
    folder = tmp_path / "mirror"
    for index, month in enumerate(MONTHS):
        write_month(GREEN, month, 400 + index * 100, folder, seed=index)
    with ReleaseMirror(folder) as server:
        yield server


def resources_for(mirror: ReleaseMirror, database_url: str, landing_root: Path, retention: str):
    return {
        "trip_source": TripFileSource(base_url=mirror.base_url, backoff_seconds=0.01),
        "landing": LandingArea(root=str(landing_root), retention=retention),
        "postgres": PostgresResource(url=database_url),
    }


def landed_files(landing_root: Path) -> list[str]:
    folder = landing_root / "green"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_delete_retention_removes_each_month_once_loaded_over_a_three_month_backfill(
    mirror: ReleaseMirror, database_url: str, tmp_path: Path
) -> None:
    landing_root = tmp_path / "landing"
    resources = resources_for(mirror, database_url, landing_root, "delete")
    instance = dg.DagsterInstance.ephemeral()
    reported_sizes = []
    for month in MONTHS:
        result = dg.materialize(
            GREEN_ASSETS, partition_key=partition_key(month), resources=resources, instance=instance
        )
        reported_sizes.append(metadata(result, "raw/green_tripdata_csv")["landing_area_bytes"])
        assert landed_files(landing_root) == []

    # While it was landed, each month's file was counted in the landing area's size.
    assert all(size > 0 for size in reported_sizes)
    with psycopg.connect(database_url) as connection:
        assert connection.execute("select count(*) from green_tripdata").fetchone()[0] == 1500


def test_keep_retention_leaves_every_month(
    mirror: ReleaseMirror, database_url: str, tmp_path: Path
) -> None:
    landing_root = tmp_path / "landing"
    resources = resources_for(mirror, database_url, landing_root, "keep")
    instance = dg.DagsterInstance.ephemeral()
    sizes = []
    for month in MONTHS:
        result = dg.materialize(
            GREEN_ASSETS, partition_key=partition_key(month), resources=resources, instance=instance
        )
        sizes.append(metadata(result, "raw/green_tripdata_csv")["landing_area_bytes"])

    assert landed_files(landing_root) == [
        name
        for month in MONTHS
        for name in (GREEN.csv_name(month), GREEN.csv_name(month) + ".json")
    ]
    assert sizes[0] < sizes[1] < sizes[2], "the landing area grows month by month"


@pytest.fixture(scope="module")
def fake_gcs_url(tmp_path_factory: pytest.TempPathFactory):
    state_dir = tmp_path_factory.mktemp("fake_gcs")
    yield start_fake_gcs(state_dir)
    stop_local_gcp(state_dir)


def test_file_stays_until_every_reader_has_the_month(
    mirror: ReleaseMirror, database_url: str, tmp_path: Path, fake_gcs_url: str
) -> None:
    """The GCS upload reads the landed file too: it holds the file until it has the month."""
    gcs = TaxiGCSResource(
        project="taxi-test", location="US", bucket_name="retention-test", emulator_host=fake_gcs_url
    )
    gcs.ensure_bucket()
    gcs_upload = next(a for a in build_gcp_assets(GREEN) if a.key == gcs_asset_key(GREEN))
    landing_root = tmp_path / "landing"
    resources = {**resources_for(mirror, database_url, landing_root, "delete"), "gcs": gcs}
    instance = dg.DagsterInstance.ephemeral()
    january, february = (partition_key(month) for month in MONTHS[:2])

    # Both readers in one run: the file goes once the second of them is done.
    dg.materialize(
        [*GREEN_ASSETS, gcs_upload], partition_key=january, resources=resources, instance=instance
    )
    assert landed_files(landing_root) == []

    # The Postgres path alone: the GCS path is in use, so the file waits for it.
    dg.materialize(GREEN_ASSETS, partition_key=february, resources=resources, instance=instance)
    assert GREEN.csv_name(MONTHS[1]) in landed_files(landing_root)

    dg.materialize(
        [*GREEN_ASSETS, gcs_upload],
        selection=[gcs_upload.key],
        partition_key=february,
        resources=resources,
        instance=instance,
    )
    assert landed_files(landing_root) == []


def test_rematerializing_after_a_purge_downloads_again(
    mirror: ReleaseMirror, database_url: str, tmp_path: Path
) -> None:
    landing_root = tmp_path / "landing"
    resources = resources_for(mirror, database_url, landing_root, "keep")
    key = partition_key(MONTHS[0])
    dg.materialize(GREEN_ASSETS, partition_key=key, resources=resources)
    LandingArea(root=str(landing_root)).purge(["green"])
    assert landed_files(landing_root) == []

    again = dg.materialize(GREEN_ASSETS, partition_key=key, resources=resources)

    assert metadata(again, "raw/green_tripdata_csv")["downloaded"] is True
    assert landed_files(landing_root) == [
        GREEN.csv_name(MONTHS[0]),
        GREEN.csv_name(MONTHS[0]) + ".json",
    ]


def test_purge_command_deletes_by_taxi_and_month_and_prints_what_it_freed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    landing = home / "landing"
    for taxi in ("green", "yellow"):
        (landing / taxi).mkdir(parents=True)
        for month in ("2019-01", "2019-02", "2019-03"):
            (landing / taxi / f"{taxi}_tripdata_{month}.csv").write_bytes(b"x" * 1000)
            (landing / taxi / f"{taxi}_tripdata_{month}.csv.json").write_bytes(b"{}")
    (landing / "green" / "notes.txt").write_text("not a month")

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "taxi_platform.tools.cli",
            "purge",
            "--taxi",
            "green",
            "--before",
            "2019-03",
        ],
        env={"TAXI_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert sorted(p.name for p in (landing / "green").iterdir()) == [
        "green_tripdata_2019-03.csv",
        "green_tripdata_2019-03.csv.json",
        "notes.txt",
    ]
    assert len(list((landing / "yellow").iterdir())) == 6
    assert "freed 2,004 bytes in 4 files" in completed.stdout
    assert "green_tripdata_2019-01.csv (1,000 bytes)" in completed.stdout


def test_an_unknown_retention_setting_fails_naming_the_variable(
    mirror: ReleaseMirror, database_url: str, tmp_path: Path
) -> None:
    resources = resources_for(mirror, database_url, tmp_path / "landing", "sometimes")

    result = dg.materialize(
        GREEN_ASSETS,
        partition_key=partition_key(MONTHS[0]),
        resources=resources,
        raise_on_error=False,
    )

    assert "TAXI_LANDING_RETENTION" in failure_message(result)
