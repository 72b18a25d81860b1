"""The TLC's Parquet months beside the course releases: real HTTP, Postgres, Dagster runs.

The months are written by ``tools/generate_tlc`` in the real files' schema and types of
their period (double codes, int32/int64 ids, an Arrow ``null`` column, out-of-month
pickups, duplicates) and served by the release mirror in the TLC's layout.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_platform.definitions import build_definitions
from taxi_platform.defs.resources import trip_partitions
from taxi_platform.defs.trips.checks import build_taxi_checks
from taxi_platform.defs.trips.postgres import etl_assets
from taxi_platform.defs.trips.raw import build_raw_asset
from taxi_platform.defs.trips.sensors import release_sensor_start
from taxi_platform.lib.asset_keys import PARTITION_ROW_COUNT
from taxi_platform.lib.catalog import GREEN, YELLOW, TaxiType
from taxi_platform.lib.months import partition_key
from taxi_platform.lib.sql import postgres as pg_sql
from taxi_platform.lib.tlc_parquet import convert_file
from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource
from taxi_platform.resources.check_thresholds import CheckThresholds
from taxi_platform.tools.generate import write_month, write_zone_lookup
from taxi_platform.tools.generate_tlc import tlc_path, tlc_schema, write_tlc_month
from taxi_platform.tools.mirror import ReleaseMirror
from taxi_platform_tests.support.run_results import failure_message, metadata
from taxi_platform_tests.test_orchestration_checks import check_results, load_with_checks
from taxi_platform_tests.test_postgres_etl import ZOOMCAMP_ID

APRIL_2020, JULY_2021, AUGUST_2021 = date(2020, 4, 1), date(2021, 7, 1), date(2021, 8, 1)
MARCH_2023, FEBRUARY_2025 = date(2023, 3, 1), date(2025, 2, 1)
taxi_assets = etl_assets()


@pytest.fixture
def mirror(mirror_folder: Path):
    with ReleaseMirror(mirror_folder) as server:
        yield server


def source(mirror: ReleaseMirror, sources: str = "course,tlc") -> TripFileSource:
    return TripFileSource(
        base_url=mirror.base_url,
        tlc_url=f"{mirror.base_url}/trip-data",
        sources=sources,
        max_attempts=1,
    )


def resources_for(mirror, database_url: str, tmp_path: Path, sources: str = "course,tlc"):
    return {
        "trip_source": source(mirror, sources),
        "landing": LandingArea(root=str(tmp_path / "landing")),
        "postgres": PostgresResource(url=database_url),
    }


def load(taxi: TaxiType, month: date, resources: dict) -> dg.ExecuteInProcessResult:
    assets = [asset for asset in taxi_assets if f"{taxi.name}_tripdata" in asset.key.path[-1]]
    return dg.materialize(
        assets, partition_key=partition_key(month), resources=resources, raise_on_error=False
    )


def rows_of(
    database_url: str, taxi: TaxiType, columns: str = "unique_row_id", rest: str = ""
) -> list[tuple]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(f"select {columns} from {taxi.table} {rest}").fetchall()


def reset(database_url: str, taxi: TaxiType) -> None:
    with psycopg.connect(database_url) as connection:
        connection.execute(f"drop table {taxi.table}")
        connection.execute(f"delete from {pg_sql.LEDGER_SCHEMA}.loaded_files")


@pytest.mark.parametrize("taxi", [GREEN, YELLOW], ids=lambda taxi: taxi.name)
def test_a_tlc_month_gets_the_ids_of_the_same_trips_from_the_course_file(
    taxi: TaxiType, mirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    """Same trips from both sources (same seed): the same ids, row for row, and a re-run
    of the TLC month inserts nothing."""
    write_month(taxi, APRIL_2020, 2000, mirror_folder, seed=5)
    write_tlc_month(taxi, APRIL_2020, 2000, mirror_folder, seed=5)
    course = load(taxi, APRIL_2020, resources_for(mirror, database_url, tmp_path, "course"))
    assert course.success
    course_ids = Counter(rows_of(database_url, taxi))
    reset(database_url, taxi)

    resources = resources_for(mirror, database_url, tmp_path, "tlc")
    tlc = load(taxi, APRIL_2020, resources)
    again = load(taxi, APRIL_2020, resources)

    assert tlc.success, failure_message(tlc)
    raw = metadata(tlc, f"raw/{taxi.table}_csv")
    assert raw["source"] == "tlc"
    assert raw["url"].endswith(f"/trip-data/{taxi.parquet_name(APRIL_2020)}")
    assert raw[PARTITION_ROW_COUNT] == 2000
    assert Counter(rows_of(database_url, taxi)) == course_ids
    assert sum(course_ids.values()) == 2000
    assert metadata(again, f"postgres/{taxi.table}")["rows_inserted"] == 0


def test_conversion_prints_values_as_the_course_files(mirror_folder: Path, tmp_path: Path):
    """Codes stored as doubles print without ``.0``, timestamps without fractions, NULL as
    an empty field; doubles read back as the course file's values."""
    course_gz = write_month(GREEN, APRIL_2020, 500, mirror_folder, seed=3)
    parquet = write_tlc_month(GREEN, APRIL_2020, 500, mirror_folder, seed=3)
    assert pq.read_schema(parquet).field("RatecodeID").type == pa.float64()
    assert pa.types.is_null(pq.read_schema(parquet).field("ehail_fee").type)
    converted = tmp_path / "converted.csv"

    rows = convert_file(GREEN, parquet, converted, "green 2020-04")

    with gzip.open(course_gz, "rt", newline="") as course_file:
        course_rows = list(csv.reader(course_file))
    tlc_rows = list(csv.reader(io.StringIO(converted.read_text())))
    assert rows == 500 == len(tlc_rows) - 1
    assert tuple(tlc_rows[0]) == GREEN.full_header
    for course_row, tlc_row in zip(course_rows[1:], tlc_rows[1:], strict=True):
        assert tlc_row[-1] == ""  # cbd_congestion_fee: not in a 2020 file
        for name, course_value, tlc_value in zip(
            GREEN.header, course_row, tlc_row[:-1], strict=True
        ):
            if GREEN.column(name).kind == "double" and course_value:
                assert float(tlc_value) == float(course_value), name
            else:
                assert tlc_value == course_value, name


def test_course_and_tlc_months_share_one_table_with_the_drift_columns(
    mirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    """Defaults: 2021-07 from the course releases, later months from the TLC; a table
    created before the drift columns existed gains them, NULL for the older months."""
    with psycopg.connect(database_url) as connection:
        columns = ", ".join(f"{c.postgres_name} {c.postgres_type}" for c in YELLOW.columns)
        connection.execute(
            f"create table yellow_tripdata (unique_row_id text, filename text, {columns})"
        )
    write_month(YELLOW, JULY_2021, 300, mirror_folder, seed=1)
    write_tlc_month(YELLOW, AUGUST_2021, 300, mirror_folder, seed=1)
    write_tlc_month(YELLOW, FEBRUARY_2025, 300, mirror_folder, seed=1)
    resources = resources_for(mirror, database_url, tmp_path)

    results = [load(YELLOW, month, resources) for month in (JULY_2021, AUGUST_2021, FEBRUARY_2025)]

    assert all(result.success for result in results), [
        failure_message(r) for r in results if not r.success
    ]
    assert [metadata(r, "raw/yellow_tripdata_csv")["source"] for r in results] == [
        "course",
        "tlc",
        "tlc",
    ]
    summary = rows_of(
        database_url,
        YELLOW,
        "filename, count(*), count(airport_fee), count(cbd_congestion_fee), "
        "count(*) filter (where cbd_congestion_fee > 0)",
        "group by filename order by filename",
    )
    assert summary[0] == ("yellow_tripdata_2021-07.csv", 300, 0, 0, 0)
    assert summary[1][:4] == ("yellow_tripdata_2021-08.csv", 300, 300, 0)
    assert summary[2][:4] == ("yellow_tripdata_2025-02.csv", 300, 300, 300)
    assert summary[2][4] > 0


def test_airport_fee_is_read_under_its_2023_spelling(mirror_folder: Path, tmp_path: Path):
    parquet = write_tlc_month(YELLOW, MARCH_2023, 200, mirror_folder, seed=2)
    assert "Airport_fee" in pq.read_schema(parquet).names
    converted = tmp_path / "yellow.csv"

    convert_file(YELLOW, parquet, converted, "yellow 2023-03")

    rows = list(csv.DictReader(io.StringIO(converted.read_text())))
    assert {row["airport_fee"] for row in rows} <= {"0", "1.25"}
    assert any(row["airport_fee"] == "1.25" for row in rows)


# -- bad inputs ----------------------------------------------------------------------------


def _rewrite(parquet: Path, change) -> None:
    table = pq.read_table(parquet)
    pq.write_table(change(table), parquet)


def _truncate(parquet: Path) -> None:
    parquet.write_bytes(parquet.read_bytes()[: parquet.stat().st_size // 2])


def _drop_pickup_zone(parquet: Path) -> None:
    _rewrite(parquet, lambda table: table.drop_columns(["PULocationID"]))


def _bad_ratecode(parquet: Path) -> None:
    def change(table: pa.Table) -> pa.Table:
        index = table.schema.get_field_index("RatecodeID")
        values = [None if v is None else str(v) for v in table.column(index).to_pylist()]
        values[7] = "one"
        return table.set_column(index, "RatecodeID", pa.array(values))

    _rewrite(parquet, change)


def _unpublish(parquet: Path) -> None:
    parquet.unlink()


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (_truncate, ["not a complete Parquet file"]),
        (_drop_pickup_zone, ["required column 'PULocationID' is missing"]),
        (_bad_ratecode, ["column RatecodeID", "'one' is not an integer code"]),
        (_unpublish, ["answered 404", "tlc source", "the TLC ("]),
    ],
    ids=["truncated", "missing-column", "uncastable", "404"],
)
def test_a_bad_tlc_file_fails_clearly_and_changes_nothing(
    spoil, expected, mirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    resources = resources_for(mirror, database_url, tmp_path, "tlc")
    write_tlc_month(GREEN, date(2020, 3, 1), 200, mirror_folder, seed=1)
    assert load(GREEN, date(2020, 3, 1), resources).success
    before = Counter(rows_of(database_url, GREEN))
    spoil(write_tlc_month(GREEN, APRIL_2020, 200, mirror_folder, seed=2))

    result = load(GREEN, APRIL_2020, resources)

    assert not result.success
    message = failure_message(result)
    for words in [GREEN.parquet_name(APRIL_2020), "partition green 2020-04-01", *expected]:
        assert words in message, message
    landed = tmp_path / "landing" / "green"
    assert not (landed / GREEN.csv_name(APRIL_2020)).exists()
    assert [path.name for path in landed.iterdir() if "2020-04" in path.name] == []
    assert Counter(rows_of(database_url, GREEN)) == before


def test_course_only_says_which_months_the_course_releases_hold(
    mirror, database_url: str, tmp_path: Path
) -> None:
    result = load(GREEN, AUGUST_2021, resources_for(mirror, database_url, tmp_path, "course"))

    message = failure_message(result)
    assert "course source" in message and "2019-01 to 2021-07" in message, message
    assert "green/green_tripdata_2021-08.csv.gz" in message


def test_the_mirror_serves_both_layouts(mirror, mirror_folder: Path) -> None:
    write_month(GREEN, JULY_2021, 10, mirror_folder)
    write_tlc_month(GREEN, AUGUST_2021, 10, mirror_folder)
    trip_source = source(mirror)

    assert trip_source.url_for(GREEN, JULY_2021) == mirror.url_for(GREEN.release_path(JULY_2021))
    assert trip_source.url_for(GREEN, AUGUST_2021) == mirror.url_for(tlc_path(GREEN, AUGUST_2021))
    assert trip_source.is_published(trip_source.url_for(GREEN, JULY_2021))
    assert trip_source.is_published(trip_source.url_for(GREEN, AUGUST_2021))
    assert not trip_source.is_published(trip_source.url_for(GREEN, date(2021, 9, 1)))


# -- schedules and the release sensor ------------------------------------------------------


def evaluate_schedule(name: str, when: datetime, trip_source: TripFileSource):
    schedule = build_definitions().resolve_schedule_def(name)
    with dg.build_schedule_context(
        scheduled_execution_time=when, resources={"trip_source": trip_source}
    ) as context:
        return schedule.evaluate_tick(context)


def test_a_tick_whose_month_is_not_published_skips_naming_the_url(
    mirror, mirror_folder: Path
) -> None:
    tick = datetime(2021, 10, 1, 9, tzinfo=ZoneInfo("America/New_York"))
    trip_source = source(mirror)

    skipped = evaluate_schedule("green_postgres_monthly", tick, trip_source)
    write_tlc_month(GREEN, date(2021, 9, 1), 20, mirror_folder)
    published = evaluate_schedule("green_postgres_monthly", tick, trip_source)

    assert skipped.run_requests == []
    url = f"{mirror.base_url}/trip-data/green_tripdata_2021-09.parquet"
    assert url in skipped.skip_message
    assert "not published yet by the tlc source" in skipped.skip_message
    assert "the TLC (" in skipped.skip_message
    assert [r.partition_key for r in published.run_requests] == ["2021-09-01"]


def evaluate_sensor(cursor: str | None, trip_source: TripFileSource):
    sensor = build_definitions().resolve_sensor_def("new_release_sensor")
    with dg.build_sensor_context(cursor=cursor, resources={"trip_source": trip_source}) as context:
        return sensor.evaluate_tick(context)


def test_the_release_sensor_picks_a_new_tlc_month_up(mirror, mirror_folder: Path) -> None:
    start = json.dumps({"green": "2024-01", "yellow": "2024-01"})
    trip_source = source(mirror)

    before = evaluate_sensor(start, trip_source)
    write_tlc_month(YELLOW, date(2024, 2, 1), 20, mirror_folder)
    published = evaluate_sensor(before.cursor, trip_source)
    after = evaluate_sensor(published.cursor, trip_source)

    assert before.run_requests == []
    assert [(r.job_name, r.partition_key) for r in published.run_requests] == [
        ("yellow_postgres", "2024-02-01")
    ]
    assert json.loads(published.cursor) == {"green": "2024-01", "yellow": "2024-02"}
    assert after.run_requests == []


def test_the_release_sensor_starts_where_the_sources_end(mirror) -> None:
    now = date(2026, 12, 1)

    assert release_sensor_start(source(mirror, "course"), now) == JULY_2021
    assert release_sensor_start(source(mirror, "course,tlc"), now) == date(2026, 8, 1)
    assert release_sensor_start(source(mirror, "tlc"), now) == date(2026, 8, 1)


def test_the_cli_loads_a_tlc_month_with_course_ids_and_a_rerun_inserts_nothing(
    mirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    """The issue's check, as a user types it: generate a TLC month, then
    ``TAXI_SOURCES=tlc TAXI_TLC_URL=... dagster asset materialize ... --partition 2020-04-01``."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXI_", "DAGSTER_HOME"))}
    env.update(
        TAXI_SOURCES="tlc",
        TAXI_TLC_URL=mirror.tlc_url,
        TAXI_SOURCE_URL=mirror.base_url,
        TAXI_DATABASE_URL=database_url,
        TAXI_HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )
    (tmp_path / "dagster_home").mkdir()
    generate = [str(bin_dir / "taxi-platform"), "generate", "--layout", "tlc", "--taxi", "green"]
    generate += [
        "--from",
        "2020-04",
        "--to",
        "2020-04",
        "--rows",
        "700",
        "--out",
        str(mirror_folder),
    ]
    subprocess.run(generate, env=env, check=True, capture_output=True, timeout=120)
    materialize = [
        str(bin_dir / "dagster"),
        "asset",
        "materialize",
        "-m",
        "taxi_platform.definitions",
    ]
    materialize += ["--select", "*postgres/green_tripdata", "--partition", "2020-04-01"]

    counts = []
    for _ in range(2):
        done = subprocess.run(materialize, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        counts.append(rows_of(database_url, GREEN, "count(*)")[0][0])

    assert (mirror_folder / tlc_path(GREEN, APRIL_2020)).exists()
    assert counts == [700, 700]
    zoomcamp_id = ZOOMCAMP_ID.format(pickup=GREEN.pickup_column, dropoff=GREEN.dropoff_column)
    wrong = rows_of(database_url, GREEN, "count(*)", f"where unique_row_id <> {zoomcamp_id}")
    assert wrong == [(0,)]
    with psycopg.connect(database_url) as connection:
        ledger = connection.execute(
            "select rows_staged, rows_inserted from taxi_platform.loaded_files"
        ).fetchall()
    assert ledger == [(700, 700)]


@pytest.mark.parametrize("taxi", [GREEN, YELLOW], ids=lambda taxi: taxi.name)
def test_a_tlc_month_passes_the_checks(
    taxi: TaxiType, mirror, mirror_folder: Path, database_url: str, tmp_path: Path
) -> None:
    """The header check accepts the full layout; the landed file's rows are all staged."""
    write_zone_lookup(mirror_folder)
    write_tlc_month(taxi, FEBRUARY_2025, 500, mirror_folder, seed=8)
    resources = {
        **resources_for(mirror, database_url, tmp_path, "tlc"),
        "landing": LandingArea(root=str(tmp_path / "landing"), retention="keep"),
        "check_thresholds": CheckThresholds(),
    }

    checks = check_results(load_with_checks(taxi, FEBRUARY_2025, resources))

    assert checks["header_matches_catalogue"].passed
    assert checks["header_matches_catalogue"].metadata["columns"].value == len(taxi.full_header)
    assert checks["file_rows_equal_staged_rows"].passed
    assert checks["ids_not_null"].passed


@pytest.mark.parametrize(
    ("sources", "july", "august", "last"),
    [
        ("course,tlc", "course", "tlc", None),
        ("tlc", "tlc", "tlc", None),
        ("course", "course", "course", JULY_2021),
        (" tlc , course ", "course", "tlc", None),
    ],
)
def test_the_sources_setting_picks_the_source_of_each_month(sources, july, august, last):
    trip_source = TripFileSource(base_url="http://c", tlc_url="http://t/trip-data", sources=sources)

    assert trip_source.source_for(JULY_2021) == july
    assert trip_source.source_for(AUGUST_2021) == august
    assert trip_source.last_served_month() == last
    assert not trip_source.is_after_last_month(JULY_2021)
    assert trip_source.is_after_last_month(AUGUST_2021) == (last is not None)
    assert trip_source.url_for(YELLOW, AUGUST_2021) == (
        "http://t/trip-data/yellow_tripdata_2021-08.parquet"
        if august == "tlc"
        else "http://c/yellow/yellow_tripdata_2021-08.csv.gz"
    )


def test_an_unknown_sources_setting_is_refused_when_the_definitions_load(monkeypatch) -> None:
    monkeypatch.setenv("TAXI_SOURCES", "github")

    with pytest.raises(Exception) as raised:
        build_definitions()

    error, messages = raised.value, []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("TAXI_SOURCES='github': expected course,tlc, tlc or course" in m for m in messages)


def test_generated_tlc_months_have_the_real_files_columns(real_data: Path) -> None:
    """Every green and yellow file the TLC served 2019-01..2024-05, by name and order."""
    listing = list(csv.DictReader((real_data / "tlc_monthly_files.csv").open()))
    assert len(listing) > 100
    for row in listing:
        taxi_name, _, month_text = row["file_name"].removesuffix(".parquet").split("_")
        taxi = GREEN if taxi_name == "green" else YELLOW
        month = date(int(month_text[:4]), int(month_text[5:7]), 1)
        assert tlc_schema(taxi, month).names == row["column_names"].split(","), row["file_name"]


# What a code location loaded with TAXI_SOURCES=course shows: every partitioned asset's and
# job's calendar, and the tick of 1 September 2021 (the source URL is unreachable, so a HEAD
# would not skip: the run would be requested).
CALENDAR_PROBE = """
import json
from datetime import datetime, timezone
import dagster as dg
from taxi_platform.definitions import build_definitions
from taxi_platform.resources import TripFileSource

defs = build_definitions()
calendars = {}
graph = defs.resolve_asset_graph()
for key in graph.get_all_asset_keys():
    partitions = graph.get(key).partitions_def
    if partitions is not None:
        keys = partitions.get_partition_keys()
        calendars[key.to_user_string()] = [len(keys), keys[0], keys[-1]]
for job in defs.resolve_all_job_defs():
    if job.partitions_def is not None:
        keys = job.partitions_def.get_partition_keys()
        calendars["job:" + job.name] = [len(keys), keys[0], keys[-1]]
unreachable = TripFileSource(base_url="http://127.0.0.1:9", tlc_url="http://127.0.0.1:9",
                             sources="course", max_attempts=1)
schedule = defs.resolve_schedule_def("green_postgres_monthly")
tick = datetime(2021, 9, 1, 14, tzinfo=timezone.utc)
with dg.build_schedule_context(scheduled_execution_time=tick,
                               resources={"trip_source": unreachable}) as context:
    result = schedule.evaluate_tick(context)
print(json.dumps({"calendars": calendars, "skip": result.skip_message,
                  "requests": len(result.run_requests or [])}))
"""


def test_with_the_course_releases_alone_the_calendar_ends_in_july_2021() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXI_")}
    done = subprocess.run(
        [sys.executable, "-c", CALENDAR_PROBE],
        env={**env, "TAXI_SOURCES": "course"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])

    calendars = probe["calendars"]
    assert "raw/green_tripdata_csv" in calendars and "job:yellow_gcp" in calendars
    assert {tuple(calendar) for calendar in calendars.values()} == {
        (31, "2019-01-01", "2021-07-01")
    }
    assert probe["requests"] == 0
    assert "after the last month of the sources in use" in probe["skip"], probe["skip"]
    assert "2019-01 to 2021-07" in probe["skip"] and "TAXI_SOURCES=course,tlc" in probe["skip"]


def test_by_default_the_calendar_runs_to_the_last_complete_month() -> None:
    today = datetime.now(ZoneInfo("UTC")).date()
    last_complete = partition_key(date(today.year, today.month, 1) - timedelta(days=1))
    graph = build_definitions().resolve_asset_graph()

    last_keys = {
        graph.get(key).partitions_def.get_last_partition_key()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }

    assert last_keys == {last_complete}


def test_the_header_check_of_a_released_tlc_month_reads_the_recorded_header(
    mirror, mirror_folder: Path, tmp_path: Path
) -> None:
    """Checked again once its landed file is gone, a TLC month's header comes from its raw
    materialization: its source is Parquet, with no header line to read back."""
    write_tlc_month(GREEN, FEBRUARY_2025, 50, mirror_folder, seed=4)
    landing = LandingArea(root=str(tmp_path / "landing"), retention="keep")
    resources = {"trip_source": source(mirror, "tlc"), "landing": landing}
    raw, header_check = build_raw_asset(GREEN), build_taxi_checks(GREEN)[0]
    instance = dg.DagsterInstance.ephemeral()
    key = partition_key(FEBRUARY_2025)

    landed = dg.materialize(
        [raw, header_check], partition_key=key, resources=resources, instance=instance
    )
    landing.csv_path(GREEN, FEBRUARY_2025).unlink()
    # Re-executing the check's step alone, as the UI's "re-execute selected step" does.
    job = dg.define_asset_job("raw_month", partitions_def=trip_partitions())
    defs = dg.Definitions(
        assets=[raw], asset_checks=[header_check], jobs=[job], resources=resources
    )
    rechecked = defs.resolve_job_def("raw_month").execute_in_process(
        partition_key=key,
        instance=instance,
        op_selection=["raw__green_tripdata_csv_header_matches_catalogue"],
    )

    first, again = (
        check_results(result)["header_matches_catalogue"] for result in (landed, rechecked)
    )
    assert first.passed and again.passed
    assert again.metadata["read_from"].value == f"the raw materialization of {key}"
    assert again.metadata["columns"].value == len(GREEN.full_header)
