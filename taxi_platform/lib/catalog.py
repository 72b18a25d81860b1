"""The taxi catalogue: everything the platform knows about the trip files, in one place.

Every loader, statement builder, asset and test reads its columns, types and keys from
here, so a new taxi type is a new entry, never new code. The types are those of the
zoomcamp tables (Postgres DDL of the Kestra ETL flow, BigQuery DDL of the GCP flow), so
that loads merge into tables users already have.

This module imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# Postgres and BigQuery type names, spelled as the zoomcamp DDL spells them.
TEXT, TIMESTAMP, INTEGER, DOUBLE = "text", "timestamp", "integer", "double precision"
BQ_STRING, BQ_TIMESTAMP, BQ_INTEGER, BQ_NUMERIC = "STRING", "TIMESTAMP", "INTEGER", "NUMERIC"

# Months published in the DataTalksClub nyc-tlc-data releases, for both taxi types.
FIRST_PUBLISHED_MONTH = date(2019, 1, 1)
LAST_PUBLISHED_MONTH = date(2021, 7, 1)


@dataclass(frozen=True)
class Column:
    """One CSV column: its header in the file and its types in each backend."""

    name: str
    postgres_type: str
    bigquery_type: str

    @property
    def postgres_name(self) -> str:
        # The zoomcamp DDL leaves names unquoted, so Postgres folds them to lower case;
        # existing tables have `vendorid`, not `VendorID`.
        return self.name.lower()


@dataclass(frozen=True)
class TaxiType:
    """A taxi type's trip files: columns in file order and the columns the ids hash."""

    name: str
    columns: tuple[Column, ...]
    pickup_column: str
    dropoff_column: str
    # The Postgres id (zoomcamp ETL flow): md5 over these seven columns' text.
    postgres_id_columns: tuple[str, ...]
    # The BigQuery id (zoomcamp GCP flow): MD5 over these five, none of them a float, so
    # the id does not depend on how an engine prints a number.
    bigquery_id_columns: tuple[str, ...]
    description: str = ""

    @property
    def header(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def table(self) -> str:
        """The final table's name, in Postgres and BigQuery alike."""
        return f"{self.name}_tripdata"

    def file_stem(self, month_start: date) -> str:
        return f"{self.name}_tripdata_{month_start:%Y-%m}"

    def csv_name(self, month_start: date) -> str:
        """The name the zoomcamp flows record in `filename`."""
        return f"{self.file_stem(month_start)}.csv"

    def gz_name(self, month_start: date) -> str:
        return f"{self.file_stem(month_start)}.csv.gz"

    def release_path(self, month_start: date) -> str:
        """Path of the month's file below the releases' base URL."""
        return f"{self.name}/{self.gz_name(month_start)}"

    def month_table(self, month_start: date) -> str:
        """Name of a month's own table (BigQuery month table, Postgres staging table)."""
        return f"{self.name}_tripdata_{month_start:%Y_%m}"


def _columns(*spec: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, pg_type, bq_type) for name, pg_type, bq_type in spec)


GREEN = TaxiType(
    name="green",
    description="Green (boro) taxi trips: street hails outside Manhattan's core.",
    columns=_columns(
        ("VendorID", TEXT, BQ_STRING),
        ("lpep_pickup_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("lpep_dropoff_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("store_and_fwd_flag", TEXT, BQ_STRING),
        ("RatecodeID", TEXT, BQ_STRING),
        ("PULocationID", TEXT, BQ_STRING),
        ("DOLocationID", TEXT, BQ_STRING),
        ("passenger_count", INTEGER, BQ_INTEGER),
        ("trip_distance", DOUBLE, BQ_NUMERIC),
        ("fare_amount", DOUBLE, BQ_NUMERIC),
        ("extra", DOUBLE, BQ_NUMERIC),
        ("mta_tax", DOUBLE, BQ_NUMERIC),
        ("tip_amount", DOUBLE, BQ_NUMERIC),
        ("tolls_amount", DOUBLE, BQ_NUMERIC),
        ("ehail_fee", DOUBLE, BQ_NUMERIC),
        ("improvement_surcharge", DOUBLE, BQ_NUMERIC),
        ("total_amount", DOUBLE, BQ_NUMERIC),
        ("payment_type", INTEGER, BQ_INTEGER),
        ("trip_type", INTEGER, BQ_STRING),
        ("congestion_surcharge", DOUBLE, BQ_NUMERIC),
    ),
    pickup_column="lpep_pickup_datetime",
    dropoff_column="lpep_dropoff_datetime",
    postgres_id_columns=(
        "VendorID",
        "lpep_pickup_datetime",
        "lpep_dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "fare_amount",
        "trip_distance",
    ),
    bigquery_id_columns=(
        "VendorID",
        "lpep_pickup_datetime",
        "lpep_dropoff_datetime",
        "PULocationID",
        "DOLocationID",
    ),
)

YELLOW = TaxiType(
    name="yellow",
    description="Yellow (medallion) taxi trips.",
    columns=_columns(
        ("VendorID", TEXT, BQ_STRING),
        ("tpep_pickup_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("tpep_dropoff_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("passenger_count", INTEGER, BQ_INTEGER),
        ("trip_distance", DOUBLE, BQ_NUMERIC),
        ("RatecodeID", TEXT, BQ_STRING),
        ("store_and_fwd_flag", TEXT, BQ_STRING),
        ("PULocationID", TEXT, BQ_STRING),
        ("DOLocationID", TEXT, BQ_STRING),
        ("payment_type", INTEGER, BQ_INTEGER),
        ("fare_amount", DOUBLE, BQ_NUMERIC),
        ("extra", DOUBLE, BQ_NUMERIC),
        ("mta_tax", DOUBLE, BQ_NUMERIC),
        ("tip_amount", DOUBLE, BQ_NUMERIC),
        ("tolls_amount", DOUBLE, BQ_NUMERIC),
        ("improvement_surcharge", DOUBLE, BQ_NUMERIC),
        ("total_amount", DOUBLE, BQ_NUMERIC),
        ("congestion_surcharge", DOUBLE, BQ_NUMERIC),
    ),
    pickup_column="tpep_pickup_datetime",
    dropoff_column="tpep_dropoff_datetime",
    postgres_id_columns=(
        "VendorID",
        "tpep_pickup_datetime",
        "tpep_dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "fare_amount",
        "trip_distance",
    ),
    bigquery_id_columns=(
        "VendorID",
        "tpep_pickup_datetime",
        "tpep_dropoff_datetime",
        "PULocationID",
        "DOLocationID",
    ),
)

TAXIS: dict[str, TaxiType] = {taxi.name: taxi for taxi in (GREEN, YELLOW)}


def taxi_type(name: str) -> TaxiType:
    try:
        return TAXIS[name]
    except KeyError:
        raise ValueError(f"unknown taxi type {name!r}; known: {', '.join(TAXIS)}") from None
