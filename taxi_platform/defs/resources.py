"""The environment, read in one place: the resources a deployment gets, and the settings of
its schedules, sensors and checks.

Every variable is optional; without any, the platform downloads from the GitHub releases,
lands files under ``~/.taxi_platform`` and loads into the embedded Postgres. Assets,
schedules and sensors never read the environment themselves; they get what this module
builds when the definitions load.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import dagster as dg

from taxi_platform.lib.asset_keys import TARGETS
from taxi_platform.lib.months import monthly_partitions
from taxi_platform.local.embedded_postgres import taxi_home
from taxi_platform.resources.check_thresholds import CheckThresholds
from taxi_platform.resources.gcp import (
    BIGQUERY_EMULATOR_HOST,
    BIGQUERY_JOB_TIMEOUT,
    LOCAL_BIGQUERY_DATABASE,
    LOCAL_GCS_ROOT,
    STORAGE_EMULATOR_HOST,
    TaxiBigQueryResource,
    TaxiGCSResource,
)
from taxi_platform.resources.landing import LandingArea
from taxi_platform.resources.postgres import PostgresResource
from taxi_platform.resources.trip_source import (
    DEFAULT_SOURCE_URL,
    DEFAULT_SOURCES,
    DEFAULT_TLC_URL,
    TripFileSource,
    last_served_month,
    parse_sources,
)


def _env_or(name: str, default: str) -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set (the UI then shows where it comes from)."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def _env(name: str) -> dg.EnvVar | None:
    """An ``EnvVar`` when set (the UI shows where the value comes from, and hides it)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _seconds(name: str) -> float:
    text = os.environ[name]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} is {text!r}, not a number of seconds") from None


def gcp_resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """``gcs`` and ``bigquery`` resources from the environment; unset settings stay unset.

    Nothing is required here: a missing variable fails the first step that needs it, with
    a message naming the variable, so a Postgres-only deployment does not need them.
    """
    project, location = _env("GCP_PROJECT_ID"), _env("GCP_LOCATION")
    credentials = _env("GCP_CREDS")
    waits = (
        {"job_timeout_seconds": _seconds(BIGQUERY_JOB_TIMEOUT)}
        if _env(BIGQUERY_JOB_TIMEOUT)
        else {}
    )
    return {
        "gcs": TaxiGCSResource(
            project=project,
            location=location,
            bucket_name=_env("GCP_BUCKET_NAME"),
            gcp_credentials=credentials,
            emulator_host=_env(STORAGE_EMULATOR_HOST),
        ),
        "bigquery": TaxiBigQueryResource(
            project=project,
            location=location,
            dataset=_env("GCP_DATASET"),
            gcp_credentials=credentials,
            api_endpoint=_env(BIGQUERY_EMULATOR_HOST),
            local_database=_env(LOCAL_BIGQUERY_DATABASE),
            local_gcs_root=_env(LOCAL_GCS_ROOT),
            **waits,
        ),
    }


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "trip_source": trip_source(),
        "landing": LandingArea(
            root=str(Path(taxi_home()) / "landing"),
            retention=_env_or("TAXI_LANDING_RETENTION", "delete"),
        ),
        "postgres": PostgresResource(
            url=dg.EnvVar("TAXI_DATABASE_URL") if os.environ.get("TAXI_DATABASE_URL") else None
        ),
        **gcp_resources_from_env(),
    }


def _source_names() -> tuple[str, ...]:
    return parse_sources(os.environ.get("TAXI_SOURCES") or DEFAULT_SOURCES)


@functools.cache
def trip_partitions() -> dg.MonthlyPartitionsDefinition:
    """The months users see and load: from 2019-01 to the last complete month, or to the
    course releases' last month (2021-07) with ``TAXI_SOURCES=course``. Built once, so
    every asset, check and job of the code location shares one calendar."""
    return monthly_partitions(last_served_month(_source_names()))


def trip_source() -> TripFileSource:
    """``TAXI_SOURCE_URL`` (course releases), ``TAXI_TLC_URL`` (the TLC's Parquet files) and
    ``TAXI_SOURCES`` (``course,tlc`` by default, ``tlc`` or ``course``): where months come
    from. A wrong ``TAXI_SOURCES`` fails here, when the definitions load."""
    _source_names()
    return TripFileSource(
        base_url=_env_or("TAXI_SOURCE_URL", DEFAULT_SOURCE_URL),
        tlc_url=_env_or("TAXI_TLC_URL", DEFAULT_TLC_URL),
        sources=_env_or("TAXI_SOURCES", DEFAULT_SOURCES),
    )


DEFAULT_TIMEZONE = "America/New_York"


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


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources={**default_resources(), "check_thresholds": check_thresholds()})
