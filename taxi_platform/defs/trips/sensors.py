"""Sensors: a month published upstream, a month landed downstream, a backfill run tagged.

- ``new_release_sensor`` answers "the schedule fired before the data was out": it asks the
  source that serves the month after the last one it saw (one HEAD per taxi type: the
  course releases or the TLC) whether it is published, and requests that month's runs
  when it is.
- ``{taxi}_monthly_summary_sensor`` watches the final table's materializations and
  requests the month's ``reports/{taxi}_monthly_summary`` when their run did not build it
  (the load jobs and backfills build it in the same run).
- ``backfill_run_tags`` gives asset-backfill runs the ``file`` tag that Dagster cannot put
  on them at launch (see ``taxi_platform.tools.backfill``).
- ``dead_run_reaper`` fails runs whose process died and frees their pool slots (see
  ``taxi_platform.lib.run_liveness``); every run that uses the database does the same first.
"""

import json
from collections.abc import Iterator
from datetime import date, datetime, timezone

import dagster as dg

from taxi_platform.defs.resources import release_sensor_interval_seconds, release_targets
from taxi_platform.defs.trips.jobs import (
    SUMMARY_JOBS,
    TAXI_JOBS,
    AssetJob,
    run_tags,
    taxi_of_asset_key,
)
from taxi_platform.lib.asset_keys import postgres_table_key, summary_asset_key
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.months import (
    month_start,
    months_before,
    next_month,
    parse_month,
    partition_key,
)
from taxi_platform.lib.run_liveness import reap_dead_runs
from taxi_platform.resources import TripFileSource

# A source that publishes many months at once (a mirror being filled) is caught up over
# several ticks rather than by one tick requesting dozens of runs.
MAX_NEW_MONTHS_PER_TICK = 6
RELEASE_SENSOR_LOOKBACK_MONTHS = 4
SUMMARY_EVENTS_PER_TICK = 100


def _release_cursor(cursor: str | None, start: date) -> dict[str, date]:
    """Per taxi type, the last month the sensor has seen published (JSON in the cursor).

    Without a cursor, ``start`` (see ``release_sensor_start``): history is loaded by
    backfills, not by this sensor. Set the cursor from the sensor's page to start
    elsewhere: ``{"green": "2019-06"}``.
    """
    seen = {name: start for name in TAXIS}
    if cursor:
        for name, month in json.loads(cursor).items():
            seen[name] = parse_month(month)
    return seen


def release_sensor_start(trip_source: TripFileSource, current_month: date) -> date:
    """Where a sensor without a cursor starts: the last course month when only the course
    releases are used; otherwise four months before the current one, so that its first
    ticks request the TLC's latest months (published about two months after they end),
    then each new one."""
    last_course_month = trip_source.last_served_month()
    if last_course_month is not None:
        return last_course_month
    return months_before(current_month, RELEASE_SENSOR_LOOKBACK_MONTHS)


def _published_months(
    context: dg.SensorEvaluationContext,
    trip_source: TripFileSource,
    taxi: TaxiType,
    last_seen: date,
    current_month: date,
) -> Iterator[date]:
    """The months after ``last_seen`` and before ``current_month`` that are published, in
    order, up to the first that is not (one HEAD each, at most ``MAX_NEW_MONTHS_PER_TICK``).

    A month is a partition once it is over (UTC); its file cannot be complete before.
    """
    candidate = last_seen
    for _ in range(MAX_NEW_MONTHS_PER_TICK):
        candidate = next_month(candidate)
        if candidate >= current_month or trip_source.is_after_last_month(candidate):
            return
        url = trip_source.url_for(taxi, candidate)
        source = trip_source.source_for(candidate)
        if not trip_source.is_published(url):
            context.log.info(
                f"{taxi.csv_name(candidate)}: not published yet by the {source} source "
                f"({url}; {trip_source.served_months(source)})"
            )
            return
        context.log.info(
            f"{taxi.csv_name(candidate)}: published by the {source} source ({url}), "
            "requesting its runs"
        )
        yield candidate


def build_new_release_sensor(
    jobs: list[AssetJob],
    minimum_interval_seconds: int = 3600,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """``jobs``: what to run for a newly published month, per taxi type (their ``taxi`` tag)."""
    jobs_by_taxi: dict[str, list[AssetJob]] = {}
    for job in jobs:
        jobs_by_taxi.setdefault(job.tags["taxi"], []).append(job)

    @dg.sensor(
        name="new_release_sensor",
        jobs=jobs,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "HEADs the trip file source for the month after the last one seen, per taxi "
            f"type, and requests {', '.join(job.name for job in jobs)} once it is published."
        ),
    )
    def new_release_sensor(
        context: dg.SensorEvaluationContext, trip_source: TripFileSource
    ) -> dg.SensorResult:
        current_month = datetime.now(timezone.utc).date().replace(day=1)
        seen = _release_cursor(context.cursor, release_sensor_start(trip_source, current_month))
        run_requests: list[dg.RunRequest] = []
        for taxi_name, taxi_jobs in jobs_by_taxi.items():
            taxi, last_seen = TAXIS[taxi_name], seen[taxi_name]
            for month in _published_months(context, trip_source, taxi, last_seen, current_month):
                key = partition_key(month)
                run_requests.extend(
                    job.run_request_for_partition(
                        partition_key=key,
                        # One run per job and month, whatever happens to the cursor.
                        run_key=f"{job.name}:{key}",
                        tags={"trigger": "new_release_sensor"},
                    )
                    for job in taxi_jobs
                )
                seen[taxi_name] = month
        cursor = json.dumps({name: f"{month:%Y-%m}" for name, month in sorted(seen.items())})
        return dg.SensorResult(run_requests=run_requests, cursor=cursor)

    return new_release_sensor


def run_builds_asset(
    context: dg.MultiAssetSensorEvaluationContext, run_id: str, asset_key: dg.AssetKey
) -> bool:
    """Whether the run ``run_id`` was launched to materialize ``asset_key`` too: its asset
    selection (backfills, the UI's selections) or, when it has none (schedules and sensors
    launch whole jobs), its job's. A run of a job this code location does not have, or
    no run (a runless event), does not: at worst a month is summarized twice, never left
    without a summary."""
    run = context.instance.get_run_by_id(run_id) if run_id else None
    if run is None:
        return False
    if run.asset_selection:
        return asset_key in run.asset_selection
    if not context.repository_def.has_job(run.job_name):
        return False
    return asset_key in context.repository_def.get_job(run.job_name).asset_layer.selected_asset_keys


def build_summary_sensor(
    final_key: dg.AssetKey,
    summary_key: dg.AssetKey,
    summary_job: AssetJob,
    minimum_interval_seconds: int = 30,
) -> dg.SensorDefinition:
    """An asset sensor on one final table: a month that lands without its summary (the
    final asset materialized alone) gets it rebuilt; the load jobs' and backfills' runs
    build the summary themselves (``run_builds_asset``), right after the final table.

    A multi-asset sensor rather than ``@asset_sensor``: the latter hands a tick only the
    latest materialization, so when a backfill lands three months between two ticks, two of
    them would never get a summary. This one reads every materialization after its cursor
    (oldest first, a bounded number per tick) and advances past the last one it read.
    """

    @dg.multi_asset_sensor(
        name=f"{summary_job.name}_sensor",
        monitored_assets=[final_key],
        job=summary_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"When a month of {final_key.to_user_string()} is materialized by a run that "
            f"does not build {summary_key.to_user_string()} (the final asset alone), "
            f"requests that month of {summary_job.name}."
        ),
    )
    def summary_sensor(context: dg.MultiAssetSensorEvaluationContext) -> dg.SensorResult:
        records = context.materialization_records_for_key(final_key, limit=SUMMARY_EVENTS_PER_TICK)
        run_requests = [
            summary_job.run_request_for_partition(
                partition_key=record.partition_key,
                # Per materialization: a month reloaded later is summarized again.
                run_key=f"{record.partition_key}:{record.storage_id}",
                tags={"trigger": f"{summary_job.name}_sensor"},
            )
            for record in records
            if record.partition_key is not None
            and not run_builds_asset(context, record.run_id, summary_key)
        ]
        if records:
            context.advance_cursor({final_key: records[-1]})
        return dg.SensorResult(run_requests=run_requests)

    return summary_sensor


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.STARTED,
    name="backfill_run_tags",
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Adds the taxi and file tags to backfill runs that lack them: runs of an asset "
        "backfill only get the backfill's tags, the same for every month."
    ),
)
def backfill_run_tags(context: dg.RunStatusSensorContext) -> None:
    """Dagster creates an asset backfill's runs itself, giving each the backfill's tags
    plus ``dagster/partition``; nothing per month of ours. So the ``file`` label the Kestra
    flows set (and ``taxi``, when the backfill was launched without it) is added here, once
    the run has started: the runs list can then be filtered on ``file=...`` as for the other
    runs. (The queue's ``taxi`` limits only see tags present at launch: the CLI sets it.)
    """
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    if partition is None or "file" in run.tags or not run.asset_selection:
        return
    taxis = {taxi_of_asset_key(key) for key in run.asset_selection} - {None}
    if len(taxis) != 1:
        return
    (taxi,) = taxis
    try:
        tags = run_tags(taxi, month_start(partition))
    except ValueError:
        return
    missing = {key: value for key, value in tags.items() if key not in run.tags}
    context.instance.add_run_tags(run.run_id, missing)
    context.log.info(f"run {run.run_id}: tagged {missing}")


@dg.sensor(
    name="dead_run_reaper",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks failed the runs of this host whose process is gone (killed, out of memory, "
        "a reboot) and frees the taxi_database pool slots they held, so that no later run "
        "waits for them forever."
    ),
)
def dead_run_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reaped = reap_dead_runs(context.instance, log=context.log.info)
    if reaped:
        return dg.SkipReason(f"marked {len(reaped)} dead run(s) failed: {', '.join(reaped)}")
    return dg.SkipReason("no run of this host has lost its process")


@dg.definitions
def defs() -> dg.Definitions:
    targets = release_targets()
    release_sensor = build_new_release_sensor(
        [job for (_taxi, target), job in TAXI_JOBS.items() if target in targets],
        minimum_interval_seconds=release_sensor_interval_seconds(),
    )
    summary_sensors = [
        build_summary_sensor(
            postgres_table_key(taxi), summary_asset_key(taxi), SUMMARY_JOBS[taxi.name]
        )
        for taxi in TAXIS.values()
    ]
    return dg.Definitions(
        sensors=[release_sensor, *summary_sensors, backfill_run_tags, dead_run_reaper]
    )
