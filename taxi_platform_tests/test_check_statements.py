"""The final table's check statements find what a plain scan would, at a month's cost.

``ids_shared_with_other_files`` looks only at the other files' rows at the month's pickups
(inside the month, at its out-of-month rows' exact pickups, without a pickup); an id shared
through any of the three must be counted, as the brute-force statement counts it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.sql import checks
from taxi_platform.lib.sql.postgres import MONTH_ROWS_PLAN_SETTINGS
from taxi_platform_tests.support.loaded_month import load_generated_month
from taxi_platform_tests.support.plans import large_reads, plan_nodes

ROWS = 5_000
MARCH, APRIL = date(2019, 3, 1), date(2019, 4, 1)
PARAMETERS = {"filename": GREEN.csv_name(MARCH), "month_start": MARCH, "month_end": APRIL}
COLUMNS = (
    "vendorid, lpep_pickup_datetime, lpep_dropoff_datetime, store_and_fwd_flag, ratecodeid, "
    "pulocationid, dolocationid, passenger_count, trip_distance, fare_amount, extra, mta_tax, "
    "tip_amount, tolls_amount, ehail_fee, improvement_surcharge, total_amount, payment_type, "
    "trip_type, congestion_surcharge"
)
# The statement the check ran before: every row of the month probes the whole table.
BRUTE_FORCE = (
    "select count(distinct month.unique_row_id) from green_tripdata as month "
    "where month.filename = %(filename)s and exists (select 1 from green_tripdata as other "
    "where other.unique_row_id = month.unique_row_id and other.lpep_pickup_datetime is not "
    "distinct from month.lpep_pickup_datetime "
    "and other.filename is distinct from month.filename)"
)


def load_march(url: str, folder: Path) -> None:
    load_generated_month(url, folder, GREEN, MARCH, ROWS, seed=11)


def copy_as_april(connection: psycopg.Connection, which_rows: str) -> int:
    """What a merge blind to the table would do: insert March rows again under April's name."""
    return connection.execute(
        f"insert into green_tripdata select unique_row_id, 'green_tripdata_2019-04.csv', "
        f"{COLUMNS} from green_tripdata where filename = %(filename)s and {which_rows}",
        PARAMETERS,
    ).rowcount


def shared_ids(connection: psycopg.Connection) -> int:
    with connection.transaction():
        for setting in MONTH_ROWS_PLAN_SETTINGS:
            connection.execute(setting)
        return connection.execute(checks.ids_shared_with_other_files(GREEN), PARAMETERS).fetchone()[
            0
        ]


def test_ids_shared_inside_outside_and_without_pickup_are_all_counted(
    database_url: str, tmp_path: Path
) -> None:
    load_march(database_url, tmp_path)
    with psycopg.connect(database_url, autocommit=True) as connection:
        assert shared_ids(connection) == 0
        # A row of March without a pickup time, the id Postgres would give it.
        connection.execute(
            f"insert into green_tripdata (unique_row_id, filename, {COLUMNS}) "
            f"select 'no-pickup-id', filename, vendorid, null, {COLUMNS.split(', ', 2)[2]} "
            "from green_tripdata where filename = %(filename)s limit 1",
            PARAMETERS,
        )
        copied = copy_as_april(
            connection,
            "unique_row_id in (select unique_row_id from green_tripdata "
            "where filename = %(filename)s and lpep_pickup_datetime >= %(month_start)s "
            "and lpep_pickup_datetime < %(month_end)s limit 2)",
        )
        copied += copy_as_april(
            connection,
            "unique_row_id = (select unique_row_id from green_tripdata "
            "where filename = %(filename)s and lpep_pickup_datetime < '2010-01-01' limit 1)",
        )
        copied += copy_as_april(connection, "lpep_pickup_datetime is null")
        assert copied == 4

        assert shared_ids(connection) == connection.execute(BRUTE_FORCE, PARAMETERS).fetchone()[0]
        assert shared_ids(connection) == 4


def test_the_month_is_probed_once_per_other_row_not_once_per_month_row(
    database_url: str, tmp_path: Path
) -> None:
    load_march(database_url, tmp_path)
    with psycopg.connect(database_url, autocommit=True) as connection:
        copy_as_april(connection, "lpep_pickup_datetime < %(month_start)s")
        others = connection.execute(
            "select count(*) from green_tripdata where filename <> %(filename)s", PARAMETERS
        ).fetchone()[0]
        with connection.transaction():
            for setting in MONTH_ROWS_PLAN_SETTINGS:
                connection.execute(setting)
            statement = checks.ids_shared_with_other_files(GREEN)
            explain = sql.SQL("explain (analyze, format json) ") + statement
            plan = connection.execute(explain, PARAMETERS).fetchone()[0][0]["Plan"]

    assert 0 < others < ROWS / 100
    nodes = list(plan_nodes(plan))
    assert not [node for node in nodes if node["Node Type"] == "Seq Scan"]
    month_lookups = [node for node in nodes if node.get("Alias") == "month"]
    assert month_lookups
    assert all(node["Actual Loops"] == others for node in month_lookups)


@pytest.mark.parametrize(
    "planner",
    ["no_statistics", "analyzed", "nested_loops_disabled"],
)
def test_the_month_rows_are_read_once_whatever_the_planner_prefers(
    database_url: str, tmp_path: Path, planner: str
) -> None:
    """One pass over the month's pages finds both the other files' rows inside the month
    and the month's own out-of-month pickups, and the lookups at those pickups stay
    lookups whatever the planner believes.

    Once a yellow table of 30M rows had statistics, the planner joined the month's edge
    pickups against the whole table instead of looking them up (10.9 s for a 7.9M-row
    month, against 1.6 s); a planner that prefers joins to nested loops does the same
    here, unless the lookups cannot be turned into a join.
    """
    load_march(database_url, tmp_path)
    with psycopg.connect(database_url, autocommit=True) as connection:
        copy_as_april(connection, "lpep_pickup_datetime < %(month_start)s")
        if planner == "analyzed":
            connection.execute("analyze green_tripdata")
        with connection.transaction():
            for setting in MONTH_ROWS_PLAN_SETTINGS:
                connection.execute(setting)
            if planner == "nested_loops_disabled":
                connection.execute("set local enable_nestloop to off")
            statement = checks.ids_shared_with_other_files(GREEN)
            explain = sql.SQL("explain (analyze, format json) ") + statement
            plan = connection.execute(explain, PARAMETERS).fetchone()[0][0]["Plan"]

    assert len(large_reads(plan, "green_tripdata", at_least=ROWS / 2)) == 1
