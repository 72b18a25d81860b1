"""Downloads that go wrong on a real socket: cut transfers resumed, a full disk named, the
leftovers of a killed download cleaned, a reordered header explained."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from taxi_platform.lib.asset_keys import PARTITION_ROW_COUNT
from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.landing import land_month
from taxi_platform.lib.months import partition_key
from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource
from taxi_platform.resources.trip_source import SourceUnavailable
from taxi_platform.tools.generate import write_month
from taxi_platform_tests.support.http_faults import FaultyMirror
from taxi_platform_tests.support.run_results import failure_message, metadata
from taxi_platform_tests.support.stack import wait_until
from taxi_platform_tests.test_postgres_etl import assets_of, final_count, load, publish

JANUARY = date(2019, 1, 1)
RELEASE_PATH = "/" + GREEN.release_path(JANUARY)
DESCRIBE = "green_tripdata_2019-01.csv (partition green 2019-01-01)"


@pytest.fixture
def mirror(mirror_folder: Path) -> Iterator[FaultyMirror]:
    with FaultyMirror(mirror_folder) as server:
        yield server


def source_for(mirror: FaultyMirror, **settings) -> TripFileSource:
    return TripFileSource(base_url=mirror.base_url, backoff_seconds=0.01, **settings)


def resources_for(mirror: FaultyMirror, database_url: str, landing_root: Path, **settings):
    return {
        "trip_source": source_for(mirror, **settings),
        "landing": LandingArea(root=str(landing_root)),
        "postgres": PostgresResource(url=database_url),
    }


def test_connection_dropped_mid_download_is_resumed_where_it_stopped(
    mirror: FaultyMirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    gz_path = write_month(GREEN, JANUARY, 4000, mirror_folder, seed=3)
    cut_at = gz_path.stat().st_size // 3
    mirror.truncate(RELEASE_PATH, keep_bytes=cut_at, times=1)

    result = load(GREEN, JANUARY, resources_for(mirror, database_url, tmp_path / "landing"))

    assert result.success
    # The second GET asks for the rest only, from the first byte the landing wrote.
    ranges = mirror.ranges_for(RELEASE_PATH)
    assert ranges[0] is None and len(ranges) == 2
    resumed_from = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= cut_at
    raw = metadata(result, "raw/green_tripdata_csv")
    assert raw["gz_bytes"] == gz_path.stat().st_size
    assert raw[PARTITION_ROW_COUNT] == 4000
    assert final_count(database_url, GREEN) == 4000


def test_read_timeout_mid_download_is_retried(
    mirror: FaultyMirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    gz_path = write_month(GREEN, JANUARY, 2000, mirror_folder, seed=4)
    mirror.truncate(RELEASE_PATH, keep_bytes=gz_path.stat().st_size // 2, times=1, stall_seconds=5)
    resources = resources_for(mirror, database_url, tmp_path / "landing", read_timeout_seconds=0.5)

    result = load(GREEN, JANUARY, resources)

    assert len(mirror.ranges_for(RELEASE_PATH)) == 2
    assert metadata(result, "postgres/green_tripdata")["rows_inserted"] == 2000


def test_download_cut_on_every_attempt_gives_the_bytes_actually_received(
    mirror: FaultyMirror, mirror_folder: Path, tmp_path: Path
) -> None:
    gz_path = write_month(GREEN, JANUARY, 3000, mirror_folder, seed=5)
    # Smaller than one read chunk: a count of what reached the writer would say 0 bytes.
    mirror.truncate(RELEASE_PATH, keep_bytes=1000)
    source = source_for(mirror, max_attempts=3)
    csv_path = tmp_path / "landing" / "green" / GREEN.csv_name(JANUARY)

    with pytest.raises(SourceUnavailable) as raised:
        land_month(source, source.url_for(GREEN, JANUARY), csv_path, GREEN.header, DESCRIBE)

    message = str(raised.value)
    assert DESCRIBE in message
    # Each attempt resumed the last one: 3 x 1,000 bytes arrived in all.
    assert f"interrupted after 3,000 of {gz_path.stat().st_size:,} bytes" in message
    assert "after 3 attempts" in message
    assert mirror.ranges_for(RELEASE_PATH) == [None, "bytes=1000-", "bytes=2000-"]
    assert list(csv_path.parent.iterdir()) == []


def test_cut_off_download_that_never_completes_leaves_the_final_table_unchanged(
    mirror: FaultyMirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    write_month(GREEN, JANUARY, 500, mirror_folder, seed=5)
    mirror.truncate(RELEASE_PATH, keep_bytes=200)
    resources = resources_for(mirror, database_url, tmp_path / "landing", max_attempts=2)

    result = load(GREEN, JANUARY, resources, raise_on_error=False)

    message = failure_message(result)
    assert DESCRIBE in message and "interrupted after 400 of" in message
    # Transient: the step's retry policy tried again (2 attempts of the source each time).
    assert len(mirror.ranges_for(RELEASE_PATH)) == 2 * 3
    assert final_count(database_url, GREEN) == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real full disk without filling the machine's."""
    mount_point = tmp_path / "tiny_disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_landing_area_names_the_path_and_the_space_needed_and_is_not_retried(
    mirror: FaultyMirror, mirror_folder: Path, database_url: str, tiny_disk: Path
) -> None:
    gz_path = write_month(GREEN, JANUARY, 20000, mirror_folder, seed=6)
    csv_size = len(gzip.decompress(gz_path.read_bytes()))
    assert csv_size > 1.5 * 1024 * 1024

    result = load(
        GREEN, JANUARY, resources_for(mirror, database_url, tiny_disk), raise_on_error=False
    )

    message = failure_message(result)
    assert DESCRIBE in message
    assert f"no space left in the landing area {tiny_disk / 'green'}" in message
    needed = int(message.split("needs about ")[1].split(" bytes")[0].replace(",", ""))
    assert abs(needed - csv_size) < csv_size * 0.25, (needed, csv_size)
    assert "Not retried" in message
    assert mirror.requests_for(RELEASE_PATH) == ["GET"]
    assert list((tiny_disk / "green").iterdir()) == []


_KILLABLE_DOWNLOAD = """
import sys
from datetime import date
from pathlib import Path
from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.landing import land_month
from taxi_platform.resources import TripFileSource
source = TripFileSource(base_url=sys.argv[1], read_timeout_seconds=300)
land_month(source, source.url_for(GREEN, date(2019, 1, 1)), Path(sys.argv[2]),
           GREEN.header, "killed download")
"""


def test_partial_file_of_a_killed_download_is_removed_by_the_next_run_of_the_month(
    mirror: FaultyMirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    gz_path = write_month(GREEN, JANUARY, 3000, mirror_folder, seed=7)
    mirror.truncate(RELEASE_PATH, keep_bytes=gz_path.stat().st_size // 2, times=1, stall_seconds=60)
    landing_root = tmp_path / "landing"
    csv_path = landing_root / "green" / GREEN.csv_name(JANUARY)
    victim = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_DOWNLOAD, mirror.base_url, str(csv_path)]
    )
    try:
        wait_until(
            lambda: [p for p in csv_path.parent.glob("*.partial") if p.stat().st_size > 0],
            timeout=60,
            what="the download to write its partial file",
        )
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    (left_behind,) = csv_path.parent.glob("*.partial")
    # A download of this month still running (this very process) keeps its partial file.
    alive = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    alive.write_bytes(b"in progress")
    instance = dg.DagsterInstance.ephemeral()

    result = dg.materialize(
        assets_of(GREEN),
        partition_key=partition_key(JANUARY),
        resources=resources_for(mirror, database_url, landing_root),
        instance=instance,
    )

    assert not left_behind.exists()
    assert alive.exists()
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(f"removed {left_behind.name}" in line for line in logs)
    assert final_count(database_url, GREEN) == 3000


def test_reordered_header_says_the_order_differs(
    mirror_folder: Path, mirror: FaultyMirror, database_url: str, tmp_path: Path
) -> None:
    gz_path = write_month(GREEN, JANUARY, 100, mirror_folder, seed=8)
    lines = gzip.decompress(gz_path.read_bytes()).split(b"\n", 1)
    names = lines[0].split(b",")
    names[1], names[2] = names[2], names[1]
    publish(mirror_folder, GREEN, JANUARY, b",".join(names) + b"\n" + lines[1])

    result = load(
        GREEN,
        JANUARY,
        resources_for(mirror, database_url, tmp_path / "landing"),
        raise_on_error=False,
    )

    message = failure_message(result)
    assert DESCRIBE in message
    assert "missing: none; unexpected: none" in message
    assert (
        "the same columns in a different order: column 2 is 'lpep_dropoff_datetime', "
        "expected 'lpep_pickup_datetime'"
    ) in message
    assert final_count(database_url, GREEN) == 0
