"""The Google Cloud path: the month's CSV into GCS, then through BigQuery into the trip table.

    raw/{taxi}_tripdata_csv
      └─ gcs/{taxi}_tripdata_csv              gs://{bucket}/{taxi}_tripdata_{YYYY}-{MM}.csv
           └─ bigquery/{taxi}_tripdata_ext    external table over the object
                └─ bigquery/{taxi}_tripdata_month   native month table, ids and filename
                     └─ bigquery/{taxi}_tripdata    MERGE into the partitioned table

The statements are the zoomcamp GCP flow's (``taxi_platform/lib/sql/bigquery.py``), so tables
that flow built keep working. ``gcs/bucket`` and ``bigquery/dataset`` create what the
months need, once. Every step turns a ``GcpError`` into a ``Failure`` the same way
(``gcp_step``); the merges into one table share the pool ``bigquery_merge``.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from taxi_platform.defs.resources import trip_partitions
from taxi_platform.defs.trips.raw import describe_month
from taxi_platform.defs.trips.retention import release_landed_file
from taxi_platform.lib.asset_keys import (
    ASSET_OWNERS,
    BUCKET_ASSET_KEY,
    DATASET_ASSET_KEY,
    PARTITION_ROW_COUNT,
    bigquery_table_key,
    external_asset_key,
    gcs_asset_key,
    layer_group,
    month_asset_key,
    raw_asset_key,
)
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.landed_month import landed_month_or_fail
from taxi_platform.lib.months import month_start
from taxi_platform.lib.pool_limits import BIGQUERY_MERGE_POOL
from taxi_platform.lib.recorded_metadata import recorded_metadata
from taxi_platform.lib.sql import bigquery as bq_sql
from taxi_platform.lib.table_schema import bigquery_table_schema
from taxi_platform.lib.warehouse import (
    GcpError,
    StatementResult,
    check_colocated,
    job_labels,
)
from taxi_platform.resources import LandingArea
from taxi_platform.resources.gcp import TaxiBigQueryResource, TaxiGCSResource

GCP_SETUP_GROUP = "gcp_setup"


@contextmanager
def gcp_step(describe: str) -> Iterator[None]:
    """A ``GcpError`` as the step's Failure; a retry is allowed only where one can help."""
    try:
        yield
    except GcpError as error:
        raise dg.Failure(
            description=f"{describe}: {error}", allow_retries=error.retryable
        ) from None


def _job_metadata(prefix: str, result: StatementResult) -> dict:
    metadata: dict = {}
    if result.job_id is not None:
        metadata[f"{prefix}_job_id"] = result.job_id
    if result.bytes_processed is not None:
        metadata[f"{prefix}_bytes_processed"] = result.bytes_processed
    return metadata


def _labels(context: dg.AssetExecutionContext, taxi: TaxiType) -> dict[str, str]:
    return job_labels(taxi.name, context.partition_key, context.asset_key.to_user_string())


def _other_location(what: str, found: str | None, wanted: str | None) -> str | None:
    if found and wanted and found.upper() != wanted.upper():
        return f"{what} already exists in {found}, not in GCP_LOCATION {wanted}; it is kept"
    return None


def bucket_asset() -> dg.AssetsDefinition:
    @dg.asset(
        key=BUCKET_ASSET_KEY,
        group_name=GCP_SETUP_GROUP,
        kinds={"gcs"},
        description="The GCS bucket the monthly trip files are uploaded to (GCP_BUCKET_NAME).",
    )
    def bucket(context: dg.AssetExecutionContext, gcs: TaxiGCSResource) -> dg.MaterializeResult:
        with gcp_step(f"bucket {gcs.bucket_name or '(unset)'}"):
            state = gcs.ensure_bucket()
        if not state.created and (
            note := _other_location(f"gs://{gcs.bucket_name}", state.location, gcs.location)
        ):
            context.log.warning(f"{note}; bigquery/dataset checks BigQuery can read it")
        return dg.MaterializeResult(
            metadata={
                "bucket": f"gs://{gcs.bucket_name}",
                "created": state.created,
                "location": state.location or "",
            }
        )

    return bucket


def dataset_asset() -> dg.AssetsDefinition:
    @dg.asset(
        key=DATASET_ASSET_KEY,
        group_name=GCP_SETUP_GROUP,
        kinds={"bigquery"},
        description="The BigQuery dataset that holds the trip tables (GCP_DATASET); jobs "
        "run in its location, which must be able to read the bucket.",
    )
    def dataset(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource, gcs: TaxiGCSResource
    ) -> dg.MaterializeResult:
        with gcp_step(f"dataset {bigquery.dataset or '(unset)'}"):
            dataset_name, location = bigquery.required_dataset, bigquery.required_location
            with bigquery.warehouse() as warehouse:
                state = warehouse.ensure_dataset(dataset_name, location)
                dataset_id, engine = f"{warehouse.project}.{dataset_name}", warehouse.engine
            # The bucket, if there is one already, must be readable from the dataset.
            known = state.location and gcs.bucket_name
            bucket_location = gcs.existing_bucket_location() if known else None
            if state.location and bucket_location:
                check_colocated(dataset_id, state.location, gcs.required_bucket, bucket_location)
        if not state.created and (note := _other_location(dataset_id, state.location, location)):
            context.log.warning(f"{note}; jobs run in {state.location}")
        return dg.MaterializeResult(
            metadata={
                "dataset": dataset_id,
                "created": state.created,
                "location": state.location or "",
                "engine": engine,
            }
        )

    return dataset


def gcp_setup_assets() -> list[dg.AssetsDefinition]:
    """The bucket and the dataset: created in GCP_LOCATION if absent, else left alone."""
    return [bucket_asset(), dataset_asset()]


def _monthly(taxi: TaxiType, key: dg.AssetKey, deps: list, kind: str, description: str):
    """The decorator every monthly asset of the path shares."""
    return dg.asset(
        key=key,
        deps=deps,
        partitions_def=trip_partitions(),
        group_name=layer_group(taxi, kind),
        kinds={kind},
        tags={"taxi": taxi.name},
        owners=ASSET_OWNERS,
        # Bumped when what a step writes changes: 2 = the drift columns, labels, locations.
        code_version="2",
        description=description,
        pool=BIGQUERY_MERGE_POOL if key == bigquery_table_key(taxi) else None,
        metadata=(
            {"dagster/column_schema": bigquery_table_schema(taxi)}
            if key == bigquery_table_key(taxi)
            else None
        ),
    )


def gcs_csv_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @_monthly(
        taxi,
        gcs_asset_key(taxi),
        [raw_asset_key(taxi), BUCKET_ASSET_KEY],
        "gcs",
        f"The month's {taxi.name} CSV in the bucket, as gs://{{bucket}}/"
        f"{taxi.name}_tripdata_YYYY-MM.csv; its MD5 checked against the landed file.",
    )
    def gcs_csv(
        context: dg.AssetExecutionContext, gcs: TaxiGCSResource, landing: LandingArea
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        csv_path = landing.csv_path(taxi, month)
        landed = landed_month_or_fail(csv_path, taxi, describe)
        with gcp_step(describe):
            result = gcs.upload_file(csv_path, bq_sql.object_name(taxi, month))
        context.log.info(
            f"{describe}: {'uploaded to' if result.uploaded else 'already at'} {result.uri}"
        )
        release_landed_file(context, landing, taxi, month)
        return dg.MaterializeResult(
            metadata={
                "uri": result.uri,
                "bytes": result.bytes,
                PARTITION_ROW_COUNT: landed.rows,  # what the month table is checked against
                "md5": result.md5_base64,
                "uploaded": result.uploaded,
                "generation": result.generation or 0,
                "duration_seconds": round(result.duration_seconds, 3),
            }
        )

    return gcs_csv


def external_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @_monthly(
        taxi,
        external_asset_key(taxi),
        [gcs_asset_key(taxi), DATASET_ASSET_KEY],
        "bigquery",
        f"{{dataset}}.{taxi.name}_tripdata_YYYY_MM_ext: an external table over the month's "
        "object, with the catalogue's columns and types.",
    )
    def external(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource, gcs: TaxiGCSResource
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        table = bq_sql.external_table(taxi, month)
        with gcp_step(describe_month(taxi, context.partition_key)):
            project, dataset, bucket = (
                bigquery.required_project,
                bigquery.required_dataset,
                gcs.required_bucket,
            )
            with bigquery.warehouse(reads_bucket=bucket) as warehouse:
                dataset_location = warehouse.dataset_location()
                if dataset_location:  # BigQuery cannot read a bucket elsewhere: say so first
                    check_colocated(
                        f"{project}.{dataset}", dataset_location, bucket, gcs.bucket_location()
                    )
                result = warehouse.run(
                    bq_sql.create_external_table(taxi, project, dataset, bucket, month),
                    _labels(context, taxi),
                )
                link = warehouse.table_link(dataset, table)
        return dg.MaterializeResult(
            metadata={
                "table": bq_sql.table_id(project, dataset, table),
                "uri": bq_sql.gcs_uri(bucket, taxi, month),
                "console": link,
                **_job_metadata("create", result),
            }
        )

    return external


def uploaded_rows(context: dg.AssetExecutionContext, taxi: TaxiType, describe: str) -> int:
    """The rows of the file the GCS asset uploaded for this month, from its materialization.

    Not from the landed file's sidecar: with the default retention that file is gone once
    the upload is done, and the guard must hold whatever the retention.
    """
    upload_key = gcs_asset_key(taxi)
    rows = recorded_metadata(
        context.instance, upload_key, context.partition_key, PARTITION_ROW_COUNT
    )
    if rows is None:
        raise dg.Failure(
            description=f"{describe}: {upload_key.to_user_string()} has no materialization "
            "with a row count for this month; materialize it first"
        )
    return int(rows.value)


def month_table_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @_monthly(
        taxi,
        month_asset_key(taxi),
        [external_asset_key(taxi)],
        "bigquery",
        f"{{dataset}}.{taxi.name}_tripdata_YYYY_MM: the month as a native table, with "
        "unique_row_id (MD5 of the zoomcamp's five columns) and filename.",
    )
    def month_table(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource, gcs: TaxiGCSResource
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        table = bq_sql.month_table(taxi, month)
        expected_rows = uploaded_rows(context, taxi, describe)
        labels = _labels(context, taxi)
        with gcp_step(describe):
            project, dataset = bigquery.required_project, bigquery.required_dataset
            # This statement reads the object: a refused storage.* names the bucket.
            with bigquery.warehouse(reads_bucket=gcs.bucket_name) as warehouse:
                result = warehouse.run(
                    bq_sql.create_month_table(taxi, project, dataset, month), labels
                )
                rows = int(warehouse.scalar(bq_sql.count_rows(project, dataset, table), labels))
                link = warehouse.table_link(dataset, table)
        if rows == 0:
            raise dg.Failure(description=f"{describe}: the month table {table} is empty")
        if rows != expected_rows:
            raise dg.Failure(
                description=f"{describe}: the month table {table} has {rows:,} rows, the "
                f"uploaded file {expected_rows:,}; BigQuery read the object "
                f"{bq_sql.object_name(taxi, month)} differently from the file"
            )
        return dg.MaterializeResult(
            metadata={
                "table": bq_sql.table_id(project, dataset, table),
                PARTITION_ROW_COUNT: rows,
                "console": link,
                **_job_metadata("create", result),
            }
        )

    return month_table


def _merge_metadata(created: StatementResult, merged: StatementResult) -> dict[str, Any]:
    if merged.bytes_processed is None:
        return {}  # the local stand-in does not measure what BigQuery would bill
    return {"bytes_processed": (created.bytes_processed or 0) + merged.bytes_processed}


def bigquery_table_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @_monthly(
        taxi,
        bigquery_table_key(taxi),
        [month_asset_key(taxi)],
        "bigquery",
        f"{{dataset}}.{taxi.table}: every {taxi.name} trip loaded so far, partitioned by "
        "pickup day; a month's rows whose id is new are merged in.",
    )
    def bigquery_table(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        labels = _labels(context, taxi)
        with gcp_step(describe):
            project, dataset = bigquery.required_project, bigquery.required_dataset
            month_ref = bq_sql.count_rows(project, dataset, bq_sql.month_table(taxi, month))
            with bigquery.warehouse(on_retry=context.log.warning) as warehouse:
                created = warehouse.run(bq_sql.create_final_table(taxi, project, dataset), labels)
                for statement in bq_sql.add_optional_columns(taxi, project, dataset):
                    warehouse.run(statement, labels)
                merged = warehouse.run(bq_sql.merge_month(taxi, project, dataset, month), labels)
                month_rows = int(warehouse.scalar(month_ref, labels))
                count_all = bq_sql.count_rows(project, dataset, taxi.table)
                table_rows = int(warehouse.scalar(count_all, labels))
                link, engine = warehouse.table_link(dataset, taxi.table), warehouse.engine
        rows_inserted = merged.rows_affected or 0
        context.log.info(
            f"{describe}: {rows_inserted:,} rows inserted, "
            f"{month_rows - rows_inserted:,} already present"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/table_name": bq_sql.table_id(project, dataset, taxi.table),
                PARTITION_ROW_COUNT: month_rows,
                "rows_inserted": rows_inserted,
                "rows_already_present": month_rows - rows_inserted,
                "dagster/row_count": table_rows,  # the whole table
                "filename": taxi.csv_name(month),
                **_merge_metadata(created, merged),
                "engine": engine,
                "console": link,
                **_job_metadata("create", created),
                **_job_metadata("merge", merged),
            }
        )

    return bigquery_table


def build_gcp_assets(taxi: TaxiType) -> list[dg.AssetsDefinition]:
    """The four monthly assets of one taxi type's Google Cloud path."""
    return [
        gcs_csv_asset(taxi),
        external_asset(taxi),
        month_table_asset(taxi),
        bigquery_table_asset(taxi),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            *gcp_setup_assets(),
            *(asset for taxi in TAXIS.values() for asset in build_gcp_assets(taxi)),
        ]
    )
