"""Every asset's key, in one place: the layer prefix, then the table it stands for.

Asset modules, checks, sensors, jobs and the retention rule all name assets through these,
so a key is spelled once.
"""

from collections.abc import Callable

import dagster as dg

from taxi_platform.lib.catalog import TaxiType

# Who answers for every asset of the platform (shown on each asset's page).
ASSET_OWNERS = ["team:taxi-platform"]

BUCKET_ASSET_KEY = dg.AssetKey(["gcs", "bucket"])
DATASET_ASSET_KEY = dg.AssetKey(["bigquery", "dataset"])
ZONE_LOOKUP_KEY = dg.AssetKey(["raw", "taxi_zone_lookup"])

# The metadata key under which every monthly asset reports its month's rows (one count per
# asset; the UI shows it on the partition's materialization).
PARTITION_ROW_COUNT = "dagster/partition_row_count"

# The paths a month loads along (one job per taxi type and path), and the key prefixes of
# the Google Cloud path's assets.
TARGETS = ("postgres", "gcp")
GCP_KEY_PREFIXES = ("gcs", "bigquery")


def _layer_key(layer: str, name: str) -> Callable[[TaxiType], dg.AssetKey]:
    """A key function: the layer prefix, then ``name`` with the taxi type's ``{table}``
    (``green_tripdata``) or ``{taxi}`` (``green``) filled in."""

    def key(taxi: TaxiType) -> dg.AssetKey:
        return dg.AssetKey([layer, name.format(table=taxi.table, taxi=taxi.name)])

    return key


raw_asset_key = _layer_key("raw", "{table}_csv")
staging_asset_key = _layer_key("postgres", "{table}_staging")
postgres_table_key = _layer_key("postgres", "{table}")
gcs_asset_key = _layer_key("gcs", "{table}_csv")
external_asset_key = _layer_key("bigquery", "{table}_ext")
month_asset_key = _layer_key("bigquery", "{table}_month")
bigquery_table_key = _layer_key("bigquery", "{table}")
summary_asset_key = _layer_key("reports", "{taxi}_monthly_summary")


def landed_file_readers(taxi: TaxiType) -> tuple[dg.AssetKey, ...]:
    """The assets that read the landed CSV itself (everything else reads a table)."""
    return (staging_asset_key(taxi), gcs_asset_key(taxi))


def layer_group(taxi: TaxiType, layer: str) -> str:
    """The asset group of one taxi type's layer: ``green_trips/postgres``.

    The graph labels a node with the last part of its key only, so ``postgres/green_tripdata``
    and ``bigquery/green_tripdata`` (or the landed and the uploaded ``green_tripdata_csv``)
    would read the same; Dagster draws each sub-group (``/`` in a group name) as a box named
    after the layer, inside the taxi type's ``green_trips`` box. Keys are left as they are.
    """
    return f"{taxi.name}_trips/{layer}"
