"""The merge leaves the final table's indexes ready for the month's checks.

The checks find a month's rows through the BRIN index on ``filename``; pages that index has
not summarized are read by every such lookup, so a merge that left them to autovacuum made
each check read other months too, more of them the larger the table (bench.history).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.postgres_load import merge_month, stage_month
from taxi_platform.lib.sql import checks
from taxi_platform.lib.sql.postgres import MONTH_ROWS_PLAN_SETTINGS
from taxi_platform.tools.generate import write_month
from taxi_platform_tests.support.plans import plan_nodes

ROWS = 20_000


def land(month_start: date, folder: Path) -> tuple[Path, str]:
    """A generated month, gunzipped as the raw asset lands it, and its sha256."""
    gz_path = write_month(GREEN, month_start, ROWS, folder / "mirror")
    csv_path = folder / GREEN.csv_name(month_start)
    with gzip.open(gz_path, "rb") as source, open(csv_path, "wb") as target:
        shutil.copyfileobj(source, target)
    return csv_path, hashlib.sha256(csv_path.read_bytes()).hexdigest()


def load(url: str, month_start: date, folder: Path) -> None:
    csv_path, sha256 = land(month_start, folder)
    with psycopg.connect(url) as connection:
        stage_month(connection, GREEN, month_start, csv_path, sha256, "test")
    with psycopg.connect(url) as connection:
        merge_month(connection, GREEN, month_start, csv_path, "test")


def test_merge_leaves_no_filename_range_unsummarized(database_url: str, tmp_path: Path) -> None:
    for month_start in (date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)):
        load(database_url, month_start, tmp_path)

    with psycopg.connect(database_url, autocommit=True) as connection:
        left_over = connection.execute(
            "select brin_summarize_new_values('public.green_tripdata_filename_brin'::regclass)"
        ).fetchone()[0]
        with connection.transaction():
            # The checks' settings: left alone, the planner reads the whole table instead.
            for setting in MONTH_ROWS_PLAN_SETTINGS:
                connection.execute(setting)
            plan = connection.execute(
                sql.SQL("explain (analyze, format json) ") + checks.month_summary(GREEN),
                {
                    "filename": GREEN.csv_name(date(2019, 1, 1)),
                    "month_start": date(2019, 1, 1),
                    "month_end": date(2019, 2, 1),
                },
            ).fetchone()[0]

    assert left_over == 0
    # The January lookup reads January's pages: the rows it discards are those sharing its
    # last block range with February, far fewer than another month's 20,000.
    heap_scan = next(
        node for node in plan_nodes(plan[0]["Plan"]) if node["Node Type"] == "Bitmap Heap Scan"
    )
    assert heap_scan["Actual Rows"] * (heap_scan.get("Actual Loops") or 1) >= ROWS
    assert heap_scan.get("Rows Removed by Index Recheck", 0) < ROWS / 4
