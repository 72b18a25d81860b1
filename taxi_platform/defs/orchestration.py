"""Everything that decides *when* months load: jobs, schedules, sensors, checks, reports.

``orchestration_definitions()`` is merged into the one ``Definitions`` object by
``taxi_platform.definitions``. Like ``resources/defaults.py`` it is a place where the
environment is read (time zone, sensor targets, check thresholds); assets never read it.
"""

from __future__ import annotations

import os

import dagster as dg

from taxi_platform.defs.reports.assets import build_report_assets, taxi_zone_lookup
from taxi_platform.defs.trips.checks import CheckThresholds, build_taxi_checks
from taxi_platform.defs.trips.jobs import TARGETS, build_jobs, build_summary_job
from taxi_platform.defs.trips.schedules import DEFAULT_TIMEZONE, build_schedules
from taxi_platform.defs.trips.sensors import (
    backfill_run_tags,
    build_new_release_sensor,
    build_summary_sensor,
    dead_run_reaper,
)
from taxi_platform.lib.asset_keys import final_asset_key, summary_asset_key
from taxi_platform.lib.catalog import TAXIS


def schedule_timezone() -> str:
    """``TAXI_SCHEDULE_TIMEZONE`` (an IANA name), ``America/New_York`` by default, where the
    TLC publishes and the zoomcamp's Kestra triggers run."""
    return os.environ.get("TAXI_SCHEDULE_TIMEZONE") or DEFAULT_TIMEZONE


def release_targets() -> list[str]:
    """``TAXI_RELEASE_TARGETS``: the paths a newly published month is loaded along
    (``postgres``, ``gcp``, comma-separated); ``postgres`` by default, the path that works
    without a cloud account."""
    raw = os.environ.get("TAXI_RELEASE_TARGETS") or "postgres"
    targets = [target.strip() for target in raw.split(",") if target.strip()]
    unknown = [target for target in targets if target not in TARGETS]
    if unknown:
        raise ValueError(f"TAXI_RELEASE_TARGETS: unknown {unknown}; known: {', '.join(TARGETS)}")
    return targets


def release_sensor_interval_seconds() -> int:
    """``TAXI_RELEASE_SENSOR_INTERVAL_SECONDS``: hourly by default (one HEAD per taxi type)."""
    return int(os.environ.get("TAXI_RELEASE_SENSOR_INTERVAL_SECONDS") or 3600)


def check_thresholds() -> CheckThresholds:
    share = os.environ.get("TAXI_OUTSIDE_MONTH_WARN_SHARE")
    return CheckThresholds(outside_month_warn_share=float(share)) if share else CheckThresholds()


def orchestration_definitions() -> dg.Definitions:
    jobs = build_jobs()
    summary_jobs = []
    summary_sensors = []
    report_assets: list[dg.AssetsDefinition] = [taxi_zone_lookup]
    checks: list[dg.AssetChecksDefinition] = []
    for taxi in TAXIS.values():
        report_assets.extend(build_report_assets(taxi))
        checks.extend(build_taxi_checks(taxi))
        summary_job = build_summary_job(taxi, summary_asset_key(taxi))
        summary_jobs.append(summary_job)
        summary_sensors.append(build_summary_sensor(final_asset_key(taxi), summary_job))
    targets = release_targets()
    release_sensor = build_new_release_sensor(
        [job for (_taxi, target), job in jobs.items() if target in targets],
        minimum_interval_seconds=release_sensor_interval_seconds(),
    )
    return dg.Definitions(
        assets=report_assets,
        asset_checks=checks,
        jobs=[*jobs.values(), *summary_jobs],
        schedules=build_schedules(jobs, schedule_timezone()),
        sensors=[release_sensor, *summary_sensors, backfill_run_tags, dead_run_reaper],
        resources={"check_thresholds": check_thresholds()},
    )
