"""The resources a deployment gets from its environment: the one place env vars are read.

Every variable is optional; without any, the platform downloads from the GitHub releases,
lands files under ``~/.taxi_platform`` and loads into the embedded Postgres.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from taxi_platform.local.embedded_postgres import taxi_home
from taxi_platform.resources.gcp import gcp_resources_from_env
from taxi_platform.resources.landing import LandingArea
from taxi_platform.resources.postgres import PostgresResource
from taxi_platform.resources.trip_source import DEFAULT_SOURCE_URL, TripFileSource


def _env_or(name: str, default: str) -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set (the UI then shows where it comes from)."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "trip_source": TripFileSource(base_url=_env_or("TAXI_SOURCE_URL", DEFAULT_SOURCE_URL)),
        "landing": LandingArea(
            root=str(Path(taxi_home()) / "landing"),
            retention=_env_or("TAXI_LANDING_RETENTION", "delete"),
        ),
        "postgres": PostgresResource(
            url=dg.EnvVar("TAXI_DATABASE_URL") if os.environ.get("TAXI_DATABASE_URL") else None
        ),
        **gcp_resources_from_env(),
    }
