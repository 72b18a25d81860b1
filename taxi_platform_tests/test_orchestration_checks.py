"""Monthly asset checks and the monthly summary, in the same runs as the loads they follow."""

import gzip
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from taxi_platform.defs.reports.assets import build_report_assets, taxi_zone_lookup
from taxi_platform.defs.trips.checks import build_taxi_checks
from taxi_platform.defs.trips.postgres import etl_assets
from taxi_platform.lib.catalog import GREEN, YELLOW, TaxiType
from taxi_platform.lib.months import partition_key
from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource
from taxi_platform.resources.check_thresholds import CheckThresholds
from taxi_platform.tools.generate import write_month, write_zone_lookup
from taxi_platform.tools.mirror import ReleaseMirror

taxi_assets = etl_assets()

MARCH = date(2019, 3, 1)
ROWS = 1500


@pytest.fixture
def mirror_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mirror"
    write_zone_lookup(folder)
    return folder


@pytest.fixture
def resources(database_url: str, mirror_folder: Path, tmp_path: Path):
    with ReleaseMirror(mirror_folder) as mirror:
        yield {
            "trip_source": TripFileSource(base_url=mirror.base_url, backoff_seconds=0.01),
            # keep: retention needs a repository (dg.materialize has none); not what is tested here.
            "landing": LandingArea(root=str(tmp_path / "landing"), retention="keep"),
            "postgres": PostgresResource(url=database_url),
            "check_thresholds": CheckThresholds(),
        }


def load_with_checks(taxi: TaxiType, month: date, resources: dict) -> dg.ExecuteInProcessResult:
    assets = [a for a in taxi_assets if a.key.path[-1].startswith(f"{taxi.name}_")]
    return dg.materialize(
        [*assets, *build_taxi_checks(taxi), *build_report_assets(taxi), taxi_zone_lookup],
        selection=dg.AssetSelection.assets(*(a.key for a in assets)),
        partition_key=partition_key(month),
        resources=resources,
        raise_on_error=False,
    )


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }


@pytest.mark.parametrize("taxi", [GREEN, YELLOW], ids=lambda taxi: taxi.name)
def test_a_clean_month_passes_every_check_in_its_own_run(
    taxi: TaxiType, mirror_folder: Path, resources: dict
) -> None:
    write_month(taxi, MARCH, ROWS, mirror_folder, seed=3)

    result = load_with_checks(taxi, MARCH, resources)

    assert result.success
    checks = check_results(result)
    assert set(checks) == {
        "header_matches_catalogue",
        "file_rows_equal_staged_rows",
        "ids_not_null",
        "no_id_inserted_twice",
        "pickups_outside_month",
    }
    assert all(check.passed for check in checks.values()), {
        name: check.metadata for name, check in checks.items() if not check.passed
    }
    assert all(check.partition == partition_key(MARCH) for check in checks.values())
    rows = checks["file_rows_equal_staged_rows"].metadata
    assert rows["file_rows"].value == rows["rows_staged"].value == ROWS
    outside = checks["pickups_outside_month"].metadata
    # The generator puts a few pickups outside the month, as real files have.
    assert outside["rows_outside_month"].value > 0
    assert outside["rows"].value == ROWS


def test_a_file_whose_lines_are_not_its_rows_fails_the_row_check(
    mirror_folder: Path, resources: dict
) -> None:
    gz_path = write_month(GREEN, MARCH, ROWS, mirror_folder, seed=4)
    lines = gzip.decompress(gz_path.read_bytes()).decode().split("\n")
    fields = lines[10].split(",")
    # A quoted store_and_fwd_flag spanning two lines: one CSV record, two lines.
    fields[GREEN.header.index("store_and_fwd_flag")] = '"N\nN"'
    lines[10] = ",".join(fields)
    gz_path.write_bytes(gzip.compress("\n".join(lines).encode(), mtime=0))

    result = load_with_checks(GREEN, MARCH, resources)

    checks = check_results(result)
    row_check = checks["file_rows_equal_staged_rows"]
    assert not row_check.passed
    assert row_check.metadata["file_rows"].value == ROWS + 1
    assert row_check.metadata["rows_staged"].value == ROWS
    assert row_check.severity == dg.AssetCheckSeverity.ERROR


def test_a_threshold_below_the_files_share_warns(mirror_folder: Path, resources: dict) -> None:
    write_month(GREEN, MARCH, ROWS, mirror_folder, seed=5)

    result = load_with_checks(
        GREEN, MARCH, {**resources, "check_thresholds": CheckThresholds(outside_month_warn_share=0)}
    )

    outside = check_results(result)["pickups_outside_month"]
    assert result.success  # a warning, not a failed run
    assert not outside.passed
    assert outside.severity == dg.AssetCheckSeverity.WARN


def test_an_id_held_under_two_files_fails_the_merge_check(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, MARCH, ROWS, mirror_folder, seed=6)
    load_with_checks(GREEN, MARCH, resources)
    with psycopg.connect(database_url) as connection:
        # What a merge blind to the table would do: insert a row of March again as April's.
        connection.execute(
            "insert into green_tripdata select unique_row_id, 'green_tripdata_2019-04.csv', "
            "vendorid, lpep_pickup_datetime, lpep_dropoff_datetime, store_and_fwd_flag, "
            "ratecodeid, pulocationid, dolocationid, passenger_count, trip_distance, "
            "fare_amount, extra, mta_tax, tip_amount, tolls_amount, ehail_fee, "
            "improvement_surcharge, total_amount, payment_type, trip_type, "
            "congestion_surcharge from green_tripdata limit 2"
        )

    rerun = load_with_checks(GREEN, MARCH, resources)

    duplicates = check_results(rerun)["no_id_inserted_twice"]
    assert not duplicates.passed
    assert duplicates.metadata["ids_also_under_other_files"].value == 2


def test_summary_counts_every_trip_of_the_month_by_day_and_borough(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, MARCH, ROWS, mirror_folder, seed=7)
    assert load_with_checks(GREEN, MARCH, resources).success
    summary_assets = build_report_assets(GREEN)

    result = dg.materialize(
        [*summary_assets, taxi_zone_lookup, *taxi_assets],
        selection=dg.AssetSelection.assets(summary_assets[0].key),
        partition_key=partition_key(MARCH),
        resources=resources,
    )

    with psycopg.connect(database_url) as connection:
        expected_trips, expected_revenue = connection.execute(
            "select count(*), round(sum(total_amount)::numeric, 2) from green_tripdata "
            "where lpep_pickup_datetime >= '2019-03-01' and lpep_pickup_datetime < '2019-04-01'"
        ).fetchone()
        trips, revenue, days, boroughs = connection.execute(
            "select sum(trips), sum(revenue), count(distinct pickup_date), "
            "count(distinct pickup_borough) from reports.green_monthly_summary "
            "where month = '2019-03-01'"
        ).fetchone()
        zones = connection.execute("select count(*) from taxi_platform.zones").fetchone()[0]
    metadata = materialization_of(result, summary_assets[0].key).metadata
    # The zones were loaded on first use, and that is recorded as the lookup's own
    # materialization.
    assert (
        materialization_of(result, taxi_zone_lookup.key).metadata["dagster/row_count"].value == 265
    )
    assert trips == expected_trips == metadata["trips"].value
    assert expected_trips == ROWS - metadata_outside(result, database_url)
    assert float(revenue) == pytest.approx(float(expected_revenue), abs=0.05)
    assert days == 31
    assert boroughs >= 3
    assert zones == 265
    assert "| day | pickup borough |" in metadata["preview"].value

    # Rebuilding the month replaces it (delete + insert), never adds to it.
    rebuilt = dg.materialize(
        [*summary_assets, taxi_zone_lookup, *taxi_assets],
        selection=dg.AssetSelection.assets(summary_assets[0].key),
        partition_key=partition_key(MARCH),
        resources=resources,
    )
    with psycopg.connect(database_url) as connection:
        again = connection.execute(
            "select sum(trips) from reports.green_monthly_summary where month = '2019-03-01'"
        ).fetchone()[0]
    assert again == trips
    assert [event.asset_key for event in rebuilt.get_asset_materialization_events()] == [
        summary_assets[0].key
    ]


def materialization_of(
    result: dg.ExecuteInProcessResult, key: dg.AssetKey
) -> dg.AssetMaterialization:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return event.materialization


def metadata_outside(result: dg.ExecuteInProcessResult, database_url: str) -> int:
    with psycopg.connect(database_url) as connection:
        return connection.execute(
            "select count(*) from green_tripdata where lpep_pickup_datetime < '2019-03-01' "
            "or lpep_pickup_datetime >= '2019-04-01'"
        ).fetchone()[0]
