"""One partitioned job per taxi type and target: what schedules, sensors and backfills run.

A run of a job loads one month along one path (``postgres``: raw -> staging -> final ->
the month's summary report; ``gcp``: raw -> GCS -> BigQuery) with the month's asset
checks. Every run carries the Kestra flows' labels as tags, ``taxi`` and ``file``, so runs
can be filtered the same way (and ``dagster.yaml`` can limit concurrent loads per ``taxi``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Protocol

import dagster as dg

from taxi_platform.defs.resources import trip_partitions
from taxi_platform.lib.asset_keys import (
    GCP_KEY_PREFIXES,
    TARGETS,
    postgres_table_key,
    raw_asset_key,
    staging_asset_key,
    summary_asset_key,
)
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.months import month_start


class AssetJob(Protocol):
    """What ``define_asset_job`` returns: Dagster exports the function, not the class, so
    this names the part of it that schedules and sensors use."""

    name: str
    tags: Mapping[str, str]

    def run_request_for_partition(
        self, partition_key: str, run_key: str | None, tags: Mapping[str, str] | None = None
    ) -> dg.RunRequest: ...


def job_name(taxi: TaxiType, target: str) -> str:
    return f"{taxi.name}_{target}"


def run_tags(taxi: TaxiType, month: date) -> dict[str, str]:
    """The Kestra labels: ``taxi=green``, ``file=green_tripdata_2019-01.csv``."""
    return {"taxi": taxi.name, "file": taxi.csv_name(month)}


def target_selection(taxi: TaxiType, target: str) -> dg.AssetSelection:
    """The month's assets along one path (their checks come with them).

    The Postgres path ends with the month's summary report: in the load's own run, the
    report is there when the run ends, and a month costs one run process, not two (each
    about 2.5 core-seconds of start-up, definitions and events; ``bench.history``).

    The GCP path is everything below ``gcs/`` and ``bigquery/`` downstream of the raw file,
    which leaves out the non-partitioned bucket and dataset setup assets (a partitioned
    job cannot hold them) and resolves to the raw asset alone where the GCP assets are
    not part of the code location.
    """
    raw = dg.AssetSelection.assets(raw_asset_key(taxi))
    if target == "postgres":
        return dg.AssetSelection.assets(
            raw_asset_key(taxi),
            staging_asset_key(taxi),
            postgres_table_key(taxi),
            summary_asset_key(taxi),
        )
    if target == "gcp":
        return raw | (raw.downstream() & dg.AssetSelection.key_prefixes(*GCP_KEY_PREFIXES))
    raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")


def build_job(taxi: TaxiType, target: str) -> AssetJob:
    def tags_for_partition(partition: str) -> dict[str, str]:
        return run_tags(taxi, month_start(partition))

    return dg.define_asset_job(
        name=job_name(taxi, target),
        selection=target_selection(taxi, target),
        partitions_def=trip_partitions(),
        description=(
            f"Loads one month of {taxi.name} trips along the {target} path, with its checks."
        ),
        tags={"taxi": taxi.name, "target": target},
        # Per-month tags reach the runs of schedules, sensors and job backfills (the
        # backfill dialog of the job's page); asset backfills take the backfill's tags.
        config=dg.PartitionedConfig(
            partitions_def=trip_partitions(),
            run_config_for_partition_key_fn=lambda _partition: {},
            tags_for_partition_key_fn=tags_for_partition,
        ),
    )


def build_jobs() -> dict[tuple[str, str], AssetJob]:
    """Every (taxi, target) job, keyed by the pair."""
    return {
        (taxi.name, target): build_job(taxi, target)
        for taxi in TAXIS.values()
        for target in TARGETS
    }


def summary_job_name(taxi: TaxiType) -> str:
    return f"{taxi.name}_monthly_summary"


def build_summary_job(taxi: TaxiType, summary_key: dg.AssetKey) -> AssetJob:
    """The job the summary sensor requests for a month loaded without its summary (the
    final asset materialized alone): the month's ``reports/`` partition, tagged."""

    def tags_for_partition(partition: str) -> dict[str, str]:
        return run_tags(taxi, month_start(partition))

    return dg.define_asset_job(
        name=summary_job_name(taxi),
        selection=dg.AssetSelection.assets(summary_key),
        partitions_def=trip_partitions(),
        description=f"Rebuilds a month of reports/{taxi.name}_monthly_summary.",
        tags={"taxi": taxi.name, "target": "reports"},
        config=dg.PartitionedConfig(
            partitions_def=trip_partitions(),
            run_config_for_partition_key_fn=lambda _partition: {},
            tags_for_partition_key_fn=tags_for_partition,
        ),
    )


def taxi_of_asset_key(asset_key: dg.AssetKey) -> TaxiType | None:
    """The taxi type an asset belongs to, from its key (``raw/green_tripdata_csv``)."""
    name = asset_key.path[-1]
    for taxi in TAXIS.values():
        if name.startswith(f"{taxi.name}_"):
            return taxi
    return None


# Built once: the schedules and sensors target these very objects.
TAXI_JOBS = build_jobs()
SUMMARY_JOBS = {
    taxi.name: build_summary_job(taxi, summary_asset_key(taxi)) for taxi in TAXIS.values()
}


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[*TAXI_JOBS.values(), *SUMMARY_JOBS.values()])
