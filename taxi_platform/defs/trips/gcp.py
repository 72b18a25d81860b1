"""The Google Cloud path: the month's CSV into GCS, then through BigQuery into the trip table.

    raw/{taxi}_tripdata_csv
      └─ gcs/{taxi}_tripdata_csv              gs://{bucket}/{taxi}_tripdata_{YYYY}-{MM}.csv
           └─ bigquery/{taxi}_tripdata_ext    external table over the object
                └─ bigquery/{taxi}_tripdata_month   native month table, ids and filename
                     └─ bigquery/{taxi}_tripdata    MERGE into the partitioned table

The statements are the zoomcamp GCP flow's (``taxi_platform/lib/sql/bigquery.py``), so tables
that flow built keep working. ``gcs/bucket`` and ``bigquery/dataset`` create what the
months need, once.
"""

import dagster as dg

from taxi_platform.defs.trips.raw import describe_month
from taxi_platform.lib.asset_keys import (
    BUCKET_ASSET_KEY,
    DATASET_ASSET_KEY,
    bigquery_asset_key,
    external_asset_key,
    gcs_asset_key,
    layer_group,
    month_asset_key,
    raw_asset_key,
)
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.landing import LandedFile
from taxi_platform.lib.months import MONTHLY_PARTITIONS, month_start
from taxi_platform.lib.retention import release_landed_file
from taxi_platform.lib.sql import bigquery as bq_sql
from taxi_platform.lib.warehouse import (
    GcpError,
    GcpPermissionDenied,
    GcpSettingMissing,
    StatementResult,
)
from taxi_platform.resources import LandingArea
from taxi_platform.resources.gcp import TaxiBigQueryResource, TaxiGCSResource

GCP_SETUP_GROUP = "gcp_setup"


def _failure(describe: str, error: GcpError) -> dg.Failure:
    # A missing setting or a refused permission will fail the same way on a retry.
    final = isinstance(error, GcpSettingMissing | GcpPermissionDenied)
    return dg.Failure(description=f"{describe}: {error}", allow_retries=not final)


def _job_metadata(prefix: str, result: StatementResult) -> dict:
    metadata: dict = {}
    if result.job_id is not None:
        metadata[f"{prefix}_job_id"] = result.job_id
    if result.bytes_processed is not None:
        metadata[f"{prefix}_bytes_processed"] = result.bytes_processed
    return metadata


def gcp_setup_assets() -> list[dg.AssetsDefinition]:
    """The bucket and the dataset: created in GCP_LOCATION if absent, else left alone."""

    @dg.asset(
        key=BUCKET_ASSET_KEY,
        group_name=GCP_SETUP_GROUP,
        kinds={"gcs"},
        description="The GCS bucket the monthly trip files are uploaded to (GCP_BUCKET_NAME).",
    )
    def bucket(context: dg.AssetExecutionContext, gcs: TaxiGCSResource) -> dg.MaterializeResult:
        try:
            state = gcs.ensure_bucket()
        except GcpError as error:
            raise _failure(f"bucket {gcs.bucket_name or '(unset)'}", error) from None
        if not state.created and state.location and gcs.location:
            if state.location.upper() != gcs.location.upper():
                context.log.warning(
                    f"gs://{gcs.bucket_name} already exists in {state.location}, not in "
                    f"GCP_LOCATION {gcs.location}; it is left as it is"
                )
        return dg.MaterializeResult(
            metadata={
                "bucket": f"gs://{gcs.bucket_name}",
                "created": state.created,
                "location": state.location or "",
            }
        )

    @dg.asset(
        key=DATASET_ASSET_KEY,
        group_name=GCP_SETUP_GROUP,
        kinds={"bigquery"},
        description="The BigQuery dataset that holds the trip tables (GCP_DATASET).",
    )
    def dataset(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource
    ) -> dg.MaterializeResult:
        try:
            dataset_name, location = bigquery.required_dataset, bigquery.required_location
            with bigquery.warehouse() as warehouse:
                state = warehouse.ensure_dataset(dataset_name, location)
                project = warehouse.project
                engine = warehouse.engine
        except GcpError as error:
            raise _failure(f"dataset {bigquery.dataset or '(unset)'}", error) from None
        if not state.created and state.location and state.location.upper() != location.upper():
            context.log.warning(
                f"dataset {project}.{dataset_name} already exists in {state.location}, not in "
                f"GCP_LOCATION {location}; it is left as it is"
            )
        return dg.MaterializeResult(
            metadata={
                "dataset": f"{project}.{dataset_name}",
                "created": state.created,
                "location": state.location or "",
                "engine": engine,
            }
        )

    return [bucket, dataset]


def build_gcp_assets(taxi: TaxiType) -> list[dg.AssetsDefinition]:
    """The four monthly assets of one taxi type's Google Cloud path."""

    @dg.asset(
        key=gcs_asset_key(taxi),
        deps=[raw_asset_key(taxi), BUCKET_ASSET_KEY],
        partitions_def=MONTHLY_PARTITIONS,
        group_name=layer_group(taxi, "gcs"),
        kinds={"gcs"},
        tags={"taxi": taxi.name},
        description=(
            f"The month's {taxi.name} CSV in the bucket, as gs://{{bucket}}/"
            f"{taxi.name}_tripdata_YYYY-MM.csv; its MD5 checked against the landed file."
        ),
    )
    def gcs_csv(
        context: dg.AssetExecutionContext, gcs: TaxiGCSResource, landing: LandingArea
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        csv_path = landing.csv_path(taxi, month)
        landed = LandedFile.read_sidecar(csv_path)
        if landed is None:
            raise dg.Failure(
                description=f"{describe}: no landed file at {csv_path}; materialize "
                f"{raw_asset_key(taxi).to_user_string()} for this month first"
            )
        try:
            result = gcs.upload_file(csv_path, bq_sql.object_name(taxi, month))
        except GcpError as error:
            raise _failure(describe, error) from None
        context.log.info(
            f"{describe}: {'uploaded to' if result.uploaded else 'already at'} {result.uri}"
        )
        release_landed_file(context, landing, taxi, month)
        return dg.MaterializeResult(
            metadata={
                "uri": result.uri,
                "bytes": result.bytes,
                "rows": landed.rows,
                "md5": result.md5_base64,
                "uploaded": result.uploaded,
                "generation": result.generation or 0,
                "duration_seconds": round(result.duration_seconds, 3),
            }
        )

    @dg.asset(
        key=external_asset_key(taxi),
        deps=[gcs_csv, DATASET_ASSET_KEY],
        partitions_def=MONTHLY_PARTITIONS,
        group_name=layer_group(taxi, "bigquery"),
        kinds={"bigquery"},
        tags={"taxi": taxi.name},
        description=(
            f"{{dataset}}.{taxi.name}_tripdata_YYYY_MM_ext: an external table over the month's "
            "object, with the catalogue's columns and types."
        ),
    )
    def external(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource, gcs: TaxiGCSResource
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        table = bq_sql.external_table(taxi, month)
        try:
            project, dataset = bigquery.required_project, bigquery.required_dataset
            uri = bq_sql.gcs_uri(gcs.required_bucket, taxi, month)
            with bigquery.warehouse() as warehouse:
                result = warehouse.run(
                    bq_sql.create_external_table(taxi, project, dataset, gcs.required_bucket, month)
                )
                link = warehouse.table_link(dataset, table)
        except GcpError as error:
            raise _failure(describe, error) from None
        return dg.MaterializeResult(
            metadata={
                "table": bq_sql.table_id(project, dataset, table),
                "uri": uri,
                "console": link,
                **_job_metadata("create", result),
            }
        )

    @dg.asset(
        key=month_asset_key(taxi),
        deps=[external],
        partitions_def=MONTHLY_PARTITIONS,
        group_name=layer_group(taxi, "bigquery"),
        kinds={"bigquery"},
        tags={"taxi": taxi.name},
        description=(
            f"{{dataset}}.{taxi.name}_tripdata_YYYY_MM: the month as a native table, with "
            "unique_row_id (MD5 of the zoomcamp's five columns) and filename."
        ),
    )
    def month_table(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource, landing: LandingArea
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        table = bq_sql.month_table(taxi, month)
        try:
            project, dataset = bigquery.required_project, bigquery.required_dataset
            with bigquery.warehouse() as warehouse:
                result = warehouse.run(bq_sql.create_month_table(taxi, project, dataset, month))
                rows = int(warehouse.scalar(bq_sql.count_rows(project, dataset, table)))
                link = warehouse.table_link(dataset, table)
        except GcpError as error:
            raise _failure(describe, error) from None
        landed = LandedFile.read_sidecar(landing.csv_path(taxi, month))
        if landed is not None and landed.rows != rows:
            raise dg.Failure(
                description=f"{describe}: the month table has {rows:,} rows, the landed file "
                f"{landed.rows:,}; BigQuery read the object differently from the file"
            )
        if rows == 0:
            raise dg.Failure(description=f"{describe}: the month table {table} is empty")
        return dg.MaterializeResult(
            metadata={
                "table": bq_sql.table_id(project, dataset, table),
                "rows": rows,
                "dagster/row_count": rows,
                "console": link,
                **_job_metadata("create", result),
            }
        )

    @dg.asset(
        key=bigquery_asset_key(taxi),
        deps=[month_table],
        partitions_def=MONTHLY_PARTITIONS,
        group_name=layer_group(taxi, "bigquery"),
        kinds={"bigquery"},
        tags={"taxi": taxi.name},
        description=(
            f"{{dataset}}.{taxi.table}: every {taxi.name} trip loaded so far, partitioned by "
            "pickup day; a month's rows whose id is new are merged in."
        ),
    )
    def final(
        context: dg.AssetExecutionContext, bigquery: TaxiBigQueryResource
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        try:
            project, dataset = bigquery.required_project, bigquery.required_dataset
            with bigquery.warehouse() as warehouse:
                created = warehouse.run(bq_sql.create_final_table(taxi, project, dataset))
                merged = warehouse.run(bq_sql.merge_month(taxi, project, dataset, month))
                month_rows = int(
                    warehouse.scalar(
                        bq_sql.count_rows(project, dataset, bq_sql.month_table(taxi, month))
                    )
                )
                table_rows = int(warehouse.scalar(bq_sql.count_rows(project, dataset, taxi.table)))
                link = warehouse.table_link(dataset, taxi.table)
                engine = warehouse.engine
        except GcpError as error:
            raise _failure(describe, error) from None
        rows_inserted = merged.rows_affected or 0
        context.log.info(
            f"{describe}: {rows_inserted:,} rows inserted, "
            f"{month_rows - rows_inserted:,} already present"
        )
        if merged.bytes_processed is not None:
            processed = {"bytes_processed": (created.bytes_processed or 0) + merged.bytes_processed}
        else:
            processed = {}  # the local stand-in does not measure what BigQuery would bill
        return dg.MaterializeResult(
            metadata={
                "table": bq_sql.table_id(project, dataset, taxi.table),
                "month_rows": month_rows,
                "rows_inserted": rows_inserted,
                "rows_already_present": month_rows - rows_inserted,
                "table_rows": table_rows,
                "dagster/row_count": table_rows,
                "filename": taxi.csv_name(month),
                **processed,
                "engine": engine,
                "console": link,
                **_job_metadata("create", created),
                **_job_metadata("merge", merged),
            }
        )

    return [gcs_csv, external, month_table, final]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            *gcp_setup_assets(),
            *(asset for taxi in TAXIS.values() for asset in build_gcp_assets(taxi)),
        ]
    )
