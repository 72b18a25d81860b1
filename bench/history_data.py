"""The months the history benchmark loads: which, how many rows, generated once.

Each month gets its real row count (``bench.tlc_row_counts``) times the scale, at least one
row, and is written by the project's generator (the real files' shape, out-of-month
pickups and duplicate rows included) into a release mirror folder. A manifest beside the
files records what was generated, so a second run over the same ``--work-dir`` reuses
months already written with the same row count instead of generating 133M rows again
(the generator's output depends only on its arguments).
"""

from __future__ import annotations

import json
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

    @property
    def key(self) -> str:
        return self.taxi.release_path(self.month_start)


def planned_months(
    taxis: list[TaxiType], first: date, last: date, scale: float
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
        if manifest.get(month.key) == month.rows and (mirror_folder / month.key).exists():
            continue
        month_started = time.perf_counter()
        write_month(month.taxi, month.month_start, month.rows, mirror_folder)
        manifest[month.key] = month.rows
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        log(
            f"  generated {month.key}: {month.rows:,} rows in "
            f"{time.perf_counter() - month_started:.1f} s"
        )
    return time.perf_counter() - started
