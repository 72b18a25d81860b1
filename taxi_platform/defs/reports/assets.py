"""``raw/taxi_zone_lookup`` and ``reports/{taxi}_monthly_summary``: what users look at.

The summary answers the questions the zoomcamp course asks of each month (trips, revenue,
distance and duration per day and pickup borough) and is rebuilt for a month whenever
that month lands in the final table (the ``{taxi}_monthly_summary_sensor`` requests it).
"""

import dagster as dg
import psycopg

from taxi_platform.defs.resources import trip_partitions
from taxi_platform.defs.trips.postgres import DATABASE_POOL
from taxi_platform.lib.asset_keys import (
    ASSET_OWNERS,
    PARTITION_ROW_COUNT,
    ZONE_LOOKUP_KEY,
    postgres_table_key,
    summary_asset_key,
)
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.months import month_start
from taxi_platform.lib.postgres_load import apply_settings
from taxi_platform.lib.sql import reports as statements
from taxi_platform.lib.sql.postgres import month_range
from taxi_platform.resources import PostgresResource, TripFileSource
from taxi_platform.resources.trip_source import MonthNotPublished, SourceUnavailable

ZONE_LOOKUP_PATH = "misc/taxi_zone_lookup.csv"
PREVIEW_ROWS = 15


def load_zone_lookup(connection: psycopg.Connection, trip_source: TripFileSource) -> int:
    """Replace ``taxi_platform.zones`` with the releases' lookup file; the zones loaded.

    Truncate and COPY commit together, so a failed download leaves the previous lookup.
    """
    url = trip_source.url_for_path(ZONE_LOOKUP_PATH)
    try:
        with connection.transaction():
            for statement in statements.zone_setup():
                connection.execute(statement)
            connection.execute(statements.truncate_zones())
            with trip_source.open_stream(url) as response:
                with connection.cursor().copy(statements.copy_zones()) as copy:
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        copy.write(chunk)
            return connection.execute(statements.count_zones()).fetchone()[0]
    except (MonthNotPublished, SourceUnavailable) as error:
        raise dg.Failure(description=f"zone lookup {url}: {error}") from None


def ensure_zone_lookup(
    context: dg.AssetExecutionContext, connection: psycopg.Connection, trip_source: TripFileSource
) -> int:
    """The zones, loaded first if the table is empty: a summary must not need a manual
    materialization of the lookup before the first month. Loaded here, the lookup's own
    materialization is recorded too, so its page says when, and the UI stops warning
    that the summary's upstream was never materialized."""
    with connection.transaction():
        for statement in statements.zone_setup():
            connection.execute(statement)
    zones = connection.execute(statements.count_zones()).fetchone()[0]
    if zones:
        return zones
    zones = load_zone_lookup(connection, trip_source)
    context.log_event(
        dg.AssetMaterialization(
            asset_key=ZONE_LOOKUP_KEY,
            description=f"loaded on first use by {context.asset_key.to_user_string()}",
            metadata={
                "url": dg.MetadataValue.url(trip_source.url_for_path(ZONE_LOOKUP_PATH)),
                "dagster/row_count": zones,
            },
        )
    )
    return zones


@dg.asset(
    key=ZONE_LOOKUP_KEY,
    group_name="reports",
    kinds={"csv", "postgres"},
    owners=ASSET_OWNERS,
    code_version="1",
    metadata={"dagster/table_name": statements.ZONES_TABLE_NAME},
    description=(
        "The TLC taxi zone lookup (LocationID, Borough, Zone, service_zone) from the releases' "
        "misc/taxi_zone_lookup.csv, loaded into taxi_platform.zones for the reports' joins."
    ),
)
def taxi_zone_lookup(
    postgres: PostgresResource, trip_source: TripFileSource
) -> dg.MaterializeResult:
    with postgres.connect() as connection:
        zones = load_zone_lookup(connection, trip_source)
        boroughs = connection.execute(statements.boroughs()).fetchall()
    return dg.MaterializeResult(
        metadata={
            "url": dg.MetadataValue.url(trip_source.url_for_path(ZONE_LOOKUP_PATH)),
            "dagster/row_count": zones,
            "zones_per_borough": dg.MetadataValue.json(dict(boroughs)),
        }
    )


def build_report_assets(taxi: TaxiType) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=summary_asset_key(taxi),
        deps=[postgres_table_key(taxi), ZONE_LOOKUP_KEY],
        partitions_def=trip_partitions(),
        group_name="reports",
        kinds={"postgres"},
        pool=DATABASE_POOL,
        tags={"taxi": taxi.name},
        owners=ASSET_OWNERS,
        code_version="1",
        metadata={"dagster/table_name": statements.summary_table_name(taxi)},
        description=(
            f"reports.{taxi.name}_monthly_summary: the month's {taxi.name} trips per pickup day "
            "and pickup borough (trips, revenue = total_amount, average distance and duration). "
            "Pickups outside the month are left out."
        ),
    )
    def monthly_summary(
        context: dg.AssetExecutionContext, postgres: PostgresResource, trip_source: TripFileSource
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        parameters = {"filename": taxi.csv_name(month), **month_range(month)}
        with postgres.connect() as connection:
            zones = ensure_zone_lookup(context, connection, trip_source)
            with connection.transaction():
                for statement in statements.summary_setup(taxi):
                    connection.execute(statement)
                connection.execute(statements.delete_month(taxi), parameters)
                apply_settings(connection, statements.SUMMARY_PLAN_SETTINGS)
                connection.execute(statements.insert_month(taxi, postgres.final_schema), parameters)
            rows = connection.execute(statements.month_rows(taxi), parameters).fetchall()
            summary_rows, trips, revenue, days, boroughs = connection.execute(
                statements.month_totals(taxi), parameters
            ).fetchone()
        if not trips:
            context.log.warning(
                f"{taxi.csv_name(month)}: no trips of the month in the final table; "
                "was the month loaded?"
            )
        return dg.MaterializeResult(
            metadata={
                "table": statements.summary_table_name(taxi),
                "filename": taxi.csv_name(month),
                "trips": int(trips),
                "revenue": float(revenue),
                "days": days,
                "boroughs": boroughs,
                PARTITION_ROW_COUNT: summary_rows,
                "zones_in_lookup": zones,
                "preview": dg.MetadataValue.md(_markdown_preview(rows)),
            }
        )

    return [monthly_summary]


def _markdown_preview(rows: list[tuple]) -> str:
    header = "| day | pickup borough | trips | revenue | avg miles | avg minutes |\n"
    header += "|---|---|---:|---:|---:|---:|\n"
    lines = [
        f"| {day} | {borough} | {trips:,} | {revenue:,.2f} | {distance} | {duration} |"
        for day, borough, trips, revenue, distance, duration in rows[:PREVIEW_ROWS]
    ]
    more = f"\n\n{len(rows) - PREVIEW_ROWS:,} more rows" if len(rows) > PREVIEW_ROWS else ""
    return header + "\n".join(lines) + more


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            taxi_zone_lookup,
            *(asset for taxi in TAXIS.values() for asset in build_report_assets(taxi)),
        ]
    )
