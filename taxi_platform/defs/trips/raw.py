"""``raw/{taxi}_tripdata_csv``: the month's CSV, landed and checked."""

import dagster as dg

from taxi_platform.lib.asset_keys import layer_group, raw_asset_key
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.landing import BadTripFile, land_month
from taxi_platform.lib.months import MONTHLY_PARTITIONS, month_start
from taxi_platform.resources import LandingArea, TripFileSource
from taxi_platform.resources.trip_source import MonthNotPublished, SourceUnavailable

# Transient trouble (a dropped connection, a 5xx burst beyond the source's own retries)
# gets more chances; a month that is not published or a wrong file fails at once.
DOWNLOAD_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def describe_month(taxi: TaxiType, partition_key: str) -> str:
    """How every message names a month: the file and the partition."""
    return f"{taxi.csv_name(month_start(partition_key))} (partition {taxi.name} {partition_key})"


def build_raw_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_asset_key(taxi),
        partitions_def=MONTHLY_PARTITIONS,
        group_name=layer_group(taxi, "raw"),
        kinds={"csv"},
        retry_policy=DOWNLOAD_RETRY_POLICY,
        tags={"taxi": taxi.name},
        description=(
            f"The month's {taxi.name} trip file from the release source, gunzipped into the "
            "landing area; its header checked against the catalogue."
        ),
    )
    def raw_csv(
        context: dg.AssetExecutionContext, trip_source: TripFileSource, landing: LandingArea
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        describe = describe_month(taxi, context.partition_key)
        url = trip_source.url_for(taxi, month)
        try:
            landed = land_month(
                trip_source, url, landing.csv_path(taxi, month), taxi.header, describe
            )
        except MonthNotPublished:
            raise dg.Failure(
                description=(
                    f"{describe}: the month is not published at the source ({url} answered "
                    "404). Published months: 2019-01 to 2021-07."
                ),
                allow_retries=False,
            ) from None
        except SourceUnavailable as error:
            raise dg.Failure(description=f"{describe}: {error}") from None
        except BadTripFile as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        context.log.info(
            f"{describe}: {'downloaded' if landed.downloaded else 'already landed'}, "
            f"{landed.rows:,} rows"
        )
        return dg.MaterializeResult(
            metadata={
                "url": dg.MetadataValue.url(url),
                "path": dg.MetadataValue.path(landed.path),
                "bytes": landed.bytes,
                "gz_bytes": landed.gz_bytes,
                "rows": landed.rows,
                "dagster/row_count": landed.rows,
                "sha256": landed.sha256,
                "downloaded": landed.downloaded,
                "duration_seconds": round(landed.duration_seconds, 3),
                "landing_area_bytes": landing.size_bytes(),
            }
        )

    return raw_csv


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_raw_asset(taxi) for taxi in TAXIS.values()])
