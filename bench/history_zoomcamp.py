"""``--with-zoomcamp``: the same months loaded by the zoomcamp flow's statements, as run.

Its own DDL and no index of ours (``bench.zoomcamp_sql``, ``with_our_indexes=False``), in a
database of its own on the same server, one month after the other as the flow's
concurrency limit of one runs them, after our backfill has finished (so neither load
slows the other). Each month is gunzipped to a temporary file, loaded and deleted: the
landing area holds one month at a time, as the flow's working directory does.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench import contenders
from bench.history_data import PlannedMonth

DATABASE_NAME = "history_zoomcamp"


def load_months(
    url: str, planned: list[PlannedMonth], mirror_folder: Path, log: Callable[[str], None]
) -> list[dict]:
    """Every planned month through the flow's statements; one record per month."""
    records = []
    rows_in_table: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="history_zoomcamp-", dir="/tmp") as scratch:
        for month in planned:
            csv_path = Path(scratch) / month.taxi.csv_name(month.month_start)
            with gzip.open(mirror_folder / month.key, "rb") as source, open(csv_path, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            contenders.checkpoint(url)
            timing = contenders.zoomcamp_load(
                url, month.taxi, month.month_start, csv_path, with_our_indexes=False
            )
            csv_path.unlink()
            before = rows_in_table.get(month.taxi.name, 0)
            rows_in_table[month.taxi.name] = before + timing.extra["rows_inserted"]
            records.append(
                {
                    "taxi": month.taxi.name,
                    "month": f"{month.month_start:%Y-%m}",
                    "rows": month.rows,
                    "rows_inserted": timing.extra["rows_inserted"],
                    "table_rows_before": before,
                    "seconds": round(timing.seconds, 3),
                    "steps": {name: round(value, 3) for name, value in timing.steps.items()},
                    "seconds_per_million_rows": round(timing.seconds / month.rows * 1e6, 3),
                }
            )
            log(
                f"  zoomcamp {month.key}: {timing.seconds:.1f} s "
                f"({timing.seconds / month.rows * 1e6:.2f} s per million rows, "
                f"table held {before:,})"
            )
    return records


def table_bytes(url: str, taxi_names: list[str]) -> dict[str, int]:
    with psycopg.connect(url) as connection:
        return {
            name: connection.execute(
                "select pg_total_relation_size(%s)", (f"public.{name}_tripdata",)
            ).fetchone()[0]
            for name in taxi_names
        }
