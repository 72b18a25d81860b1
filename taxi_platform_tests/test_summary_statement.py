"""The monthly summary's statement gives what a plain aggregate over the month's rows gives,
and reads the month on one core, in page order, without sorting it.

It sums per day and pickup zone first and averages from sums and counts, so the nulls a
month holds (no distance, no dropoff, no amount) and zones missing from the lookup must
come out as ``avg`` and the left join of every row would have them.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import psycopg

from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.postgres_load import apply_settings
from taxi_platform.lib.sql import reports
from taxi_platform.tools.generate import write_zone_lookup
from taxi_platform_tests.support.loaded_month import load_generated_month

ROWS = 20_000
MARCH = date(2019, 3, 1)
PARAMETERS = {
    "filename": GREEN.csv_name(MARCH),
    "month_start": MARCH,
    "month_end": date(2019, 4, 1),
}
# Every row of the month joined to its zone, then averaged: what the summary must equal.
ROW_BY_ROW = (
    "select lpep_pickup_datetime::date, coalesce(zones.borough, 'Unknown'), count(*), "
    "round(coalesce(sum(total_amount), 0)::numeric, 2), round(avg(trip_distance)::numeric, 3), "
    "round((avg(extract(epoch from lpep_dropoff_datetime - lpep_pickup_datetime)) / 60)"
    "::numeric, 2) "
    "from green_tripdata as trips left join taxi_platform.zones as zones "
    "on zones.locationid::text = trips.pulocationid "
    "where filename = %(filename)s and lpep_pickup_datetime >= %(month_start)s "
    "and lpep_pickup_datetime < %(month_end)s group by 1, 2"
)
SUMMARY_ROWS = (
    "select pickup_date, pickup_borough, trips, revenue, average_distance_miles, "
    "average_duration_minutes from reports.green_monthly_summary where month = %(month_start)s"
)


def load_zones(connection: psycopg.Connection, folder: Path) -> None:
    lookup = write_zone_lookup(folder)
    for statement in reports.zone_setup():
        connection.execute(statement)
    with connection.cursor().copy(reports.copy_zones()) as copy:
        copy.write(lookup.read_bytes())


def blank_some_values(connection: psycopg.Connection) -> None:
    """Nulls where averages and sums must skip them, and a zone the lookup lacks; one
    day's every distance blank, so that its average is null as ``avg``'s would be."""
    for column, every in (
        ("trip_distance", 7),
        ("lpep_dropoff_datetime", 11),
        ("total_amount", 13),
    ):
        connection.execute(
            f"update green_tripdata set {column} = null where ctid in (select ctid from "
            f"green_tripdata where hashtext(unique_row_id) % {every} = 0)"
        )
    connection.execute("update green_tripdata set pulocationid = '999' where vendorid = '1'")
    connection.execute(
        "update green_tripdata set trip_distance = null "
        "where lpep_pickup_datetime::date = '2019-03-05'"
    )


def summarize(connection: psycopg.Connection) -> None:
    with connection.transaction():
        for statement in reports.summary_setup(GREEN):
            connection.execute(statement)
        connection.execute(reports.delete_month(GREEN), PARAMETERS)
        apply_settings(connection, reports.SUMMARY_PLAN_SETTINGS)
        connection.execute(reports.insert_month(GREEN), PARAMETERS)


def test_summary_equals_the_row_by_row_aggregate(database_url: str, tmp_path: Path) -> None:
    load_generated_month(database_url, tmp_path, GREEN, MARCH, ROWS, seed=5)
    with psycopg.connect(database_url, autocommit=True) as connection:
        load_zones(connection, tmp_path)
        blank_some_values(connection)
        summarize(connection)
        expected = sorted(connection.execute(ROW_BY_ROW, PARAMETERS).fetchall())
        found = sorted(connection.execute(SUMMARY_ROWS, PARAMETERS).fetchall())

    assert found == expected
    assert any(row[1] == "Unknown" for row in found)
    assert any(row[4] is None for row in found)  # 5 March: no distance at all
    assert sum(row[2] for row in found) < ROWS  # out-of-month pickups left out


def test_summary_reads_the_month_in_page_order_on_one_core(
    database_url: str, tmp_path: Path
) -> None:
    load_generated_month(database_url, tmp_path, GREEN, MARCH, ROWS, seed=5)
    with psycopg.connect(database_url, autocommit=True) as connection:
        load_zones(connection, tmp_path)
        for statement in reports.summary_setup(GREEN):
            connection.execute(statement)
        with connection.transaction():
            apply_settings(connection, reports.SUMMARY_PLAN_SETTINGS)
            plan = "\n".join(
                row[0]
                for row in connection.execute(
                    psycopg.sql.SQL("explain ") + reports.insert_month(GREEN), PARAMETERS
                )
            )

    assert "Bitmap Heap Scan on green_tripdata" in plan
    for avoided in ("Seq Scan on green_tripdata", "Index Scan using", "Sort", "Gather"):
        assert avoided not in plan, plan
