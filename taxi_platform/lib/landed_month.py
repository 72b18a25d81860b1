"""The landed month a downstream step reads, or the one failure that says what to run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from taxi_platform.lib.asset_keys import raw_asset_key
from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.landing import LandedFile


def landed_month_or_fail(csv_path: Path, taxi: TaxiType, describe: str) -> LandedFile:
    """The landed file's facts (its sidecar), or a Failure naming the raw asset to run.

    Staging and the GCS upload both read the landed CSV; without it (never landed, or
    already released by the retention policy) the fix is the same: land the month again.
    """
    landed = LandedFile.read_sidecar(csv_path)
    if landed is None:
        raise dg.Failure(
            description=f"{describe}: no landed file at {csv_path}; materialize "
            f"{raw_asset_key(taxi).to_user_string()} for this month first",
            allow_retries=False,
        )
    return landed
