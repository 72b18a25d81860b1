"""The merge's id check finds every row the table already holds, wherever its pickup lies.

The merge compares the staged month only with the final table's rows at the month's
pickups: those inside the month, those at the exact pickups of its out-of-month rows, and
those without a pickup when the month has such rows. Each kind of earlier row a later file
can repeat is here once: an out-of-month row of January that falls in February, a January
row repeated by February with its January pickup, rows without a pickup, a far-off pickup;
next to rows that must still go in: a new trip at a second already taken, a trip twice in
one file (kept twice, as the zoomcamp MERGE keeps it), a new trip without a pickup.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import date, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.postgres_load import merge_month, stage_month
from taxi_platform.lib.sql import postgres as statements
from taxi_platform.lib.sql.postgres import COPIED_ROWS_PER_CANDIDATE_FOR_LOOKUPS
from taxi_platform_tests.support.loaded_month import load_generated_month
from taxi_platform_tests.support.plans import large_reads

JANUARY, FEBRUARY = date(2019, 1, 1), date(2019, 2, 1)


def trip(pickup: str, fare: str, vendor: str = "2") -> dict[str, str]:
    row = dict.fromkeys(GREEN.header, "")
    row.update(
        VendorID=vendor,
        lpep_pickup_datetime=pickup,
        lpep_dropoff_datetime=pickup.replace(":00:", ":20:") if pickup else "",
        PULocationID="74",
        DOLocationID="41",
        trip_distance="1.5",
        fare_amount=fare,
        total_amount=fare,
    )
    return row


IN_JANUARY = trip("2019-01-10 08:00:00", "7.5")
JANUARY_ROW_IN_FEBRUARY = trip("2019-02-03 09:00:00", "12")
NO_PICKUP = trip("", "5")
FAR_OFF = trip("2008-12-31 23:00:00", "3")


def load(url: str, month: date, rows: list[dict[str, str]], folder: Path) -> int:
    """Stage and merge the rows as the month's file; returns the rows inserted."""
    csv_path = folder / GREEN.csv_name(month)
    with open(csv_path, "w", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=GREEN.header)
        writer.writeheader()
        writer.writerows(rows)
    sha256 = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    with psycopg.connect(url) as connection:
        stage_month(connection, GREEN, month, csv_path, sha256, "test", force=True)
    with psycopg.connect(url) as connection:
        return merge_month(connection, GREEN, month, csv_path, "test").rows_inserted


def new_february_trips(count: int) -> list[dict[str, str]]:
    """Trips no earlier file holds, each at its own minute of February."""
    return [
        trip(f"2019-02-{1 + n // 1440:02d} {n // 60 % 24:02d}:{n % 60:02d}:30", "10")
        for n in range(count)
    ]


# January leaves four candidates for February: its row inside February's range, and the
# rows at the exact pickups of February's out-of-month rows (one of them without a pickup).
# Next to February's eight rows they are many, and are met in one hash join; with enough
# new trips beside them they are few, and are looked up one by one. Both find the same rows.
@pytest.mark.parametrize(
    "new_trips",
    [0, 4 * COPIED_ROWS_PER_CANDIDATE_FOR_LOOKUPS],
    ids=["candidates_many_hash_join", "candidates_few_lookups"],
)
def test_rows_already_held_are_found_wherever_their_pickup_lies(
    database_url: str, tmp_path: Path, new_trips: int
) -> None:
    january = [IN_JANUARY, JANUARY_ROW_IN_FEBRUARY, NO_PICKUP, FAR_OFF]
    assert load(database_url, JANUARY, january, tmp_path) == 4

    new_at_a_taken_second = trip(IN_JANUARY["lpep_pickup_datetime"], "8")
    twice_in_the_file = trip("2019-02-14 10:00:00", "9.5")
    new_without_pickup = trip("", "6")
    february = [
        JANUARY_ROW_IN_FEBRUARY,  # inside February's range
        IN_JANUARY,  # outside it: found at its exact pickup
        NO_PICKUP,
        FAR_OFF,
        new_at_a_taken_second,
        twice_in_the_file,
        twice_in_the_file,
        new_without_pickup,
        *new_february_trips(new_trips),
    ]
    assert load(database_url, FEBRUARY, february, tmp_path) == 4 + new_trips

    with psycopg.connect(database_url) as connection:
        by_file = dict(
            connection.execute(
                "select filename, count(*) from green_tripdata group by filename"
            ).fetchall()
        )
    assert by_file == {GREEN.csv_name(JANUARY): 4, GREEN.csv_name(FEBRUARY): 4 + new_trips}
    # The same file merged again (forced past the ledger) adds nothing.
    assert load(database_url, FEBRUARY, february, tmp_path) == 0


def test_into_an_empty_table_every_row_goes_in(database_url: str, tmp_path: Path) -> None:
    rows = [IN_JANUARY, IN_JANUARY, NO_PICKUP, NO_PICKUP, FAR_OFF]
    assert load(database_url, JANUARY, rows, tmp_path) == 5


GENERATED_ROWS = 5_000
MARCH, APRIL = date(2019, 3, 1), date(2019, 4, 1)
APRIL_RANGE = {"month_start": APRIL, "month_end": date(2019, 5, 1)}
OUT_OF_MONTH_ROWS = 3
# April's out-of-month pickups are taken from the middle of March, so that no plan finds
# them by reading the table from either end.
MID_MARCH = datetime(2019, 3, 16, 12)
TRIP_COLUMNS = ", ".join(column.postgres_name for column in GREEN.columns)
TRIP_COLUMNS_A_MONTH_LATER = TRIP_COLUMNS.replace(
    "lpep_pickup_datetime", "lpep_pickup_datetime + interval '1 month'", 1
)
IN_MARCH = "lpep_pickup_datetime >= %(march)s and lpep_pickup_datetime < %(month_start)s"


@pytest.mark.parametrize("planner", ["no_statistics", "analyzed", "nested_loops_disabled"])
def test_out_of_month_pickups_are_looked_up_whatever_the_planner_prefers(
    database_url: str, tmp_path: Path, planner: str
) -> None:
    """The earlier rows at the copied month's few out-of-month pickups are found by
    looking those pickups up, not by reading the whole table, whatever the planner
    believes: a planner that prefers joins (statistics of a large table, nested loops
    disabled here) would otherwise join them against every earlier row."""
    load_generated_month(database_url, tmp_path, GREEN, MARCH, GENERATED_ROWS, seed=5)
    with psycopg.connect(database_url, autocommit=True) as connection:
        if planner == "analyzed":
            connection.execute("analyze green_tripdata")
        with connection.transaction():
            # April's file as the merge sees it after its COPY: March's rows a month later,
            # and a few of March's rows at their own pickups (April's out-of-month rows).
            copied = connection.execute(
                f"insert into green_tripdata (unique_row_id, filename, {TRIP_COLUMNS}) "
                f"select unique_row_id || '-april', %(april_file)s, {TRIP_COLUMNS_A_MONTH_LATER} "
                f"from green_tripdata where {IN_MARCH} "
                f"union all (select unique_row_id, %(april_file)s, {TRIP_COLUMNS} "
                f"from green_tripdata where {IN_MARCH} "
                "order by abs(extract(epoch from lpep_pickup_datetime - %(mid_march)s)) "
                "limit %(out_of_month)s)",
                {
                    **APRIL_RANGE,
                    "march": MARCH,
                    "mid_march": MID_MARCH,
                    "april_file": GREEN.csv_name(APRIL),
                    "out_of_month": OUT_OF_MONTH_ROWS,
                },
            ).rowcount
            for setting in (*statements.SESSION_SETTINGS, *statements.MONTH_ROWS_PLAN_SETTINGS):
                connection.execute(setting)
            if planner == "nested_loops_disabled":
                connection.execute("set local enable_nestloop to off")
            connection.execute(statements.collect_rows_at_month_pickups(GREEN), APRIL_RANGE)
            before = connection.execute(statements.count_rows_at_pickups()).fetchone()[0]
            explain = sql.SQL("explain (analyze, format json) ")
            plan = connection.execute(
                explain + statements.add_rows_at_out_of_month_pickups(GREEN, APRIL), APRIL_RANGE
            ).fetchone()[0][0]["Plan"]
            added = connection.execute(statements.count_rows_at_pickups()).fetchone()[0] - before

    assert copied > GENERATED_ROWS / 2
    # At least the three March rows themselves sit at those pickups.
    assert added >= OUT_OF_MONTH_ROWS
    # The copied month is read once, for its out-of-month pickups; nothing else is big.
    assert len(large_reads(plan, "green_tripdata", at_least=copied / 2)) == 1
