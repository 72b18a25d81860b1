"""The write-once probe's ids are the zoomcamp ids, on awkward values too.

``bench.write_once`` computes the ids in DuckDB from Postgres's text forms of the values.
Its timings mean something only if every id equals the one Postgres computes, so this
feeds both engines the values where their printing differs (whole doubles, the 1e15
decade, signed zero, NaN and the infinities, fractional and odd timestamps) and a few
thousand random doubles of every magnitude, and asks Postgres to recompute each id.
"""

from __future__ import annotations

import csv
import random
from datetime import date
from pathlib import Path

import duckdb
import psycopg
import pytest

from bench.write_once import (
    copy_ids_file,
    create_final_table,
    file_columns,
    ids_postgres_disagrees_with,
    run_probe,
    write_ids_file,
)
from taxi_platform.lib.catalog import YELLOW
from taxi_platform.local.embedded_postgres import EmbeddedPostgres

JANUARY = date(2019, 1, 1)
AWKWARD_DOUBLES = [
    "1", "1.0", "0.86", ".20", "-12.50", "0", "-0", "-0.0", "1e15", "1.5e15", "-1.5e15",
    "1234567890123456", "1000000000000000.1", "9007199254740991", "-9007199254740991",
    "123456789012345.6", "99999999999999.9", "1e-5", "1.5e-05", "0.0001", "0.00012", "5e-324",
    "123456.789e3", "NaN", "Infinity", "-Infinity", "",
]  # fmt: skip
AWKWARD_TIMESTAMPS = [
    "2019-01-01 00:10:16", "2019-01-01 00:10:16.5", "2019-01-01 00:10:16.000120",
    "2019-01-01T00:10:16", "2019-01-01 24:00:00", "2019-01-01", "2019-01-31 23:59:59.999999",
    "",
]  # fmt: skip


def random_doubles(count: int, seed: int = 16) -> list[str]:
    """Shortest round-trip text of doubles from 1e-8 to 2^53, as files might print them."""
    rng = random.Random(seed)
    values = [rng.uniform(-1, 1) * 10 ** rng.uniform(-8, 15.95) for _ in range(count)]
    return [repr(value) for value in values] + [f"{value:.2f}" for value in values[:100]]


def write_awkward_month(path: Path, doubles: list[str] | None = None) -> int:
    doubles = AWKWARD_DOUBLES + random_doubles(3000) if doubles is None else doubles
    header = [column.name for column in YELLOW.columns]
    with open(path, "w", newline="") as csv_file:
        writer = csv.writer(csv_file)
        writer.writerow(header)
        for number, fare in enumerate(doubles):
            row = dict.fromkeys(header, "")
            row.update(
                VendorID=str(number % 3),
                tpep_pickup_datetime=AWKWARD_TIMESTAMPS[number % len(AWKWARD_TIMESTAMPS)],
                tpep_dropoff_datetime=AWKWARD_TIMESTAMPS[(number + 3) % len(AWKWARD_TIMESTAMPS)],
                PULocationID=str(number % 265),
                DOLocationID="" if number % 7 == 0 else str(number % 263),
                fare_amount=fare,
                trip_distance=doubles[-1 - number],
            )
            writer.writerow(row.values())
    return len(doubles)


def test_duckdb_ids_equal_postgres_ids_on_awkward_values(database_url: str, tmp_path: Path) -> None:
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    rows = write_awkward_month(landed)
    ids_path = tmp_path / "ids.csv"
    assert write_ids_file(YELLOW, JANUARY, landed, ids_path) == rows
    create_final_table(database_url, YELLOW)
    assert copy_ids_file(database_url, YELLOW, ids_path, file_columns(YELLOW, landed)) == rows
    assert ids_postgres_disagrees_with(database_url, YELLOW) == 0


def test_a_double_beyond_two_to_the_53_stops_the_pass_naming_it(tmp_path: Path) -> None:
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed, doubles=["1.5", "5.152002306108486e+16"])
    with pytest.raises(
        duckdb.Error, match=r"fare_amount: a value beyond 2\^53.*5\.152002306108486e\+16"
    ):
        write_ids_file(YELLOW, JANUARY, landed, tmp_path / "ids.csv")


def test_a_changed_id_is_noticed(database_url: str, tmp_path: Path) -> None:
    """The comparison itself can fail: one id altered after the load is counted."""
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed)
    ids_path = tmp_path / "ids.csv"
    write_ids_file(YELLOW, JANUARY, landed, ids_path)
    create_final_table(database_url, YELLOW)
    copy_ids_file(database_url, YELLOW, ids_path, file_columns(YELLOW, landed))
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "update public.yellow_tripdata set unique_row_id = md5('x') "
            "where ctid = (select min(ctid) from public.yellow_tripdata)"
        )
    assert ids_postgres_disagrees_with(database_url, YELLOW) == 1


def test_probe_runs_on_a_generated_month(postgres_server: EmbeddedPostgres, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    summary = run_probe(YELLOW, rows=2000, repeat=1, server=postgres_server, work=tmp_path)
    assert summary["rows"] == 2000
    assert summary["id_mismatches"] == [0]
    assert set(summary["median_seconds"]) == {
        "durable_floor",
        "ids_pass",
        "write_once_copy",
        "ours_sql",
    }
