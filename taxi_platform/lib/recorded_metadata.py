"""What a month's latest materialization recorded, read back from the instance.

Later steps read facts an earlier asset reported (the rows the GCS upload sent, the header
a month landed with) from its materialization rather than from the landed file, which the
default retention has removed by then.
"""

from __future__ import annotations

import dagster as dg


def recorded_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_key: str, label: str
) -> dg.MetadataValue | None:
    """``label`` of the partition's latest materialization, or None when there is none or
    it did not record ``label``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition_key]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    return materialization.metadata.get(label) if materialization else None
