"""The landing area: where a month's CSV lies between download and load."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg

from taxi_platform.catalog import TaxiType


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

    def size_bytes(self) -> int:
        """Bytes held by the whole landing area (reported on the raw asset)."""
        if not self.root_path.exists():
            return 0
        return sum(path.stat().st_size for path in self.root_path.rglob("*") if path.is_file())
