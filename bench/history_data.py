"""The months the history benchmark loads: which, how many rows, generated once.

Each month gets its real row count (``bench.tlc_row_counts``) times the scale, at least one
row, and is written by the project's generator (the real files' shape, out-of-month
pickups and duplicate rows included) into a release mirror folder. A manifest beside the
files records what was generated, so a second run over the same ``--work-dir`` reuses
months already written with the same row count instead of generating 133M rows again
(the generator's output depends only on its arguments).

``overlap=True`` is the case where files' pickups meet: every month's file is generated over
the first month's days (each with a seed of its own, so its rows are its own), as a
re-published month or a user's own extra file would be. Real files overlap only at their
edges; this is where an id check whose cost grows with the rows already at those pickup
times would show.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench.tlc_row_counts import TLC_MONTHLY_ROWS
from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.months import months_between
from taxi_platform.tools.generate import write_month, write_zone_lookup

MANIFEST_NAME = "generated.json"


@dataclass(frozen=True)
class PlannedMonth:
    taxi: TaxiType
    month_start: date
    rows: int
    pickup_month: date | None = None  # None: the month's own days
    seed: int = 0

    @property
    def key(self) -> str:
        return self.taxi.release_path(self.month_start)

    @property
    def manifest_entry(self) -> list:
        pickups = self.pickup_month or self.month_start
        return [self.rows, f"{pickups:%Y-%m}", self.seed]


def planned_months(
    taxis: list[TaxiType], first: date, last: date, scale: float, overlap: bool = False
) -> list[PlannedMonth]:
    """Every month of every taxi type, at its real size times ``scale``."""
    planned = []
    for taxi in taxis:
        real_counts = TLC_MONTHLY_ROWS[taxi.name]
        for month_start in months_between(first, last):
            label = f"{month_start:%Y-%m}"
            if label not in real_counts:
                raise ValueError(
                    f"no real row count for {taxi.name} {label}: the history covers "
                    f"{min(real_counts)} to {max(real_counts)}"
                )
            rows = max(1, round(real_counts[label] * scale))
            if overlap:
                seed = len(planned) + 1
                planned.append(PlannedMonth(taxi, month_start, rows, first, seed))
            else:
                planned.append(PlannedMonth(taxi, month_start, rows))
    return planned


def generate(planned: list[PlannedMonth], mirror_folder: Path, log: Callable[[str], None]) -> float:
    """Write the months not generated before at the same size; the seconds spent."""
    mirror_folder.mkdir(parents=True, exist_ok=True)
    manifest_path = mirror_folder / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    started = time.perf_counter()
    write_zone_lookup(mirror_folder)
    for month in planned:
        if (
            _already_generated(manifest.get(month.key), month)
            and (mirror_folder / month.key).exists()
        ):
            continue
        month_started = time.perf_counter()
        _write(month, mirror_folder)
        manifest[month.key] = month.manifest_entry
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        log(
            f"  generated {month.key}: {month.rows:,} rows in "
            f"{time.perf_counter() - month_started:.1f} s"
        )
    return time.perf_counter() - started


def _already_generated(entry: object, month: PlannedMonth) -> bool:
    # A bare row count is what a month over its own days was recorded as at first.
    return entry == month.manifest_entry or (
        entry == month.rows and month.pickup_month is None and month.seed == 0
    )


def _write(month: PlannedMonth, mirror_folder: Path) -> None:
    """The generator's file, moved to the month's release path if its pickups are another's."""
    if month.pickup_month is None:
        write_month(month.taxi, month.month_start, month.rows, mirror_folder, month.seed)
        return
    with tempfile.TemporaryDirectory(dir=mirror_folder, prefix=".overlap-") as scratch:
        written = write_month(month.taxi, month.pickup_month, month.rows, Path(scratch), month.seed)
        target = mirror_folder / month.key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, target)
