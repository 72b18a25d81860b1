"""TLC months on the Google Cloud path, offline: fake-gcs-server and the DuckDB BigQuery.

The converted CSV goes to GCS and the BigQuery external table unchanged; the final table
gains the drift columns (``airport_fee``, ``cbd_congestion_fee``), NULL for course months.
"""

from __future__ import annotations

import csv
import gzip
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from taxi_platform.lib.catalog import GREEN, YELLOW, TaxiType
from taxi_platform.lib.tlc_parquet import convert_file
from taxi_platform.local.gcp_standins import start_fake_gcs, stop_local_gcp
from taxi_platform.resources import LandingArea, TripFileSource
from taxi_platform.resources.gcp import TaxiBigQueryResource, TaxiGCSResource
from taxi_platform.tools.generate import write_month
from taxi_platform.tools.generate_tlc import write_tlc_month
from taxi_platform.tools.mirror import ReleaseMirror
from taxi_platform_tests.support.run_results import failure_message, metadata
from taxi_platform_tests.test_gcp_assets import (
    DATASET,
    PROJECT,
    expected_ids,
    final_ids,
    load,
    setup,
    warehouse_of,
)

JULY_2021, AUGUST_2021, FEBRUARY_2025 = date(2021, 7, 1), date(2021, 8, 1), date(2025, 2, 1)


@pytest.fixture(scope="module")
def gcs_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """fake-gcs-server on 127.0.0.1: its URL and the folder it keeps objects in."""
    state_dir = tmp_path_factory.mktemp("tlc_fake_gcs")
    url = start_fake_gcs(state_dir)
    yield url, state_dir / "gcs"
    stop_local_gcp(state_dir)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "mirror"
    folder.mkdir()
    with ReleaseMirror(folder) as server:
        yield folder, server.base_url


@pytest.fixture
def tlc_resources(gcs_root: tuple[str, Path], mirror: tuple[Path, str], tmp_path: Path) -> dict:
    """The defaults' sources (course months from the course layout, later ones from the
    TLC layout of the same mirror), GCS and the BigQuery stand-in."""
    url = mirror[1]
    return {
        "trip_source": TripFileSource(base_url=url, tlc_url=f"{url}/trip-data", max_attempts=1),
        "landing": LandingArea(root=str(tmp_path / "landing"), retention="keep"),
        "gcs": TaxiGCSResource(
            project=PROJECT,
            location="US",
            bucket_name=f"trips-{uuid.uuid4().hex[:12]}",
            emulator_host=gcs_root[0],
        ),
        "bigquery": TaxiBigQueryResource(
            project=PROJECT,
            location="US",
            dataset=DATASET,
            local_database=str(tmp_path / "bigquery.duckdb"),
            local_gcs_root=str(gcs_root[1]),
        ),
    }


def converted_lines(taxi: TaxiType, parquet: Path, tmp_path: Path) -> list[str]:
    target = tmp_path / f"expected_{taxi.name}.csv"
    convert_file(taxi, parquet, target, "expected")
    return target.read_text().splitlines()[1:]


def column_counts(gcp: dict, taxi: TaxiType, where: str) -> tuple:
    return warehouse_of(gcp).rows(
        f"SELECT filename, COUNT(*), COUNT(cbd_congestion_fee), "
        f"{'COUNT(airport_fee)' if taxi is YELLOW else '0'} "
        f"FROM `{PROJECT}.{DATASET}.{taxi.table}` {where} GROUP BY filename ORDER BY filename"
    )


@pytest.mark.parametrize("taxi", [GREEN, YELLOW], ids=lambda taxi: taxi.name)
def test_a_tlc_month_merges_into_bigquery_with_its_drift_columns(
    taxi: TaxiType, tlc_resources: dict, mirror, tmp_path: Path
) -> None:
    parquet = write_tlc_month(taxi, FEBRUARY_2025, 400, mirror[0], seed=4)
    setup(tlc_resources)

    result = load(taxi, FEBRUARY_2025, tlc_resources)

    assert result.success, failure_message(result)
    assert metadata(result, f"raw/{taxi.table}_csv")["source"] == "tlc"
    assert metadata(result, f"bigquery/{taxi.table}")["rows_inserted"] == 400
    # The id columns sit where the course header has them: the drift columns trail.
    assert final_ids(tlc_resources, taxi) == expected_ids(
        taxi, converted_lines(taxi, parquet, tmp_path)
    )
    counts = column_counts(tlc_resources, taxi, "")
    filled_airport = 400 if taxi is YELLOW else 0
    assert counts == [(taxi.csv_name(FEBRUARY_2025), 400, 400, filled_airport)]


def test_a_course_month_and_a_tlc_month_share_the_bigquery_table(
    tlc_resources: dict, mirror, tmp_path: Path
) -> None:
    """A table made before the drift columns existed gains them; the course month keeps
    NULL there, the TLC month fills them."""
    course_gz = write_month(YELLOW, JULY_2021, 300, mirror[0], seed=6)
    write_tlc_month(YELLOW, AUGUST_2021, 300, mirror[0], seed=6)
    setup(tlc_resources)
    old_columns = ", ".join(f"{c.name} {c.bigquery_type}" for c in YELLOW.columns)
    warehouse_of(tlc_resources).run(
        f"CREATE TABLE `{PROJECT}.{DATASET}.yellow_tripdata` "
        f"(unique_row_id BYTES, filename STRING, {old_columns})"
    )

    results = [load(YELLOW, month, tlc_resources) for month in (JULY_2021, AUGUST_2021)]

    assert all(r.success for r in results), [failure_message(r) for r in results]
    assert [metadata(r, "raw/yellow_tripdata_csv")["source"] for r in results] == [
        "course",
        "tlc",
    ]
    assert column_counts(tlc_resources, YELLOW, "") == [
        ("yellow_tripdata_2021-07.csv", 300, 0, 0),
        ("yellow_tripdata_2021-08.csv", 300, 0, 300),
    ]
    with gzip.open(course_gz, "rt", newline="") as file:
        course_lines = [",".join(row) for row in list(csv.reader(file))[1:]]
    july_ids = warehouse_of(tlc_resources).rows(
        f"SELECT unique_row_id FROM `{PROJECT}.{DATASET}.yellow_tripdata` "
        "WHERE filename = 'yellow_tripdata_2021-07.csv'"
    )
    assert sorted(bytes(row[0]) for row in july_ids) == expected_ids(YELLOW, course_lines)
