"""The one ``Definitions`` object: every taxi type's assets, built from the catalogue."""

import dagster as dg

from taxi_platform.defs.getting_started import getting_started_definitions
from taxi_platform.defs.orchestration import orchestration_definitions
from taxi_platform.defs.resources import default_resources
from taxi_platform.defs.trips.gcp import build_gcp_assets, gcp_setup_assets
from taxi_platform.defs.trips.postgres import build_postgres_assets
from taxi_platform.defs.trips.raw import build_raw_asset
from taxi_platform.lib.catalog import TAXIS

taxi_assets = [
    asset
    for taxi in TAXIS.values()
    for asset in (build_raw_asset(taxi), *build_postgres_assets(taxi))
]

gcp_assets = [
    *gcp_setup_assets(),
    *(asset for taxi in TAXIS.values() for asset in build_gcp_assets(taxi)),
]


def build_definitions() -> dg.Definitions:
    """Everything the code location serves; the environment is read as it is now."""
    # Steps of a month run one after another in the run's process: on a small machine a
    # process per step (eight with the checks) costs more than the steps themselves, and
    # the months of a backfill already run in parallel as separate runs.
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[*taxi_assets, *gcp_assets],
            resources=default_resources(),
            executor=dg.in_process_executor,
        ),
        orchestration_definitions(),
        getting_started_definitions(),
    )


defs = build_definitions()
