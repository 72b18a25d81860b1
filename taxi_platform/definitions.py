"""The one ``Definitions`` object: every taxi type's assets, built from the catalogue."""

import dagster as dg

from taxi_platform.assets.gcp import build_gcp_assets, gcp_setup_assets
from taxi_platform.assets.postgres import build_postgres_assets
from taxi_platform.assets.raw import build_raw_asset
from taxi_platform.catalog import TAXIS
from taxi_platform.getting_started import getting_started_definitions
from taxi_platform.orchestration import orchestration_definitions
from taxi_platform.resources.defaults import default_resources

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
