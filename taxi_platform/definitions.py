"""The one ``Definitions`` object: every taxi type's assets, built from the catalogue."""

from __future__ import annotations

import dagster as dg

from taxi_platform.assets.postgres import build_postgres_assets
from taxi_platform.assets.raw import build_raw_asset
from taxi_platform.catalog import TAXIS
from taxi_platform.resources.defaults import default_resources

taxi_assets = [
    asset
    for taxi in TAXIS.values()
    for asset in (build_raw_asset(taxi), *build_postgres_assets(taxi))
]

defs = dg.Definitions(assets=taxi_assets, resources=default_resources())
