"""The Postgres ETL path, end to end: real HTTP, real Postgres, real Dagster runs."""

import csv
import gzip
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from taxi_platform.defs.trips.postgres import etl_assets
from taxi_platform.lib.asset_keys import PARTITION_ROW_COUNT
from taxi_platform.lib.catalog import GREEN, YELLOW, TaxiType
from taxi_platform.lib.months import partition_key
from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource
from taxi_platform.tools.generate import write_month
from taxi_platform_tests.support.http_faults import FaultyMirror
from taxi_platform_tests.support.run_results import failure_message, metadata

taxi_assets = etl_assets()

JANUARY, FEBRUARY, MARCH = date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)

# The zoomcamp flow's UPDATE expression, written out independently of our SQL builder.
ZOOMCAMP_ID = """md5(coalesce(cast(vendorid as text), '') || coalesce(cast({pickup} as text), '')
    || coalesce(cast({dropoff} as text), '') || coalesce(pulocationid, '')
    || coalesce(dolocationid, '') || coalesce(cast(fare_amount as text), '')
    || coalesce(cast(trip_distance as text), ''))"""


@pytest.fixture
def mirror(mirror_folder: Path):
    with FaultyMirror(mirror_folder) as server:
        yield server


@pytest.fixture
def resources(database_url: str, mirror: FaultyMirror, tmp_path: Path) -> dict:
    return {
        "trip_source": TripFileSource(
            base_url=mirror.base_url,
            tlc_url=f"{mirror.base_url}/trip-data",
            backoff_seconds=0.01,
            max_attempts=3,
        ),
        "landing": LandingArea(root=str(tmp_path / "landing")),
        "postgres": PostgresResource(url=database_url),
    }


def assets_of(taxi: TaxiType) -> list[dg.AssetsDefinition]:
    return [asset for asset in taxi_assets if f"{taxi.name}_tripdata" in asset.key.path[-1]]


def load(taxi: TaxiType, month: date, resources: dict, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets_of(taxi), partition_key=partition_key(month), resources=resources, **kwargs
    )


def merge_alone(taxi: TaxiType, month: date, resources: dict) -> dg.ExecuteInProcessResult:
    """The final asset alone, as the UI's "materialize selected" runs it: merges what is
    staged, without landing or staging the month again."""
    return dg.materialize(
        assets_of(taxi),
        selection=[f"postgres/{taxi.table}"],
        partition_key=partition_key(month),
        resources=resources,
    )


def final_count(database_url: str, taxi: TaxiType) -> int:
    with psycopg.connect(database_url) as connection:
        exists = connection.execute(
            "select to_regclass(%s) is not null", (f"public.{taxi.table}",)
        ).fetchone()[0]
        if not exists:
            return 0
        return connection.execute(f"select count(*) from {taxi.table}").fetchone()[0]


def csv_rows(gz_path: Path) -> list[list[str]]:
    with gzip.open(gz_path, "rt", newline="") as file:
        return list(csv.reader(file))[1:]


def publish(mirror_folder: Path, taxi: TaxiType, month: date, content: bytes) -> Path:
    path = mirror_folder / taxi.release_path(month)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content, mtime=0))
    return path


@pytest.mark.parametrize("taxi", [GREEN, YELLOW], ids=lambda taxi: taxi.name)
def test_a_month_loads_every_row_with_zoomcamp_ids(
    taxi: TaxiType, mirror_folder: Path, resources: dict, database_url: str
) -> None:
    gz_path = write_month(taxi, FEBRUARY, 3000, mirror_folder, seed=7)
    expected = csv_rows(gz_path)

    result = load(taxi, FEBRUARY, resources)

    assert metadata(result, f"raw/{taxi.table}_csv")[PARTITION_ROW_COUNT] == len(expected)
    staged = metadata(result, f"postgres/{taxi.table}_staging")
    assert staged[PARTITION_ROW_COUNT] == len(expected)
    assert metadata(result, f"postgres/{taxi.table}")["rows_inserted"] == len(expected)
    with psycopg.connect(database_url) as connection:
        count, filenames, wrong_ids = connection.execute(
            f"select count(*), array_agg(distinct filename), "
            f"count(*) filter (where unique_row_id <> "
            f"{ZOOMCAMP_ID.format(pickup=taxi.pickup_column, dropoff=taxi.dropoff_column)}) "
            f"from {taxi.table}"
        ).fetchone()
        columns = [
            row[0]
            for row in connection.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'public' and table_name = %s order by ordinal_position",
                (taxi.table,),
            )
        ]
        fares = connection.execute(f"select sum(fare_amount) from {taxi.table}").fetchone()[0]
    assert count == len(expected)
    assert filenames == [taxi.csv_name(FEBRUARY)]
    assert wrong_ids == 0
    assert columns == ["unique_row_id", "filename", *(c.name.lower() for c in taxi.all_columns)]
    fare_index = taxi.header.index("fare_amount")
    assert fares == pytest.approx(sum(float(row[fare_index] or 0) for row in expected))


def test_reference_row_gets_the_zoomcamp_id(
    real_data: Path, mirror_folder: Path, resources: dict, database_url: str
) -> None:
    content = (real_data / "green_tripdata_2019-01.head.csv").read_bytes()
    publish(mirror_folder, GREEN, JANUARY, content)

    load(GREEN, JANUARY, resources)

    with psycopg.connect(database_url) as connection:
        ids = connection.execute(
            "select unique_row_id from green_tripdata where lpep_pickup_datetime = "
            "'2019-01-01 00:10:16' and pulocationid = '97' and dolocationid = '49'"
        ).fetchall()
    assert ids == [("881d09102600f7e0cc333c8834a3b223",)]
    assert final_count(database_url, GREEN) == content.count(b"\n") - 1


def test_real_samples_load_with_their_quirks(
    real_data: Path, mirror_folder: Path, resources: dict, database_url: str
) -> None:
    # No final newline, as the sample was published.
    content = (real_data / "yellow_tripdata_2020-07.sample.csv").read_bytes()
    publish(mirror_folder, YELLOW, date(2020, 7, 1), content)

    result = load(YELLOW, date(2020, 7, 1), resources)

    rows = len(content.rstrip(b"\n").split(b"\n")) - 1
    assert metadata(result, "postgres/yellow_tripdata")["rows_inserted"] == rows
    assert final_count(database_url, YELLOW) == rows


def test_rerun_of_a_month_inserts_nothing(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, JANUARY, 2000, mirror_folder, seed=1)
    first = load(GREEN, JANUARY, resources)
    second = load(GREEN, JANUARY, resources)

    assert metadata(first, "postgres/green_tripdata")["rows_inserted"] == 2000
    rerun = metadata(second, "postgres/green_tripdata")
    assert rerun["rows_inserted"] == 0
    assert rerun["rows_already_present"] == 2000
    assert final_count(database_url, GREEN) == 2000


def test_forced_reload_of_a_loaded_month_inserts_nothing(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, JANUARY, 1500, mirror_folder, seed=2)
    load(GREEN, JANUARY, resources)
    forced = load(
        GREEN,
        JANUARY,
        resources,
        run_config={
            "ops": {"postgres__green_tripdata_staging": {"config": {"force_reload": True}}}
        },
    )

    assert metadata(forced, "postgres/green_tripdata_staging")["already_loaded"] is False
    assert metadata(forced, "postgres/green_tripdata")["rows_inserted"] == 0
    assert final_count(database_url, GREEN) == 1500


def test_next_month_adds_only_its_new_rows(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, JANUARY, 1000, mirror_folder, seed=3)
    write_month(GREEN, FEBRUARY, 1200, mirror_folder, seed=4)
    load(GREEN, JANUARY, resources)
    february = load(GREEN, FEBRUARY, resources)

    inserted = metadata(february, "postgres/green_tripdata")["rows_inserted"]
    assert inserted == 1200
    assert final_count(database_url, GREEN) == 2200


def test_months_and_taxi_types_loaded_concurrently_equal_a_sequential_load(
    mirror_folder: Path, resources: dict, database_url: str, postgres_server, tmp_path: Path
) -> None:
    plan = [(GREEN, JANUARY), (GREEN, FEBRUARY), (GREEN, MARCH), (YELLOW, JANUARY)]
    for index, (taxi, month) in enumerate(plan):
        write_month(taxi, month, 2500, mirror_folder, seed=10 + index)

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        results = list(pool.map(lambda job: load(job[0], job[1], resources), plan))
    assert all(result.success for result in results)

    sequential_db = f"seq_{abs(hash(database_url)) % 10**8}"
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'create database "{sequential_db}"')
    try:
        sequential = {
            **resources,
            "postgres": PostgresResource(url=postgres_server.url(sequential_db)),
            "landing": LandingArea(root=str(tmp_path / "landing_sequential")),
        }
        for taxi, month in plan:
            load(taxi, month, sequential)
        for taxi in (GREEN, YELLOW):
            query = f"select unique_row_id, filename from {taxi.table} order by 1, 2"
            with psycopg.connect(database_url) as concurrent_connection:
                concurrent_rows = concurrent_connection.execute(query).fetchall()
            with psycopg.connect(postgres_server.url(sequential_db)) as sequential_connection:
                sequential_rows = sequential_connection.execute(query).fetchall()
            assert concurrent_rows == sequential_rows
            assert len(concurrent_rows) == 2500 * sum(1 for t, _ in plan if t is taxi)
    finally:
        with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{sequential_db}" with (force)')


def test_truncated_gzip_file_fails_with_a_clear_error(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    gz_path = write_month(GREEN, JANUARY, 3000, mirror_folder, seed=8)
    gz_path.write_bytes(gz_path.read_bytes()[: gz_path.stat().st_size // 2])

    result = load(GREEN, JANUARY, resources, raise_on_error=False)

    message = failure_message(result)
    assert "green_tripdata_2019-01.csv (partition green 2019-01-01)" in message
    assert "gzip stream ends early" in message
    assert final_count(database_url, GREEN) == 0


def test_corrupt_gzip_file_fails_naming_the_file_and_lands_nothing(
    mirror_folder: Path, resources: dict, database_url: str, tmp_path: Path
) -> None:
    gz_path = write_month(GREEN, JANUARY, 3000, mirror_folder, seed=8)
    compressed = bytearray(gz_path.read_bytes())
    middle = len(compressed) // 2
    compressed[middle : middle + 64] = bytes(64)
    gz_path.write_bytes(bytes(compressed))

    result = load(GREEN, JANUARY, resources, raise_on_error=False)

    message = failure_message(result)
    assert "green_tripdata_2019-01.csv (partition green 2019-01-01)" in message
    assert "not a valid gzip file" in message
    assert final_count(database_url, GREEN) == 0
    assert not list((tmp_path / "landing").rglob("*.csv"))


def test_gzip_file_of_several_members_lands_all_of_them(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    whole = gzip.decompress(write_month(YELLOW, JANUARY, 2000, mirror_folder, seed=3).read_bytes())
    lines = whole.splitlines(keepends=True)
    first, second = b"".join(lines[:700]), b"".join(lines[700:])
    path = mirror_folder / YELLOW.release_path(JANUARY)
    path.write_bytes(gzip.compress(first, mtime=0) + gzip.compress(second, mtime=0))

    load(YELLOW, JANUARY, resources)

    assert final_count(database_url, YELLOW) == 2000


def test_file_cut_mid_line_fails_and_leaves_final_table_unchanged(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(YELLOW, JANUARY, 800, mirror_folder, seed=9)
    load(YELLOW, JANUARY, resources)
    whole = gzip.decompress((mirror_folder / YELLOW.release_path(JANUARY)).read_bytes())
    publish(mirror_folder, YELLOW, FEBRUARY, whole[: len(whole) - 40])

    result = load(YELLOW, FEBRUARY, resources, raise_on_error=False)

    message = failure_message(result)
    assert "yellow_tripdata_2019-02.csv" in message
    assert "cut off mid-line" in message
    assert final_count(database_url, YELLOW) == 800


def test_real_cut_off_file_is_refused(
    real_data: Path, mirror_folder: Path, resources: dict, database_url: str
) -> None:
    content = (real_data / "yellow_tripdata_2021-01.truncated.csv").read_bytes()
    publish(mirror_folder, YELLOW, date(2021, 1, 1), content)

    result = load(YELLOW, date(2021, 1, 1), resources, raise_on_error=False)

    assert "'1,2021-0'" in failure_message(result)
    assert final_count(database_url, YELLOW) == 0


def test_wrong_header_names_expected_and_found_columns(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    gz_path = write_month(GREEN, JANUARY, 100, mirror_folder, seed=1)
    content = gzip.decompress(gz_path.read_bytes()).replace(b"trip_type", b"trip_kind", 1)
    publish(mirror_folder, GREEN, JANUARY, content)

    result = load(GREEN, JANUARY, resources, raise_on_error=False)

    message = failure_message(result)
    assert "unexpected header" in message
    assert ",".join(GREEN.header) in message
    assert "trip_kind" in message and "missing: ['trip_type']" in message
    assert final_count(database_url, GREEN) == 0


def test_malformed_row_fails_naming_the_line_and_leaves_final_table_unchanged(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, JANUARY, 500, mirror_folder, seed=1)
    load(GREEN, JANUARY, resources)
    lines = gzip.decompress(write_month(GREEN, FEBRUARY, 500, mirror_folder, seed=2).read_bytes())
    rows = lines.split(b"\n")
    rows[300] = rows[300].replace(b"2019-02-", b"2019-13-", 1)
    publish(mirror_folder, GREEN, FEBRUARY, b"\n".join(rows))

    result = load(GREEN, FEBRUARY, resources, raise_on_error=False)

    message = failure_message(result)
    assert "green_tripdata_2019-02.csv (partition green 2019-02-01)" in message
    assert "line 301" in message
    assert final_count(database_url, GREEN) == 500


def test_unpublished_month_fails_at_once_saying_so(
    mirror: FaultyMirror, resources: dict, database_url: str
) -> None:
    result = load(GREEN, date(2021, 8, 1), resources, raise_on_error=False)

    message = failure_message(result)
    assert "green_tripdata_2021-08.parquet (partition green 2021-08-01)" in message
    assert "not published by the tlc source" in message and "404" in message
    requested = [path for _, path in mirror.requests if "2021-08" in path]
    assert len(requested) == 1, "a 404 is not retried"
    assert final_count(database_url, GREEN) == 0


def test_server_errors_are_retried_until_the_file_comes(
    mirror: FaultyMirror, mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, JANUARY, 700, mirror_folder, seed=3)
    path = "/" + GREEN.release_path(JANUARY)
    mirror.fail_next(path, status=500, times=2)

    result = load(GREEN, JANUARY, resources)

    assert result.success
    assert [p for _, p in mirror.requests].count(path) == 3
    assert final_count(database_url, GREEN) == 700


def test_persistent_server_errors_fail_with_the_status(
    mirror: FaultyMirror, mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, JANUARY, 100, mirror_folder, seed=3)
    mirror.fail_next("/" + GREEN.release_path(JANUARY), status=503, times=100)

    result = load(GREEN, JANUARY, resources, raise_on_error=False)

    message = failure_message(result)
    assert "HTTP 503" in message and "3 attempts" in message
    assert final_count(database_url, GREEN) == 0


def _terminate_when(database_url: str, condition_sql: str, deadline_seconds: float = 60) -> int:
    """Terminate the backends matching ``condition_sql`` as soon as one appears."""
    deadline = time.monotonic() + deadline_seconds
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            killed = watcher.execute(
                "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity "
                "where pid <> pg_backend_pid() and datname = current_database() "
                f"and {condition_sql}"
            ).fetchone()[0]
            if killed:
                return killed
    raise AssertionError(f"no backend matched {condition_sql} within {deadline_seconds}s")


def test_database_going_away_during_the_copy_into_the_final_table_leaves_it_unchanged(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    """The merge's COPY of the staged file is killed with rows already written: they go
    with its transaction, the staged file stays, and the final asset alone loads it."""
    write_month(GREEN, JANUARY, 1000, mirror_folder, seed=1)
    load(GREEN, JANUARY, resources)
    write_month(GREEN, FEBRUARY, 300_000, mirror_folder, seed=2)

    outcome: dict = {}
    runner = threading.Thread(
        target=lambda: outcome.update(result=load(GREEN, FEBRUARY, resources, raise_on_error=False))
    )
    runner.start()
    # The COPY has written rows and is still running when its session is killed.
    killed = _terminate_when(
        database_url,
        "pid in (select pid from pg_stat_progress_copy where tuples_processed > 0)",
    )
    runner.join()

    assert killed == 1
    message = failure_message(outcome["result"])
    assert "green_tripdata_2019-02.csv (partition green 2019-02-01)" in message
    assert "the database went away during the merge" in message
    assert final_count(database_url, GREEN) == 1000
    retry = merge_alone(GREEN, FEBRUARY, resources)
    assert metadata(retry, "postgres/green_tripdata")["rows_inserted"] == 300_000
    assert final_count(database_url, GREEN) == 301_000


def test_database_going_away_during_merge_leaves_final_table_unchanged(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    write_month(GREEN, JANUARY, 1000, mirror_folder, seed=1)
    load(GREEN, JANUARY, resources)
    write_month(GREEN, FEBRUARY, 2000, mirror_folder, seed=2)

    # Hold the final table's merge lock so the merge is caught inside its transaction.
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute(
            "select pg_advisory_lock(hashtext('taxi_platform:merge:public.green_tripdata'))"
        )
        outcome: dict = {}
        runner = threading.Thread(
            target=lambda: outcome.update(
                result=load(GREEN, FEBRUARY, resources, raise_on_error=False)
            )
        )
        runner.start()
        _terminate_when(database_url, "wait_event_type = 'Lock' and query ilike '%advisory%'")
        runner.join()

    message = failure_message(outcome["result"])
    assert "the database went away during the merge" in message
    assert final_count(database_url, GREEN) == 1000
    # The month stays staged and loads on the retry of the final asset alone.
    retry = merge_alone(GREEN, FEBRUARY, resources)
    assert metadata(retry, "postgres/green_tripdata")["rows_inserted"] == 2000
    assert final_count(database_url, GREEN) == 3000


def test_existing_zoomcamp_table_is_merged_into_without_duplicates(
    mirror_folder: Path, resources: dict, database_url: str
) -> None:
    """A table filled by the Kestra flow (their DDL, their UPDATE) gains nothing twice."""
    gz_path = write_month(GREEN, JANUARY, 600, mirror_folder, seed=11)
    columns = ", ".join(f"{c.name} {c.postgres_type}" for c in GREEN.columns)
    with psycopg.connect(database_url) as connection:
        connection.execute(
            f"create table public.green_tripdata (unique_row_id text, filename text, {columns})"
        )
        with connection.cursor().copy(
            f"copy green_tripdata ({', '.join(GREEN.header)}) from stdin with (format csv, header)"
        ) as copy:
            copy.write(gzip.decompress(gz_path.read_bytes()))
        connection.execute(
            f"update green_tripdata set filename = 'green_tripdata_2019-01.csv', unique_row_id = "
            f"{ZOOMCAMP_ID.format(pickup='lpep_pickup_datetime', dropoff='lpep_dropoff_datetime')}"
        )

    result = load(GREEN, JANUARY, resources)

    assert metadata(result, "postgres/green_tripdata")["rows_inserted"] == 0
    assert final_count(database_url, GREEN) == 600


def test_landed_file_matches_the_source_byte_for_byte(
    mirror_folder: Path, resources: dict, tmp_path: Path
) -> None:
    gz_path = write_month(YELLOW, MARCH, 400, mirror_folder, seed=12)
    keep = {**resources, "landing": LandingArea(root=str(tmp_path / "landing"), retention="keep")}
    result = load(YELLOW, MARCH, keep)

    landed = tmp_path / "landing" / "yellow" / "yellow_tripdata_2019-03.csv"
    assert landed.read_bytes() == gzip.decompress(gz_path.read_bytes())
    raw = metadata(result, "raw/yellow_tripdata_csv")
    assert raw[PARTITION_ROW_COUNT] == len(list(csv.reader(io.StringIO(landed.read_text())))) - 1
    assert raw["bytes"] == landed.stat().st_size
