"""What happens to a landed month once the assets that read it are done with it.

Yellow months are ~650 MB uncompressed; a 31-month backfill that kept every file would
fill a small disk. Both the Postgres path (staging) and the Google Cloud path (the GCS
upload) read the landed CSV, so it may only go once each of them has the month.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

from taxi_platform.lib.asset_keys import landed_file_readers, raw_asset_key
from taxi_platform.lib.catalog import TaxiType
from taxi_platform.resources.landing import LandingArea


def _latest_timestamp(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str | None
) -> float | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=asset_key, asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    return records[0].timestamp if records else None


def release_landed_file(
    context: dg.AssetExecutionContext,
    landing: LandingArea,
    taxi: TaxiType,
    month_start: date,
) -> bool:
    """Delete the month's landed file if every reader has the month; True if deleted.

    Called by each reader at the end of its step (its own materialization counts as
    done). The readers are the catalogued ones (``landed_file_readers``); one that is not
    part of this run and has never been materialized for any month (a path the deployment
    does not use, such as Google Cloud for a Postgres-only user) is not waited for.
    """
    if landing.retention not in ("keep", "delete"):
        raise dg.Failure(
            description=f"landing retention {landing.retention!r} is neither 'keep' nor "
            "'delete' (TAXI_LANDING_RETENTION)"
        )
    if landing.retention == "keep":
        return False
    partition = context.partition_key
    instance = context.instance
    landed_at = _latest_timestamp(instance, raw_asset_key(taxi), partition)
    this_reader = context.asset_key
    in_this_run = context.dagster_run.asset_selection or (
        context.job_def.asset_layer.executable_asset_keys
    )
    for reader in landed_file_readers(taxi):
        if reader == this_reader:
            continue
        if reader not in in_this_run and _latest_timestamp(instance, reader, None) is None:
            continue  # a path this deployment does not use
        read_at = _latest_timestamp(instance, reader, partition)
        if read_at is None or (landed_at is not None and read_at < landed_at):
            context.log.info(f"keeping the landed file: {reader.to_user_string()} still needs it")
            return False
    freed = landing.remove(taxi, month_start)
    if freed:
        context.log.info(f"landed file removed after use ({freed:,} bytes freed)")
    return freed > 0
