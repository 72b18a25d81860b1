"""A generated month loaded the platform's way (stage, then merge), without Dagster: for
tests of the statements that read the final table afterwards."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from datetime import date
from pathlib import Path

import psycopg

from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.postgres_load import merge_month, stage_month
from taxi_platform.tools.generate import write_month


def stage_generated_month(
    url: str, folder: Path, taxi: TaxiType, month: date, rows: int, seed: int
) -> Path:
    """Generate, land and stage a month; the landed CSV, whose staged file waits for the merge."""
    gz_path = write_month(taxi, month, rows, folder / "mirror", seed=seed)
    csv_path = folder / taxi.csv_name(month)
    with gzip.open(gz_path, "rb") as source, open(csv_path, "wb") as target:
        shutil.copyfileobj(source, target)
    sha256 = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    with psycopg.connect(url) as connection:
        stage_month(connection, taxi, month, csv_path, sha256, "test")
    return csv_path


def load_generated_month(
    url: str, folder: Path, taxi: TaxiType, month: date, rows: int, seed: int
) -> None:
    csv_path = stage_generated_month(url, folder, taxi, month, rows, seed)
    with psycopg.connect(url) as connection:
        merge_month(connection, taxi, month, csv_path, "test")
