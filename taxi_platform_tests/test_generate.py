"""The generated months look like the real release files, quirks included."""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import pytest

from taxi_platform.lib.catalog import GREEN, TAXIS, YELLOW, TaxiType
from taxi_platform.lib.months import next_month
from taxi_platform.tools.generate import iter_rows, write_month, write_zone_lookup

ROWS = 3000
TIMESTAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
# Amounts print the shortest way: 8, 0.5, 11.8, 14.16, -2.5 (never 8.00 or 0.50).
AMOUNT = r"-?(?:0|[1-9]\d*)(?:\.\d?[1-9])?"
# Each column's text in the files, as seen in the real samples. Empty ids are allowed
# here; which months have them is tested separately.
COLUMN_FORMATS = {
    "VendorID": r"[1-9]?",
    "lpep_pickup_datetime": TIMESTAMP,
    "lpep_dropoff_datetime": TIMESTAMP,
    "tpep_pickup_datetime": TIMESTAMP,
    "tpep_dropoff_datetime": TIMESTAMP,
    "passenger_count": r"\d?",
    "trip_distance": r"(?:[1-9]\d*)?\.\d\d",  # .86, .00, 2.10: no leading zero
    "RatecodeID": r"(?:[1-9]\d?)?",
    "store_and_fwd_flag": r"[YN]?",
    "PULocationID": r"[1-9]\d{0,2}",
    "DOLocationID": r"[1-9]\d{0,2}",
    "payment_type": r"[1-6]?",
    "fare_amount": AMOUNT,
    "extra": AMOUNT,
    "mta_tax": AMOUNT,
    "tip_amount": AMOUNT,
    "tolls_amount": AMOUNT,
    "ehail_fee": "",
    "improvement_surcharge": AMOUNT,
    "total_amount": AMOUNT,
    "trip_type": r"[12]?",
    "congestion_surcharge": f"(?:{AMOUNT})?",
}
EMPTY_ID_COLUMNS = {
    "yellow": ("VendorID", "passenger_count", "RatecodeID", "payment_type", "store_and_fwd_flag"),
    "green": (
        "VendorID",
        "passenger_count",
        "RatecodeID",
        "payment_type",
        "store_and_fwd_flag",
        "trip_type",
    ),
}


def month_file(taxi: TaxiType, month: date, tmp_path: Path, rows: int = ROWS, seed: int = 0):
    return write_month(taxi, month, rows, tmp_path, seed=seed)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(path, "rt", newline="") as text:
        reader = csv.reader(text)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def assert_formats(header: list[str], rows: list[dict[str, str]], where: str) -> None:
    patterns = {name: re.compile(COLUMN_FORMATS[name]) for name in header}
    for number, row in enumerate(rows, start=2):
        for name, value in row.items():
            assert patterns[name].fullmatch(value), f"{where}:{number} {name}={value!r}"


@pytest.mark.parametrize("taxi", TAXIS.values(), ids=TAXIS.keys())
@pytest.mark.parametrize("rows", [0, 1, 7, ROWS])
def test_file_has_catalogue_header_and_exact_row_count(
    taxi: TaxiType, rows: int, tmp_path: Path
) -> None:
    path = month_file(taxi, date(2019, 3, 1), tmp_path, rows=rows)

    assert path == tmp_path / taxi.release_path(date(2019, 3, 1))
    raw = gzip.decompress(path.read_bytes())
    assert b"\r" not in raw and raw.endswith(b"\n")
    lines = raw.decode("ascii").splitlines()
    assert lines[0].split(",") == list(taxi.header)
    assert len(lines) == rows + 1
    assert all(line.count(",") == len(taxi.header) - 1 for line in lines)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    first = month_file(YELLOW, date(2020, 2, 1), tmp_path / "a", seed=7).read_bytes()
    again = month_file(YELLOW, date(2020, 2, 1), tmp_path / "b", seed=7).read_bytes()
    other_seed = month_file(YELLOW, date(2020, 2, 1), tmp_path / "c", seed=8).read_bytes()
    other_month = month_file(YELLOW, date(2020, 3, 1), tmp_path / "d", seed=7).read_bytes()

    assert first == again
    assert first != other_seed
    assert gzip.decompress(first).splitlines()[1:] != gzip.decompress(other_month).splitlines()[1:]


def test_iter_rows_is_the_file_text(tmp_path: Path) -> None:
    path = month_file(GREEN, date(2021, 1, 1), tmp_path, rows=500, seed=3)

    lines = list(iter_rows(GREEN, date(2021, 1, 1), 500, seed=3))

    assert "\n".join(lines) + "\n" == gzip.decompress(path.read_bytes()).decode("ascii")


@pytest.mark.parametrize("taxi", TAXIS.values(), ids=TAXIS.keys())
@pytest.mark.parametrize("month", [date(2019, 1, 1), date(2019, 6, 1), date(2021, 7, 1)])
def test_values_have_the_files_formats(taxi: TaxiType, month: date, tmp_path: Path) -> None:
    header, rows = read_rows(month_file(taxi, month, tmp_path))

    assert_formats(header, rows, taxi.gz_name(month))
    assert all(
        1 <= int(row[name]) <= 265 for row in rows for name in ("PULocationID", "DOLocationID")
    )
    assert {row.get("ehail_fee", "") for row in rows} == {""}
    # Below a mile the files drop the zero: ".86", never "0.86".
    assert any(row["trip_distance"].startswith(".") for row in rows)


def test_formats_are_those_of_the_real_samples(real_data: Path) -> None:
    """The format table above is checked against the real files, not only against us."""
    samples = [
        real_data / "green_tripdata_2019-01.head.csv",
        real_data / "yellow_tripdata_2020-07.sample.csv",
        real_data / "yellow_tripdata_2021-01.truncated.csv",
    ]
    for sample in samples:
        with sample.open(newline="") as text:
            reader = csv.reader(text)
            header = next(reader)
            rows = [
                dict(zip(header, row, strict=True)) for row in reader if len(row) == len(header)
            ]
        assert_formats(header, rows, sample.name)


def test_january_2019_has_empty_congestion_and_later_months_have_it(tmp_path: Path) -> None:
    for taxi in TAXIS.values():
        _, january = read_rows(month_file(taxi, date(2019, 1, 1), tmp_path))
        _, february = read_rows(month_file(taxi, date(2019, 2, 1), tmp_path))

        assert {row["congestion_surcharge"] for row in january} == {""}
        surcharges = {row["congestion_surcharge"].lstrip("-") for row in february}
        assert "" not in surcharges
        expected = {"0", "2.5"} if taxi is YELLOW else {"0", "2.5", "2.75", "0.75"}
        assert surcharges == expected


@pytest.mark.parametrize("taxi", TAXIS.values(), ids=TAXIS.keys())
def test_rows_with_empty_ids_appear_from_2020(taxi: TaxiType, tmp_path: Path) -> None:
    columns = EMPTY_ID_COLUMNS[taxi.name]
    _, rows_2019 = read_rows(month_file(taxi, date(2019, 12, 1), tmp_path))
    _, rows_2020 = read_rows(month_file(taxi, date(2020, 7, 1), tmp_path))

    assert not any(row[name] == "" for row in rows_2019 for name in columns)
    for name in columns:
        assert any(row[name] == "" for row in rows_2020), name
    # Like the real files, such a row still has its times, places and amounts.
    blank = next(row for row in rows_2020 if row["VendorID"] == "")
    assert all(blank[name] == "" for name in columns)
    assert blank[taxi.pickup_column] and blank["PULocationID"] and blank["total_amount"]


@pytest.mark.parametrize("taxi", TAXIS.values(), ids=TAXIS.keys())
def test_some_pickups_fall_outside_the_month(taxi: TaxiType, tmp_path: Path) -> None:
    month = date(2019, 3, 1)
    _, rows = read_rows(month_file(taxi, month, tmp_path))

    pickups = [datetime.fromisoformat(row[taxi.pickup_column]) for row in rows]
    outside = [p for p in pickups if not month <= p.date() < next_month(month)]
    assert 0 < len(outside) < len(rows) * 0.01
    assert any(p.date() < month and p.year == 2019 for p in outside)  # days before
    assert any(p.year in (2002, 2003, 2008, 2009) for p in outside)  # clock errors


@pytest.mark.parametrize("taxi", TAXIS.values(), ids=TAXIS.keys())
def test_files_hold_a_few_exact_duplicate_rows(taxi: TaxiType, tmp_path: Path) -> None:
    path = month_file(taxi, date(2020, 1, 1), tmp_path)
    lines = gzip.decompress(path.read_bytes()).decode("ascii").splitlines()[1:]

    repeats = sum(count - 1 for count in Counter(lines).values() if count > 1)
    assert 1 <= repeats < len(lines) * 0.01


def test_dropoff_follows_pickup_on_almost_every_row(tmp_path: Path) -> None:
    _, rows = read_rows(month_file(YELLOW, date(2019, 5, 1), tmp_path, rows=20_000))

    backwards = [row for row in rows if row["tpep_dropoff_datetime"] < row["tpep_pickup_datetime"]]
    assert len(backwards) < len(rows) * 0.001


def test_amounts_add_up_to_the_total(tmp_path: Path) -> None:
    _, rows = read_rows(month_file(GREEN, date(2019, 8, 1), tmp_path))
    parts = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount")
    parts += ("improvement_surcharge", "congestion_surcharge")

    for row in rows:
        cents = sum(round(float(row[name] or 0) * 100) for name in parts)
        assert cents == round(float(row["total_amount"]) * 100), row


def test_zone_lookup_is_shaped_like_the_real_one(tmp_path: Path) -> None:
    path = write_zone_lookup(tmp_path)

    assert path == tmp_path / "misc" / "taxi_zone_lookup.csv"
    raw = path.read_bytes()
    assert raw.startswith(b'"LocationID","Borough","Zone","service_zone"\r\n')
    rows = list(csv.DictReader(io.StringIO(raw.decode("ascii"), newline="")))
    assert [int(row["LocationID"]) for row in rows] == list(range(1, 266))
    assert {row["Borough"] for row in rows} == {
        "Bronx", "Brooklyn", "EWR", "Manhattan", "Queens", "Staten Island", "Unknown",
    }  # fmt: skip
    assert len({row["Zone"] for row in rows}) == 265
    assert path.read_bytes() == write_zone_lookup(tmp_path / "again").read_bytes()


def test_zone_lookup_has_the_real_boroughs_and_service_zones(
    real_data: Path, tmp_path: Path
) -> None:
    def roles(path: Path) -> Counter:
        with path.open(newline="") as text:
            return Counter((row["Borough"], row["service_zone"]) for row in csv.DictReader(text))

    real = real_data / "taxi_zone_lookup.csv"
    assert roles(write_zone_lookup(tmp_path)) == roles(real)
