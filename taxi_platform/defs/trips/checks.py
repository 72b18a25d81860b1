"""Asset checks that guard each month, shown on the assets' Checks tab in the UI.

They are partitioned like the assets, so a job or backfill run of a month runs the
month's checks in the same run, right after the asset they check. The final table's
checks find the month by ``filename``, because the staging table is dropped once merged.
"""

import warnings
import zlib

import dagster as dg
import psycopg
from pydantic import Field

from taxi_platform.lib.asset_keys import final_asset_key, raw_asset_key, staging_asset_key
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.landing import parse_header
from taxi_platform.lib.months import MONTHLY_PARTITIONS, month_start, next_month
from taxi_platform.lib.sql import checks as statements
from taxi_platform.lib.sql.postgres import ID_LOOKUP_PLAN_SETTINGS
from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource

HEADER_PROBE_BYTES = 1 << 16


class CheckThresholds(dg.ConfigurableResource):
    """Limits of the checks that tolerate some dirt, as real files have it."""

    outside_month_warn_share: float = Field(
        default=0.01,
        description=(
            "Share of a month's rows picked up outside the month above which the check "
            "warns. Real files have some (late reports, clock errors from 2008/2009)."
        ),
    )


def _latest_metadata(
    context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey
) -> dict[str, object] | None:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[context.partition_key]),
        limit=1,
    ).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    return {name: value.value for name, value in materialization.metadata.items()}


def _month_rows_missing(taxi: TaxiType, connection: psycopg.Connection, schema: str) -> bool:
    return not connection.execute(statements.table_exists(taxi, schema)).fetchone()[0]


def _first_line(taxi: TaxiType, partition: str, landing: LandingArea, source: TripFileSource):
    """The month's header line: from the landed file, or the source's if it was removed."""
    month = month_start(partition)
    csv_path = landing.csv_path(taxi, month)
    if csv_path.exists():
        with open(csv_path, "rb") as csv_file:
            return csv_file.readline(HEADER_PROBE_BYTES), str(csv_path)
    url = source.url_for(taxi, month)
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    head = b""
    with source.open_stream(url) as response:
        for chunk in response.iter_content(chunk_size=1 << 14):
            head += decompressor.decompress(chunk)
            if b"\n" in head or len(head) > HEADER_PROBE_BYTES:
                break
    return head.split(b"\n", 1)[0], url


def build_taxi_checks(taxi: TaxiType) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=raw_asset_key(taxi),
        name="header_matches_catalogue",
        partitions_def=MONTHLY_PARTITIONS,
        blocking=True,
        description="The file's header is the catalogue's, column for column, in order.",
    )
    def header_matches_catalogue(
        context: dg.AssetCheckExecutionContext, landing: LandingArea, trip_source: TripFileSource
    ) -> dg.AssetCheckResult:
        """Blocking, so the load waits for it and the landed file is still there to read.

        The raw asset already refuses a wrong header; this check makes the comparison
        visible per month, and catches a landed file changed after download.
        """
        first_line, where = _first_line(taxi, context.partition_key, landing, trip_source)
        found = parse_header(first_line)
        missing = [name for name in taxi.header if name not in found]
        unexpected = [name for name in found if name not in taxi.header]
        return dg.AssetCheckResult(
            passed=found == taxi.header,
            metadata={
                "read_from": where,
                "columns": len(found),
                "expected_columns": len(taxi.header),
                "missing": ", ".join(missing) or "none",
                "unexpected": ", ".join(unexpected) or "none",
                "in_order": found == taxi.header,
            },
        )

    @dg.asset_check(
        asset=staging_asset_key(taxi),
        name="file_rows_equal_staged_rows",
        partitions_def=MONTHLY_PARTITIONS,
        description="Every line of the landed file became one staged row.",
    )
    def file_rows_equal_staged_rows(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Compares the staging asset's own metadata: ``file_rows`` (lines counted while the
        file was gunzipped) and ``rows_staged`` (what COPY reported). They differ when COPY
        read lines differently from the file's line count, e.g. a quoted field spanning two
        lines, which would silently shift every count users compare with the TLC's.
        """
        metadata = _latest_metadata(context, staging_asset_key(taxi))
        if metadata is None:
            return dg.AssetCheckResult(
                passed=False, metadata={"problem": "the month's staging was never materialized"}
            )
        file_rows, rows_staged = metadata.get("file_rows"), metadata.get("rows_staged")
        return dg.AssetCheckResult(
            passed=file_rows == rows_staged,
            metadata={
                "file_rows": file_rows,
                "rows_staged": rows_staged,
                "difference": (file_rows or 0) - (rows_staged or 0),
                "already_loaded": metadata.get("already_loaded", False),
            },
        )

    @dg.asset_check(
        asset=final_asset_key(taxi),
        name="ids_not_null",
        partitions_def=MONTHLY_PARTITIONS,
        description="Every row of the month's file has a unique_row_id.",
    )
    def ids_not_null(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """Our loads compute the id for every row; rows merged by other tools (a half-run
        zoomcamp flow leaves ids NULL until its UPDATE) would escape the merge's dedup."""
        filename = taxi.csv_name(month_start(context.partition_key))
        with postgres.connect() as connection:
            if _month_rows_missing(taxi, connection, postgres.final_schema):
                return dg.AssetCheckResult(passed=False, metadata={"problem": "no final table"})
            rows, null_ids = connection.execute(
                statements.null_ids(taxi, postgres.final_schema), {"filename": filename}
            ).fetchone()
        return dg.AssetCheckResult(
            passed=null_ids == 0,
            metadata={"filename": filename, "rows": rows, "rows_without_id": null_ids},
        )

    @dg.asset_check(
        asset=final_asset_key(taxi),
        name="no_id_inserted_twice",
        partitions_def=MONTHLY_PARTITIONS,
        description=(
            "No id of the month's rows is also held under another file name: the merge "
            "added no duplicate of a row already in the table."
        ),
    )
    def no_id_inserted_twice(
        context: dg.AssetCheckExecutionContext, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        """What "no duplicates" can mean when duplicates inside one file are kept (DESIGN:
        the totals must equal the CSV row counts): the merge inserts a row only if its id
        is not in the table yet, so an id of this month's rows must not appear under any
        other ``filename``. One that does was inserted by two merges blind to each other
        (concurrent loads without the table lock, or a load that bypassed the check).
        Repeats *within* the month's rows are the file's own duplicates, reported as
        metadata (``rows_in_file_duplicates``), not a failure.
        """
        filename = taxi.csv_name(month_start(context.partition_key))
        parameters = {"filename": filename}
        with postgres.connect() as connection:
            if _month_rows_missing(taxi, connection, postgres.final_schema):
                return dg.AssetCheckResult(passed=False, metadata={"problem": "no final table"})
            for setting in ID_LOOKUP_PLAN_SETTINGS:
                connection.execute(setting)
            shared = connection.execute(
                statements.ids_shared_with_other_files(taxi, postgres.final_schema), parameters
            ).fetchone()[0]
            rows, distinct_ids = connection.execute(
                statements.rows_and_distinct_ids(taxi, postgres.final_schema), parameters
            ).fetchone()
        return dg.AssetCheckResult(
            passed=shared == 0,
            metadata={
                "filename": filename,
                "ids_also_under_other_files": shared,
                "rows": rows,
                "distinct_ids": distinct_ids,
                "rows_in_file_duplicates": rows - distinct_ids,
            },
        )

    @dg.asset_check(
        asset=final_asset_key(taxi),
        name="pickups_outside_month",
        partitions_def=MONTHLY_PARTITIONS,
        description=(
            "Share of the month's rows picked up outside the month; warns above the "
            "check_thresholds resource's outside_month_warn_share."
        ),
    )
    def pickups_outside_month(
        context: dg.AssetCheckExecutionContext,
        postgres: PostgresResource,
        check_thresholds: CheckThresholds,
    ) -> dg.AssetCheckResult:
        """Real files always have some (trips reported late, meters with 2008 clocks), so
        a share is reported and only a large one warns: a file for the wrong month, or a
        timestamp column parsed in the wrong order, shows up as a share near 1."""
        month = month_start(context.partition_key)
        filename = taxi.csv_name(month)
        with postgres.connect() as connection:
            if _month_rows_missing(taxi, connection, postgres.final_schema):
                return dg.AssetCheckResult(passed=False, metadata={"problem": "no final table"})
            rows, outside, earliest, latest = connection.execute(
                statements.pickups_outside_month(taxi, postgres.final_schema),
                {"filename": filename, "month_start": month, "month_end": next_month(month)},
            ).fetchone()
        share = outside / rows if rows else 0.0
        limit = check_thresholds.outside_month_warn_share
        return dg.AssetCheckResult(
            passed=share <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "filename": filename,
                "rows": rows,
                "rows_outside_month": outside,
                "share_outside_month": round(share, 6),
                "warn_above_share": limit,
                "earliest_pickup": str(earliest),
                "latest_pickup": str(latest),
            },
        )

    return [
        header_matches_catalogue,
        file_rows_equal_staged_rows,
        ids_not_null,
        no_id_inserted_twice,
        pickups_outside_month,
    ]


@dg.definitions
def defs() -> dg.Definitions:
    with warnings.catch_warnings():
        # Checks partitioned like their asset are what lets a month's run check that month
        # (Dagster 1.13 calls `partitions_def` on a check "preview"). The warning it prints
        # at every load is not the user's to act on; only that one message is silenced.
        warnings.filterwarnings(
            "ignore",
            message="Specifying a partitions_def on an AssetCheckSpec",
            category=dg.PreviewWarning,
        )
        checks = [check for taxi in TAXIS.values() for check in build_taxi_checks(taxi)]
    return dg.Definitions(asset_checks=checks)
