"""What the server did during the backfill beside the loads' own statements.

The Postgres share of the CPU (``bench.history_cpu``) is one figure for every backend and
background process; these counters say where part of it went: the WAL written (and how
many full-page images in it: with data checksums on, the first change of a page after a
checkpoint, a hint bit included, logs the whole page), the checkpoints, and autovacuum's
vacuums and analyzes of each final table with the time they took (PostgreSQL 18 counts
it). A worker still running when the backfill ends is not counted yet.
"""

from __future__ import annotations

import psycopg

from taxi_platform.lib.catalog import TaxiType

SERVER_COUNTERS = (
    "select wal.wal_bytes, wal.wal_fpi, checkpointer.num_done, checkpointer.buffers_written "
    "from pg_stat_wal as wal, pg_stat_checkpointer as checkpointer"
)
TABLE_MAINTENANCE = (
    "select autovacuum_count, total_autovacuum_time / 1000, autoanalyze_count, "
    "total_autoanalyze_time / 1000 from pg_stat_all_tables where relid = to_regclass(%s)"
)


def server_counters(url: str) -> dict[str, float]:
    """The cluster's WAL and checkpoint counters since its statistics were reset."""
    with psycopg.connect(url) as connection:
        wal_bytes, fpi, checkpoints, buffers = connection.execute(SERVER_COUNTERS).fetchone()
    return {
        "wal_bytes": float(wal_bytes),
        "wal_full_page_images": fpi,
        "checkpoints": checkpoints,
        "checkpoint_buffers_written": buffers,
    }


def counters_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


def table_maintenance(url: str, taxis: list[TaxiType]) -> dict[str, dict]:
    """Autovacuum's work on each final table in this database (created for the run)."""
    maintenance = {}
    with psycopg.connect(url) as connection:
        for taxi in taxis:
            row = connection.execute(TABLE_MAINTENANCE, (f"public.{taxi.table}",)).fetchone()
            if row is None:
                continue
            vacuums, vacuum_seconds, analyzes, analyze_seconds = row
            maintenance[taxi.name] = {
                "autovacuums": vacuums,
                "autovacuum_seconds": round(float(vacuum_seconds), 1),
                "autoanalyzes": analyzes,
                "autoanalyze_seconds": round(float(analyze_seconds), 1),
            }
    return maintenance


def format_activity(activity: dict) -> str:
    server = activity["server"]
    tables = "; ".join(
        f"{taxi} {work['autovacuums']} autovacuums in {work['autovacuum_seconds']:,.0f} s, "
        f"{work['autoanalyzes']} autoanalyzes in {work['autoanalyze_seconds']:,.0f} s"
        for taxi, work in activity["tables"].items()
    )
    return (
        f"Postgres: WAL {server['wal_bytes'] / 1e9:,.1f} GB "
        f"({server['wal_full_page_images']:,.0f} full-page images), "
        f"{server['checkpoints']:,.0f} checkpoints writing "
        f"{server['checkpoint_buffers_written'] * 8192 / 1e9:,.1f} GB; {tables or 'no table'}"
    )
