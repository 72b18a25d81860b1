"""The ``getting_started`` group: the module's three tutorial flows, done the Dagster way.

Before the taxi pipelines, the course walks through a hello-world job, a Python asset
that reports outputs and metrics, and a small products pipeline. Users compare
orchestrators on these, so they live in their own group, apart from the taxi assets.
"""

from __future__ import annotations

import dagster as dg

from taxi_platform.defs.getting_started.dockerhub import (
    DOCKERHUB_REPOSITORY_URL,
    docker_image_pulls,
)
from taxi_platform.defs.getting_started.hello_world import build_hello_world_schedule, hello_world
from taxi_platform.defs.getting_started.products import (
    PRODUCTS_URL,
    brand_price_summary,
    products_filtered,
    products_raw,
)
from taxi_platform.defs.resources import schedule_timezone
from taxi_platform.resources.http_json_api import HttpJsonApi


def getting_started_definitions(
    *,
    dockerhub_url: str = DOCKERHUB_REPOSITORY_URL,
    products_url: str = PRODUCTS_URL,
    schedule_timezone: str = "America/New_York",
) -> dg.Definitions:
    """The group's assets, the hello-world job and schedule, and resources for the real APIs.

    Meant to be combined with the taxi definitions through ``dg.Definitions.merge``; the
    resource keys (``dockerhub_api``, ``products_api``) are the group's own.
    """
    return dg.Definitions(
        assets=[docker_image_pulls, products_raw, products_filtered, brand_price_summary],
        jobs=[hello_world],
        schedules=[build_hello_world_schedule(schedule_timezone)],
        resources={
            "dockerhub_api": HttpJsonApi(url=dockerhub_url),
            "products_api": HttpJsonApi(url=products_url),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return getting_started_definitions(schedule_timezone=schedule_timezone())
