"""``postgres/{taxi}_tripdata_staging`` and ``postgres/{taxi}_tripdata``: the ETL path."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from taxi_platform.defs.resources import trip_partitions
from taxi_platform.defs.trips.raw import build_raw_asset, describe_month
from taxi_platform.defs.trips.retention import release_landed_file
from taxi_platform.lib.asset_keys import (
    ASSET_OWNERS,
    PARTITION_ROW_COUNT,
    layer_group,
    postgres_table_key,
    raw_asset_key,
    staging_asset_key,
)
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.landed_month import landed_month_or_fail
from taxi_platform.lib.landing import LandedFile
from taxi_platform.lib.months import month_start
from taxi_platform.lib.pool_wait import DATABASE_POOL
from taxi_platform.lib.postgres_load import (
    DatabaseWentAway,
    LoadError,
    StageResult,
    database_went_away,
    merge_month,
    stage_month,
    went_away,
)
from taxi_platform.lib.run_liveness import earlier_live_runs_of_step, record_run_error
from taxi_platform.lib.table_schema import postgres_table_schema
from taxi_platform.resources import LandingArea, PostgresResource

# The steps that load the database share one pool (DATABASE_POOL), so a long backfill
# cannot open more COPYs and merges at once than dagster.yaml's pool limit allows.
# Bumped when what a step writes changes (the UI then flags months loaded by older code).
CODE_VERSION = "3"
ROWS_CHECK = "file_rows_equal_staged_rows"


class StagingConfig(dg.Config):
    force_reload: bool = False
    """Stage the file even if the ledger says this exact file is already merged."""


@contextmanager
def _reported(context: dg.AssetExecutionContext, describe: str, step: str) -> Iterator[None]:
    """A load error as the step's failure; a database that went away also printed and kept
    on disk, since Dagster's storage may be on that very server (``record_run_error``)."""
    try:
        yield
    except LoadError as error:
        if isinstance(error, DatabaseWentAway):
            _last_words(context, str(error))
        raise dg.Failure(description=str(error)) from None
    except psycopg.OperationalError as error:
        if not went_away(error):
            raise
        message = str(database_went_away(describe, step, error))
        _last_words(context, message)
        raise dg.Failure(description=message) from None


def _last_words(context: dg.AssetExecutionContext, message: str) -> None:
    print(f"run {context.run_id} failed: {message}", file=sys.stderr, flush=True)
    record_run_error(context.instance, context.run_id, message)


def _give_way_to_an_earlier_run(context: dg.AssetExecutionContext, describe: str) -> None:
    """Fail this run if an earlier, live run is loading the same month (see
    ``earlier_live_runs_of_step``): the month gets loaded once, by that run."""
    step_key = context.op_def.name
    earlier = earlier_live_runs_of_step(
        context.instance, context.run_id, context.partition_key, step_key
    )
    if earlier:
        raise dg.Failure(
            description=(
                f"{describe}: the month is being loaded by run {earlier[0].run_id}, started "
                "before this one; this run stops so that the month is not staged twice. "
                "That run loads it; run this one again only if that one fails."
            ),
            allow_retries=False,
        )


def _database_asset(taxi: TaxiType, **kwargs) -> dict:
    """What every Postgres asset of a taxi type declares alike."""
    return dict(
        partitions_def=trip_partitions(),
        group_name=layer_group(taxi, "postgres"),
        kinds={"postgres"},
        pool=DATABASE_POOL,
        tags={"taxi": taxi.name},
        owners=ASSET_OWNERS,
        code_version=CODE_VERSION,
        **kwargs,
    )


def _rows_check(taxi: TaxiType, landed: LandedFile, staged: StageResult) -> dg.AssetCheckResult:
    """Every line of the landed file became one staged row.

    ``file_rows`` are the lines counted while the file was gunzipped, ``rows_staged`` the
    rows the staging pass read. They differ when it read lines differently from the file's
    line count, e.g. a quoted field spanning two lines, which would silently shift every
    count users compare with the TLC's. Checked in the staging step itself, with both
    numbers at hand. (The merge's COPY of the staged file counts its rows again, and
    refuses a file that gives another number.)
    """
    return dg.AssetCheckResult(
        asset_key=staging_asset_key(taxi),
        check_name=ROWS_CHECK,
        passed=landed.rows == staged.rows_staged,
        metadata={
            "file_rows": landed.rows,
            "rows_staged": staged.rows_staged,
            "difference": landed.rows - staged.rows_staged,
            "already_loaded": staged.already_loaded,
        },
    )


def build_staging_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @dg.asset(
        **_database_asset(
            taxi,
            key=staging_asset_key(taxi),
            deps=[raw_asset_key(taxi)],
            check_specs=[
                dg.AssetCheckSpec(
                    ROWS_CHECK,
                    asset=staging_asset_key(taxi),
                    partitions_def=trip_partitions(),
                    description="Every line of the landed file became one staged row.",
                )
            ],
            description=(
                f"The month's {taxi.name} rows with unique_row_id and filename computed "
                "(the zoomcamp md5), written by DuckDB beside the landed file "
                f"({taxi.name}_tripdata_YYYY-MM.csv.staged), for the merge's one COPY."
            ),
        )
    )
    def staging(
        context: dg.AssetExecutionContext,
        config: StagingConfig,
        postgres: PostgresResource,
        landing: LandingArea,
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        _give_way_to_an_earlier_run(context, describe)
        csv_path = landing.csv_path(taxi, month)
        landed = landed_month_or_fail(csv_path, taxi, describe)
        with _reported(context, describe, "staging"), postgres.connect() as connection:
            staged = stage_month(
                connection,
                taxi,
                month,
                csv_path,
                landed.sha256,
                describe,
                postgres.final_schema,
                force=config.force_reload,
            )
        if staged.already_loaded:
            context.log.info(f"{describe}: this exact file is already merged; nothing staged")
        release_landed_file(context, landing, taxi, month)
        return dg.MaterializeResult(
            metadata={
                PARTITION_ROW_COUNT: staged.rows_staged,
                "already_loaded": staged.already_loaded,
                "sha256": landed.sha256,
                "database": postgres.describe(),
            },
            check_results=[_rows_check(taxi, landed, staged)],
        )

    return staging


def build_postgres_table_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @dg.asset(
        **_database_asset(
            taxi,
            key=postgres_table_key(taxi),
            deps=[staging_asset_key(taxi)],
            metadata={
                "dagster/table_name": f"public.{taxi.table}",
                "dagster/column_schema": postgres_table_schema(taxi),
            },
            description=(
                f"public.{taxi.table}: every {taxi.name} trip loaded so far, in the zoomcamp "
                "table's columns and types; a month's staged file is COPYed in and the rows "
                "whose id the table held already are taken out again, in one transaction."
            ),
        )
    )
    def postgres_table(
        context: dg.AssetExecutionContext, postgres: PostgresResource, landing: LandingArea
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        csv_path = landing.csv_path(taxi, month)
        with _reported(context, describe, "the merge"), postgres.connect() as connection:
            merged = merge_month(connection, taxi, month, csv_path, describe, postgres.final_schema)
        context.log.info(
            f"{describe}: {merged.rows_inserted:,} rows inserted, "
            f"{merged.rows_already_present:,} already present"
        )
        return dg.MaterializeResult(
            metadata={
                # The month's rows (its file's); rows_already_present of them had their
                # id in the table already and were not inserted again.
                PARTITION_ROW_COUNT: merged.rows_staged,
                "rows_inserted": merged.rows_inserted,
                "rows_already_present": merged.rows_already_present,
                "already_loaded": merged.already_loaded,
                "table": f"{postgres.final_schema}.{taxi.table}",
                "filename": taxi.csv_name(month),
            }
        )

    return postgres_table


def build_postgres_assets(taxi: TaxiType) -> list[dg.AssetsDefinition]:
    return [build_staging_asset(taxi), build_postgres_table_asset(taxi)]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[asset for taxi in TAXIS.values() for asset in build_postgres_assets(taxi)]
    )


def etl_assets() -> list[dg.AssetsDefinition]:
    """Every taxi type's path to Postgres, raw file included: what one month's load runs
    (the tests and the benchmark materialize these)."""
    return [
        asset
        for taxi in TAXIS.values()
        for asset in (build_raw_asset(taxi), *build_postgres_assets(taxi))
    ]
