"""The landing area: where a month's CSV lies between download and load."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import dagster as dg

from taxi_platform.lib.catalog import TaxiType


class LandingArea(dg.ConfigurableResource):
    """A folder of gunzipped month files, ``{root}/{taxi}/{taxi}_tripdata_{YYYY-MM}.csv``.

    Both the Postgres and the Google Cloud paths read the same file, so it is downloaded
    once per month. ``retention`` says what happens to it afterwards: ``delete`` removes it
    once every asset that reads it has materialized the month, ``keep`` leaves it.
    """

    root: str
    retention: str = "delete"

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    def csv_path(self, taxi: TaxiType, month_start: date) -> Path:
        return self.root_path / taxi.name / taxi.csv_name(month_start)

    def remove(self, taxi: TaxiType, month_start: date) -> int:
        """Delete a month's landed file and its sidecar; the bytes freed."""
        freed = 0
        csv_path = self.csv_path(taxi, month_start)
        for path in (csv_path, csv_path.with_name(csv_path.name + ".json")):
            if path.exists():
                freed += path.stat().st_size
                path.unlink()
        return freed

    def purge(self, taxi_names: list[str], before: date | None = None) -> list[tuple[Path, int]]:
        """Delete landed files (and leftovers of interrupted downloads) by hand.

        Only files whose names say which month they hold are touched; ``before`` keeps
        that month and later ones. Returns each deleted file with its size.
        """
        removed: list[tuple[Path, int]] = []
        for taxi_name in taxi_names:
            folder = self.root_path / taxi_name
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                month = _month_in_name(path.name, taxi_name)
                if month is None or (before is not None and month >= before):
                    continue
                size = path.stat().st_size
                path.unlink()
                removed.append((path, size))
        return removed

    def size_bytes(self) -> int:
        """Bytes held by the whole landing area (reported on the raw asset)."""
        if not self.root_path.exists():
            return 0
        return sum(path.stat().st_size for path in self.root_path.rglob("*") if path.is_file())


def _month_in_name(name: str, taxi_name: str) -> date | None:
    match = re.search(rf"{re.escape(taxi_name)}_tripdata_(\d{{4}})-(\d{{2}})\.csv", name)
    return date(int(match.group(1)), int(match.group(2)), 1) if match else None
