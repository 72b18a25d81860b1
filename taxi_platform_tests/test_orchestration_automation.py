"""Schedules and sensors, evaluated as the daemon evaluates them, at chosen instants."""

import json
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import schedule_execution_time_iterator

from taxi_platform.definitions import build_definitions
from taxi_platform.defs.resources import trip_partitions
from taxi_platform.defs.trips.postgres import postgres_table_key
from taxi_platform.lib.asset_keys import summary_asset_key
from taxi_platform.lib.catalog import GREEN, YELLOW
from taxi_platform.resources import TripFileSource
from taxi_platform.tools.generate import write_month
from taxi_platform.tools.mirror import ReleaseMirror

NEW_YORK = ZoneInfo("America/New_York")


def definitions() -> dg.Definitions:
    return build_definitions()


# The months the schedule tests' ticks load, published by a mirror (a tick asks first).
SCHEDULED_MONTHS = {
    "green": (date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)),
    "yellow": (date(2019, 12, 1),),
}


@pytest.fixture(scope="module")
def schedule_source(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("scheduled")
    for taxi in (GREEN, YELLOW):
        for month in SCHEDULED_MONTHS[taxi.name]:
            write_month(taxi, month, 5, folder)
    with ReleaseMirror(folder) as mirror:
        yield TripFileSource(
            base_url=mirror.base_url, tlc_url=f"{mirror.base_url}/trip-data", max_attempts=1
        )


def evaluate_schedule(
    name: str,
    when: datetime,
    defs: dg.Definitions | None = None,
    trip_source: TripFileSource | None = None,
):
    schedule = (defs or definitions()).resolve_schedule_def(name)
    resources = {"trip_source": trip_source} if trip_source is not None else {}
    with dg.build_schedule_context(scheduled_execution_time=when, resources=resources) as context:
        return schedule.evaluate_tick(context)


def only_request(result) -> dg.RunRequest:
    assert result.skip_message is None, result.skip_message
    assert len(result.run_requests) == 1
    return result.run_requests[0]


def test_schedules_fire_on_the_first_at_the_kestra_hours_in_new_york() -> None:
    defs = definitions()
    green = defs.resolve_schedule_def("green_postgres_monthly")
    yellow = defs.resolve_schedule_def("yellow_postgres_monthly")

    assert (green.cron_schedule, green.execution_timezone) == ("0 9 1 * *", "America/New_York")
    assert (yellow.cron_schedule, yellow.execution_timezone) == ("0 10 1 * *", "America/New_York")
    assert {s.name for s in defs.schedules} >= {"green_gcp_monthly", "yellow_gcp_monthly"}
    ticks = schedule_execution_time_iterator(
        datetime(2019, 2, 15, tzinfo=timezone.utc).timestamp(),
        green.cron_schedule,
        green.execution_timezone,
    )
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer time.
    assert [next(ticks).astimezone(timezone.utc).hour for _ in range(3)] == [14, 13, 13]


def test_the_tick_of_the_first_loads_the_month_that_just_ended(
    schedule_source: TripFileSource,
) -> None:
    request = only_request(
        evaluate_schedule(
            "green_postgres_monthly",
            datetime(2019, 3, 1, 9, tzinfo=NEW_YORK),
            trip_source=schedule_source,
        )
    )

    assert request.partition_key == "2019-02-01"
    assert request.run_key == "2019-02-01"
    assert request.tags["taxi"] == "green"
    assert request.tags["file"] == "green_tripdata_2019-02.csv"
    assert request.job_name == "green_postgres"


def test_the_january_tick_loads_december_of_the_previous_year(
    schedule_source: TripFileSource,
) -> None:
    request = only_request(
        evaluate_schedule(
            "yellow_postgres_monthly",
            datetime(2020, 1, 1, 10, tzinfo=NEW_YORK),
            trip_source=schedule_source,
        )
    )

    assert request.partition_key == "2019-12-01"
    assert request.tags == {**request.tags, "taxi": "yellow", "file": "yellow_tripdata_2019-12.csv"}


def test_the_month_comes_from_the_date_in_the_schedules_time_zone_not_utc(
    schedule_source: TripFileSource,
) -> None:
    # 1 March 02:00 UTC is still 28 February in New York: the month before is January.
    request = only_request(
        evaluate_schedule(
            "green_postgres_monthly",
            datetime(2019, 3, 1, 2, 0, tzinfo=timezone.utc),
            trip_source=schedule_source,
        )
    )

    assert request.partition_key == "2019-01-01"


def test_the_time_zone_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, schedule_source: TripFileSource
) -> None:
    monkeypatch.setenv("TAXI_SCHEDULE_TIMEZONE", "Europe/Berlin")
    defs = definitions()
    schedule = defs.resolve_schedule_def("green_postgres_monthly")
    # 1 April 2019 00:30 in Berlin is 31 March 22:30 UTC: April already, locally.
    berlin_tick = datetime(2019, 4, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))

    request = only_request(
        evaluate_schedule("green_postgres_monthly", berlin_tick, defs, schedule_source)
    )

    assert schedule.execution_timezone == "Europe/Berlin"
    assert request.partition_key == "2019-03-01"


def test_a_time_zone_whose_tick_precedes_the_utc_month_end_skips_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, schedule_source: TripFileSource
) -> None:
    monkeypatch.setenv("TAXI_SCHEDULE_TIMEZONE", "Pacific/Auckland")
    defs = definitions()
    tick = datetime(2019, 3, 1, 9, tzinfo=ZoneInfo("Pacific/Auckland"))

    result = evaluate_schedule("green_postgres_monthly", tick, defs, schedule_source)

    assert not result.run_requests
    assert "not over in UTC" in result.skip_message


# -- new_release_sensor --------------------------------------------------------------------


@pytest.fixture
def mirror_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mirror"
    for taxi in (GREEN, YELLOW):
        for month in (date(2019, 1, 1), date(2019, 2, 1)):
            write_month(taxi, month, 50, folder, seed=1)
    return folder


def evaluate_sensor(sensor: dg.SensorDefinition, cursor: str | None, **context_args):
    with dg.build_sensor_context(cursor=cursor, **context_args) as context:
        return sensor.evaluate_tick(context)


def test_release_sensor_requests_exactly_the_new_month_once(mirror_folder: Path) -> None:
    sensor = definitions().resolve_sensor_def("new_release_sensor")
    start = json.dumps({"green": "2019-02", "yellow": "2019-02"})
    with ReleaseMirror(mirror_folder) as mirror:
        resources = {"trip_source": TripFileSource(base_url=mirror.base_url, max_attempts=1)}

        before = evaluate_sensor(sensor, start, resources=resources)
        write_month(GREEN, date(2019, 3, 1), 50, mirror_folder, seed=2)
        published = evaluate_sensor(sensor, before.cursor, resources=resources)
        after = evaluate_sensor(sensor, published.cursor, resources=resources)

    assert before.run_requests == []
    assert json.loads(before.cursor) == {"green": "2019-02", "yellow": "2019-02"}
    assert [(r.job_name, r.partition_key) for r in published.run_requests] == [
        ("green_postgres", "2019-03-01")
    ]
    request = published.run_requests[0]
    assert request.tags["taxi"] == "green"
    assert request.tags["file"] == "green_tripdata_2019-03.csv"
    assert json.loads(published.cursor) == {"green": "2019-03", "yellow": "2019-02"}
    assert after.run_requests == []
    assert after.cursor == published.cursor


def test_release_sensor_catches_up_and_targets_the_configured_paths(
    mirror_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAXI_RELEASE_TARGETS", "postgres,gcp")
    sensor = definitions().resolve_sensor_def("new_release_sensor")
    for month in (date(2019, 3, 1), date(2019, 4, 1)):
        write_month(YELLOW, month, 50, mirror_folder, seed=3)
    with ReleaseMirror(mirror_folder) as mirror:
        resources = {"trip_source": TripFileSource(base_url=mirror.base_url, max_attempts=1)}
        result = evaluate_sensor(
            sensor, json.dumps({"green": "2019-02", "yellow": "2019-02"}), resources=resources
        )

    assert sorted((r.job_name, r.partition_key) for r in result.run_requests) == [
        ("yellow_gcp", "2019-03-01"),
        ("yellow_gcp", "2019-04-01"),
        ("yellow_postgres", "2019-03-01"),
        ("yellow_postgres", "2019-04-01"),
    ]
    assert json.loads(result.cursor)["yellow"] == "2019-04"


# -- monthly summary sensors ---------------------------------------------------------------


def land(instance: dg.DagsterInstance, month: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=postgres_table_key(GREEN), partition=month)
    )


def evaluate_summary_sensor(defs: dg.Definitions, instance: dg.DagsterInstance, cursor):
    """One tick of the summary sensor, as the daemon runs a multi-asset sensor."""
    sensor = defs.resolve_sensor_def("green_monthly_summary_sensor")
    context = dg.build_multi_asset_sensor_context(
        monitored_assets=[postgres_table_key(GREEN)],
        instance=instance,
        cursor=cursor,
        definitions=defs,
    )
    return sensor.evaluate_tick(context)


def test_summary_sensor_requests_the_summary_of_each_month_that_landed() -> None:
    defs = definitions()
    with dg.instance_for_test() as instance:
        land(instance, "2019-03-01")
        first = evaluate_summary_sensor(defs, instance, None)
        quiet = evaluate_summary_sensor(defs, instance, first.cursor)
        # Two months landing between ticks (a backfill) each get their summary.
        land(instance, "2019-04-01")
        land(instance, "2019-05-01")
        both = evaluate_summary_sensor(defs, instance, quiet.cursor)

    assert [(r.job_name, r.partition_key) for r in first.run_requests] == [
        ("green_monthly_summary", "2019-03-01")
    ]
    assert first.run_requests[0].tags["file"] == "green_tripdata_2019-03.csv"
    assert first.run_requests[0].tags["taxi"] == "green"
    assert quiet.run_requests == []
    assert [r.partition_key for r in both.run_requests] == ["2019-04-01", "2019-05-01"]
    assert defs.resolve_job_def("green_monthly_summary").asset_layer.selected_asset_keys == {
        dg.AssetKey(["reports", "green_monthly_summary"])
    }


def stand_ins_for_final_and_summary() -> list[dg.AssetsDefinition]:
    """Assets with the final table's and the summary's keys that write nothing: runs of
    them leave the same events and run records as the real ones, without a database."""

    @dg.asset(key=postgres_table_key(GREEN), partitions_def=trip_partitions())
    def final_table() -> None:
        return None

    @dg.asset(key=summary_asset_key(GREEN), deps=[final_table], partitions_def=trip_partitions())
    def summary() -> None:
        return None

    return [final_table, summary]


def test_summary_sensor_leaves_months_whose_run_built_the_summary() -> None:
    """The load job summarizes a month in the run that loads it (as do backfills, whose
    runs select the job's assets); only a final table materialized without its summary
    needs the sensor's run."""
    defs = definitions()
    final_table, summary = stand_ins_for_final_and_summary()
    stand_in_job = dg.Definitions(
        assets=[final_table, summary],
        jobs=[dg.define_asset_job("green_postgres", selection=[final_table.key, summary.key])],
    ).resolve_job_def("green_postgres")
    with dg.instance_for_test() as instance:
        stand_in_job.execute_in_process(instance=instance, partition_key="2019-03-01")
        stand_in_job.execute_in_process(
            instance=instance, partition_key="2019-04-01", asset_selection=[final_table.key]
        )
        land(instance, "2019-05-01")  # no run at all
        requested = evaluate_summary_sensor(defs, instance, None).run_requests

    assert [r.partition_key for r in requested] == ["2019-04-01", "2019-05-01"]
    assert (
        summary_asset_key(GREEN)
        in defs.resolve_job_def("green_postgres").asset_layer.selected_asset_keys
    )
