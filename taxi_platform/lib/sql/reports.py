"""The statements of the reports: the zone lookup and the monthly summaries.

The summary is computed where the data is, in one ``INSERT ... SELECT`` over the month's
rows of the final table (found by ``filename``), so a yellow month of 7.7M rows never
leaves Postgres. Identifiers come from the catalogue; values are parameters.
"""

from __future__ import annotations

from psycopg import sql

from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.sql.postgres import LEDGER_SCHEMA, final_table, pickup_identifier

REPORTS_SCHEMA = "reports"
# The releases' lookup (misc/taxi_zone_lookup.csv), kept beside the load ledger.
ZONES_TABLE_NAME = f"{LEDGER_SCHEMA}.zones"
ZONES_TABLE = sql.Identifier(*ZONES_TABLE_NAME.split("."))
ZONE_COLUMNS = ("locationid", "borough", "zone", "service_zone")


def summary_table_name(taxi: TaxiType) -> str:
    """``reports.{taxi}_monthly_summary``, as the asset's metadata names it."""
    return f"{REPORTS_SCHEMA}.{taxi.name}_monthly_summary"


def summary_table(taxi: TaxiType) -> sql.Identifier:
    return sql.Identifier(*summary_table_name(taxi).split("."))


def zone_setup() -> list[sql.Composable]:
    return [
        sql.SQL("create schema if not exists {}").format(sql.Identifier(LEDGER_SCHEMA)),
        sql.SQL(
            "create table if not exists {zones} (locationid integer primary key, "
            "borough text, zone text, service_zone text)"
        ).format(zones=ZONES_TABLE),
    ]


def count_zones() -> sql.Composable:
    return sql.SQL("select count(*) from {}").format(ZONES_TABLE)


def truncate_zones() -> sql.Composable:
    return sql.SQL("truncate {}").format(ZONES_TABLE)


def copy_zones() -> sql.Composable:
    """COPY of the lookup file as published: quoted fields, CRLF lines, a header."""
    return sql.SQL("copy {zones} ({columns}) from stdin with (format csv, header true)").format(
        zones=ZONES_TABLE,
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in ZONE_COLUMNS),
    )


def boroughs() -> sql.Composable:
    return sql.SQL("select borough, count(*) from {} group by borough order by borough").format(
        ZONES_TABLE
    )


def summary_setup(taxi: TaxiType) -> list[sql.Composable]:
    return [
        sql.SQL("create schema if not exists {}").format(sql.Identifier(REPORTS_SCHEMA)),
        sql.SQL(
            "create table if not exists {summary} ("
            "month date not null, pickup_date date not null, pickup_borough text not null, "
            "trips bigint not null, revenue numeric(14, 2) not null, "
            "average_distance_miles numeric(10, 3), average_duration_minutes numeric(10, 2), "
            "primary key (month, pickup_date, pickup_borough))"
        ).format(summary=summary_table(taxi)),
    ]


def delete_month(taxi: TaxiType) -> sql.Composable:
    return sql.SQL("delete from {summary} where month = %(month_start)s").format(
        summary=summary_table(taxi)
    )


# The summary reads one month and aggregates it by hashing, on one core. Left alone, the
# planner walks the pickup btree (a heap visit per row, in pickup order), sorts the month
# twice on disk and starts two parallel workers: about 8 s of CPU for a 7.7M-row yellow
# month, against 2.4 s this way (``bench.history``'s summaries run beside its loads on two
# cores). A bitmap scan reads the month's pages in order, through either index, whatever
# the statistics know of a month just merged.
SUMMARY_PLAN_SETTINGS = (
    sql.SQL("set local enable_seqscan to off"),
    sql.SQL("set local enable_indexscan to off"),
    sql.SQL("set local enable_sort to off"),
    sql.SQL("set local max_parallel_workers_per_gather to 0"),
)


def insert_month(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """One row per pickup day and borough of the month's file.

    Pickups outside the month (every file has some, see the asset check) are left out:
    the summary describes the month the file is for. Revenue is ``total_amount``; a
    duration is dropoff minus pickup. Zones missing from the lookup count as ``Unknown``.

    The month's rows are first summed per day and pickup zone (a few thousand groups),
    and only those are joined to the zones: averages are carried as sums and counts of
    the values present, so each equals ``avg`` over the rows. Durations are summed as
    doubles (``date_part``: whole seconds, exact) and divided as ``numeric``, as
    ``avg(extract(epoch ...))`` would, without summing 7M numerics.
    Run under ``SUMMARY_PLAN_SETTINGS``. Parameters: ``filename``, ``month_start``,
    ``month_end``.
    """
    pickup = pickup_identifier(taxi)
    dropoff = sql.Identifier(taxi.column(taxi.dropoff_column).postgres_name)
    return sql.SQL(
        "insert into {summary} (month, pickup_date, pickup_borough, trips, revenue, "
        "average_distance_miles, average_duration_minutes) "
        "select %(month_start)s::date, by_zone.pickup_date, "
        "coalesce(zones.borough, 'Unknown'), sum(by_zone.trips), "
        "round(coalesce(sum(by_zone.revenue), 0)::numeric, 2), "
        "round((sum(by_zone.distance) / sum(by_zone.distances))::numeric, 3), "
        "round(sum(by_zone.seconds)::numeric / sum(by_zone.durations) / 60, 2) "
        "from (select {pickup}::date as pickup_date, pulocationid, count(*) as trips, "
        "sum(total_amount) as revenue, sum(trip_distance) as distance, "
        "count(trip_distance)::double precision as distances, "
        "sum(date_part('epoch', {dropoff} - {pickup})) as seconds, "
        "count({dropoff}) as durations "
        "from {final} where filename = %(filename)s "
        "and {pickup} >= %(month_start)s and {pickup} < %(month_end)s "
        "group by 1, 2) as by_zone "
        "left join {zones} as zones on zones.locationid::text = by_zone.pulocationid "
        "group by 1, 2, 3"
    ).format(
        summary=summary_table(taxi),
        final=final_table(taxi, final_schema),
        zones=ZONES_TABLE,
        pickup=pickup,
        dropoff=dropoff,
    )


def month_rows(taxi: TaxiType) -> sql.Composable:
    """The month's summary rows, busiest first (the preview in the asset's metadata)."""
    return sql.SQL(
        "select pickup_date, pickup_borough, trips, revenue, average_distance_miles, "
        "average_duration_minutes from {summary} where month = %(month_start)s "
        "order by trips desc, pickup_date, pickup_borough"
    ).format(summary=summary_table(taxi))


def month_totals(taxi: TaxiType) -> sql.Composable:
    """Totals of the month: rows, trips, revenue, days and boroughs covered."""
    return sql.SQL(
        "select count(*), coalesce(sum(trips), 0), coalesce(sum(revenue), 0), "
        "count(distinct pickup_date), count(distinct pickup_borough) "
        "from {summary} where month = %(month_start)s"
    ).format(summary=summary_table(taxi))
