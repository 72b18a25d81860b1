"""The pools whose limit is not a matter of taste: given by the platform, not by hand.

``dagster.yaml`` gives every pool ``default_limit`` slots; Dagster 1.13 keeps a single
pool's own limit in the instance (``dagster instance concurrency set``), so a yaml file
cannot say it. BigQuery fails the second of two conflicting MERGEs into one table
("Could not serialize access ... due to concurrent update"), so the BigQuery merges get
one slot: runs that use BigQuery set it before their steps claim slots. A limit an
operator set by hand is theirs and is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

BIGQUERY_MERGE_POOL = "bigquery_merge"
PLATFORM_POOL_LIMITS = {BIGQUERY_MERGE_POOL: 1}


def apply_pool_limits(
    instance: dg.DagsterInstance, log: Callable[[str], None] | None = None
) -> None:
    """Give each of ``PLATFORM_POOL_LIMITS`` its limit, unless it has one set by hand."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    current = {limit.name: limit for limit in storage.get_pool_limits()}
    for pool, slots in PLATFORM_POOL_LIMITS.items():
        limit = current.get(pool)
        if limit is not None and (limit.limit == slots or not limit.from_default):
            continue
        storage.set_concurrency_slots(pool, slots)
        if log is not None:
            log(f"pool {pool}: {slots} slot(s) (one BigQuery MERGE into a table at a time)")
