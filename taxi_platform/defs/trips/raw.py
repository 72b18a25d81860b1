"""``raw/{taxi}_tripdata_csv``: the month's CSV, landed and checked.

The month comes from the source that serves it (``TripFileSource.source_for``): a course
release is gunzipped, a TLC Parquet file converted to the same CSV (``lib/tlc_parquet``).
"""

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import dagster as dg

from taxi_platform.defs.resources import trip_partitions
from taxi_platform.lib.asset_keys import (
    ASSET_OWNERS,
    PARTITION_ROW_COUNT,
    layer_group,
    raw_asset_key,
)
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.landing import (
    BadTripFile,
    DownloadInterrupted,
    LandedFile,
    LandingAreaFull,
    land_month,
)
from taxi_platform.lib.months import month_start
from taxi_platform.lib.tlc_parquet import ParquetMonthWriter
from taxi_platform.resources import LandingArea, TripFileSource
from taxi_platform.resources.trip_source import TLC, MonthNotPublished, SourceUnavailable

# Transient trouble (a 5xx burst, or transfers cut more often than the source's own
# attempts allow) gets more chances; a month that is not published, a wrong file or a full
# landing area fails at once.
DOWNLOAD_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


# The header the month landed with, comma-separated, in the raw asset's metadata: the
# header check reads it once the landed file is released.
RAW_HEADER_KEY = "header"


def describe_month(taxi: TaxiType, partition_key: str, source: str = "") -> str:
    """How every message names a month: the file (the TLC's Parquet file for a TLC month)
    and the partition."""
    month = month_start(partition_key)
    file = taxi.parquet_name(month) if source == TLC else taxi.csv_name(month)
    return f"{file} (partition {taxi.name} {partition_key})"


def _landing_plan(taxi: TaxiType, month: date, source: str) -> tuple[tuple[str, ...], dict]:
    """The CSV header a month lands with, and how its bytes become that CSV."""
    if source == TLC:
        return taxi.full_header, {"writer": functools.partial(ParquetMonthWriter, taxi)}
    return taxi.header, {}


@contextmanager
def _landing_failures(
    describe: str, source: str, url: str, trip_source: TripFileSource
) -> Iterator[None]:
    """What went wrong while landing, as the step's Failure: retried only where a later
    attempt can help (the source in trouble, a transfer cut too often)."""
    try:
        yield
    except MonthNotPublished:
        raise dg.Failure(
            description=(
                f"{describe}: the month is not published by the {source} source ({url} "
                f"answered 404); {trip_source.served_months(source)}."
            ),
            allow_retries=False,
        ) from None
    except DownloadInterrupted as error:
        raise dg.Failure(description=str(error)) from None  # names the month already
    except SourceUnavailable as error:
        raise dg.Failure(description=f"{describe}: {error}") from None
    except (BadTripFile, LandingAreaFull) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


def _raw_metadata(
    landed: LandedFile, source: str, url: str, header: tuple[str, ...], landing: LandingArea
) -> dict[str, object]:
    return {
        "source": source,
        "url": dg.MetadataValue.url(url),
        "path": dg.MetadataValue.path(landed.path),
        "bytes": landed.bytes,
        "gz_bytes": landed.gz_bytes,
        PARTITION_ROW_COUNT: landed.rows,
        "sha256": landed.sha256,
        RAW_HEADER_KEY: ",".join(header),
        "downloaded": landed.downloaded,
        "duration_seconds": round(landed.duration_seconds, 3),
        "landing_area_bytes": landing.size_bytes(),
    }


def build_raw_asset(taxi: TaxiType) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_asset_key(taxi),
        partitions_def=trip_partitions(),
        group_name=layer_group(taxi, "raw"),
        kinds={"csv"},
        retry_policy=DOWNLOAD_RETRY_POLICY,
        tags={"taxi": taxi.name},
        owners=ASSET_OWNERS,
        # Bumped when what the step writes changes: 2 = TLC months converted to the CSV.
        code_version="2",
        description=(
            f"The month's {taxi.name} trip file from the source that serves it (the course "
            "releases' CSV.gz gunzipped, or the TLC's Parquet converted to the same CSV) in "
            "the landing area; its header checked against the catalogue."
        ),
    )
    def raw_csv(
        context: dg.AssetExecutionContext, trip_source: TripFileSource, landing: LandingArea
    ) -> dg.MaterializeResult:
        month = month_start(context.partition_key)
        source = trip_source.source_for(month)
        describe = describe_month(taxi, context.partition_key, source)
        url = trip_source.url_for(taxi, month)
        header, convert = _landing_plan(taxi, month, source)
        with _landing_failures(describe, source, url, trip_source):
            landed = land_month(
                trip_source,
                url,
                landing.csv_path(taxi, month),
                header,
                describe,
                log=context.log.info,
                **convert,
            )
        context.log.info(
            f"{describe}: {'downloaded' if landed.downloaded else 'already landed'} from "
            f"the {source} source, {landed.rows:,} rows"
        )
        return dg.MaterializeResult(metadata=_raw_metadata(landed, source, url, header, landing))

    return raw_csv


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_raw_asset(taxi) for taxi in TAXIS.values()])
