"""Monthly schedules, built from the partitioned jobs: green at 09:00, yellow at 10:00 on the 1st.

The zoomcamp's scheduled Kestra flow loads the month of its trigger date: on 1 March it
asks for March, whose file cannot exist yet. Ours load the month that just ended (the
tick of 1 March loads February), as the partitions say: February is the last month that
is complete on 1 March. A month published late is picked up by ``new_release_sensor``.

Dagster's ``build_schedule_from_partitioned_job`` refuses an ``execution_timezone`` for a
time-partitioned job (the schedule would run in the partitions' time zone, UTC), so the
schedules are built here: cron and time zone of our choosing, the month computed from the
tick's date in that time zone, the run requested through the job (so it gets the job's
per-month tags).

A tick asks the source that serves the month (one HEAD) before requesting its run: the TLC
publishes a month about two months after it ends, so the tick of 1 March usually finds
February unpublished. It then skips, with a reason that names the URL and the months the
source serves, instead of starting a run that can only fail; ``new_release_sensor``
requests the month when it appears.
"""

from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import dagster as dg

from taxi_platform.defs.resources import DEFAULT_TIMEZONE, schedule_timezone
from taxi_platform.defs.trips.jobs import TAXI_JOBS, AssetJob
from taxi_platform.lib.catalog import TAXIS
from taxi_platform.lib.months import next_month, partition_key, previous_month
from taxi_platform.lib.source_errors import SourceUnavailable
from taxi_platform.resources import TripFileSource

# Kestra's triggers: green first, yellow an hour later (they share the database).
CRON_SCHEDULES = {"green": "0 9 1 * *", "yellow": "0 10 1 * *"}
DEFAULT_CRON_SCHEDULE = "0 11 1 * *"  # a taxi type added to the catalogue later


def month_to_load(scheduled_execution_time: datetime, execution_timezone: str) -> date:
    """The month before the tick's calendar date *in the schedule's time zone*.

    The date must be the local one: 1 March 09:00 in Auckland is still 28 February in
    UTC, and a UTC date would load January.
    """
    if scheduled_execution_time.tzinfo is None:
        scheduled_execution_time = scheduled_execution_time.replace(tzinfo=timezone.utc)
    local_day = scheduled_execution_time.astimezone(ZoneInfo(execution_timezone)).date()
    return previous_month(local_day)


def build_schedule(
    job: AssetJob,
    taxi_name: str,
    execution_timezone: str = DEFAULT_TIMEZONE,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    cron_schedule = CRON_SCHEDULES.get(taxi_name, DEFAULT_CRON_SCHEDULE)

    @dg.schedule(
        name=f"{job.name}_monthly",
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        job=job,
        default_status=default_status,
        tags={"schedule": "monthly"},
        description=(
            f"{cron_schedule} ({execution_timezone}): loads the month that just ended with "
            f"{job.name}."
        ),
    )
    def monthly(
        context: dg.ScheduleEvaluationContext, trip_source: TripFileSource
    ) -> dg.RunRequest | dg.SkipReason:
        scheduled = context.scheduled_execution_time or datetime.now(timezone.utc)
        if scheduled.tzinfo is None:
            scheduled = scheduled.replace(tzinfo=timezone.utc)
        month = month_to_load(scheduled, execution_timezone)
        key = partition_key(month)
        month_over_utc = datetime.combine(next_month(month), time(0), tzinfo=timezone.utc)
        if scheduled < month_over_utc:
            # The partitions are UTC months: east of UTC+9, 1st 09:00 local comes first.
            return dg.SkipReason(
                f"{key}: the month is not over in UTC (the partitions' calendar) at "
                f"{scheduled.isoformat()}; schedule later in the day in {execution_timezone}"
            )
        unpublished = unpublished_reason(trip_source, taxi_name, month)
        if unpublished is not None:
            return dg.SkipReason(unpublished)
        # run_key: one run per month, even if a tick is evaluated again after a restart.
        return job.run_request_for_partition(partition_key=key, run_key=key, current_time=scheduled)

    return monthly


def unpublished_reason(trip_source: TripFileSource, taxi_name: str, month: date) -> str | None:
    """Why the month cannot load yet (after the sources' last month, or its URL answered 404),
    or None when it is published.

    A source in trouble (5xx, timeouts) is no reason to skip: the run is requested and its
    own retries deal with it, so a month is never silently left out.
    """
    taxi = TAXIS[taxi_name]
    source = trip_source.source_for(month)
    if trip_source.is_after_last_month(month):
        # Not a partition either: with the course releases alone the calendar ends there.
        return (
            f"{partition_key(month)}: {taxi.name} {month:%Y-%m} is after the last month of "
            f"the sources in use ({trip_source.served_months(source)}); TAXI_SOURCES="
            "course,tlc loads later months from the TLC"
        )
    url = trip_source.url_for(taxi, month)
    try:
        if trip_source.is_published(url):
            return None
    except SourceUnavailable:
        return None
    return (
        f"{partition_key(month)}: {taxi.name} {month:%Y-%m} is not published yet by the "
        f"{source} source ({url} answered 404; {trip_source.served_months(source)}); "
        "new_release_sensor requests it once it appears"
    )


def build_schedules(
    jobs: dict[tuple[str, str], AssetJob], execution_timezone: str
) -> list[dg.ScheduleDefinition]:
    """One schedule per job; all start stopped, switched on from the UI's Automation page."""
    return [
        build_schedule(job, taxi_name, execution_timezone)
        for (taxi_name, _target), job in jobs.items()
        if taxi_name in TAXIS
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(schedules=build_schedules(TAXI_JOBS, schedule_timezone()))
