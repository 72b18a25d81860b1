"""The months bench.history generates: real sizes times the scale, reused, and overlapping
on request (every file over the first month's days, as a re-published month would be)."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from datetime import date
from pathlib import Path

from bench.history_data import generate, planned_months
from bench.tlc_row_counts import TLC_MONTHLY_ROWS
from taxi_platform.lib.catalog import GREEN

FIRST, LAST = date(2019, 1, 1), date(2019, 3, 1)
SCALE = 0.002


def pickup_months(path: Path) -> Counter:
    """How many rows of a generated file are picked up in each month (YYYY-MM)."""
    with gzip.open(path, "rt", newline="") as lines:
        rows = csv.DictReader(lines)
        return Counter(row[GREEN.pickup_column][:7] for row in rows)


def test_each_month_is_its_real_row_count_times_the_scale() -> None:
    planned = planned_months([GREEN], FIRST, LAST, SCALE)

    assert [(m.month_start, m.rows) for m in planned] == [
        (month, round(TLC_MONTHLY_ROWS["green"][f"{month:%Y-%m}"] * SCALE))
        for month in (date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1))
    ]
    assert (
        sum(
            TLC_MONTHLY_ROWS[taxi][month]
            for taxi in TLC_MONTHLY_ROWS
            for month in TLC_MONTHLY_ROWS[taxi]
        )
        == 132_854_099
    )


def test_months_generated_before_at_the_same_size_are_reused(tmp_path: Path) -> None:
    planned = planned_months([GREEN], FIRST, LAST, SCALE)
    generate(planned, tmp_path, log=lambda line: None)
    written = {m.key: (tmp_path / m.key).stat().st_mtime_ns for m in planned}
    lines: list[str] = []

    generate(planned, tmp_path, log=lines.append)

    assert lines == []
    assert {m.key: (tmp_path / m.key).stat().st_mtime_ns for m in planned} == written


def test_overlapping_months_are_all_picked_up_in_the_first_month(tmp_path: Path) -> None:
    own = planned_months([GREEN], FIRST, LAST, SCALE)
    overlapping = planned_months([GREEN], FIRST, LAST, SCALE, overlap=True)
    generate(own, tmp_path / "own", log=lambda line: None)
    generate(overlapping, tmp_path / "overlap", log=lambda line: None)

    march = GREEN.release_path(date(2019, 3, 1))
    assert pickup_months(tmp_path / "own" / march).most_common(1)[0][0] == "2019-03"
    assert pickup_months(tmp_path / "overlap" / march).most_common(1)[0][0] == "2019-01"
    files = [(tmp_path / "overlap" / m.key).read_bytes() for m in overlapping]
    assert len(set(files)) == len(files)  # each month's rows are its own
