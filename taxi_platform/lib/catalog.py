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

# Months published in the DataTalksClub nyc-tlc-data releases (the course releases), for
# both taxi types. The TLC's own Parquet files hold these and every month since.
FIRST_PUBLISHED_MONTH = date(2019, 1, 1)
LAST_PUBLISHED_MONTH = date(2021, 7, 1)

# How a file's values are read and printed: an integer code (`RatecodeID` 1.0 -> `1`), a
# timestamp (`YYYY-MM-DD HH:MM:SS`), a double, or text.
CODE, STAMP, NUMBER, WORD = "integer", "timestamp", "double", "text"
_KIND_OF_POSTGRES_TYPE = {TEXT: WORD, TIMESTAMP: STAMP, INTEGER: CODE, DOUBLE: NUMBER}


@dataclass(frozen=True)
class Column:
    """One CSV column: its header in the file and its types in each backend."""

    name: str
    postgres_type: str
    bigquery_type: str
    # What the values are, whatever a file's types say; by default that of the Postgres
    # type. Ids the zoomcamp DDL keeps as text (`VendorID`) are integer codes.
    value_kind: str = ""
    # Other spellings of the name in the TLC's files (`Airport_fee` from 2023-02).
    aliases: tuple[str, ...] = ()
    # Optional trailing columns exist in the TLC's files only from this month on.
    first_month: date | None = None

    @property
    def kind(self) -> str:
        return self.value_kind or _KIND_OF_POSTGRES_TYPE[self.postgres_type]

    @property
    def postgres_name(self) -> str:
        # The zoomcamp DDL leaves names unquoted, so Postgres folds them to lower case;
        # existing tables have `vendorid`, not `VendorID`.
        return self.name.lower()


@dataclass(frozen=True)
class TaxiType:
    """A taxi type's trip files: columns in file order and the columns the ids hash.

    ``columns`` are the course files' columns, in their order: a course month's CSV has
    exactly these. ``optional_columns`` are the ones the TLC added later (schema drift);
    they trail the others in the final tables and in a CSV converted from a TLC file, and
    are NULL for months that lack them.
    """

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
    optional_columns: tuple[Column, ...] = ()

    @property
    def header(self) -> tuple[str, ...]:
        """The course files' header, exactly."""
        return tuple(column.name for column in self.columns)

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """The final tables' columns: the course files' then the optional trailing ones."""
        return self.columns + self.optional_columns

    @property
    def full_header(self) -> tuple[str, ...]:
        """The header of a CSV converted from a TLC file: every column, optional ones last."""
        return tuple(column.name for column in self.all_columns)

    def columns_of_header(self, header: tuple[str, ...]) -> tuple[Column, ...]:
        """The columns a landed CSV holds, from its header: the course layout or the full one.

        Raises ``ValueError`` for anything else (the load names the file).
        """
        if tuple(header) == self.header:
            return self.columns
        if tuple(header) == self.full_header:
            return self.all_columns
        raise ValueError(
            f"header {','.join(header)!r} is neither the course layout nor the full "
            f"{self.name} layout ({','.join(self.full_header)})"
        )

    def column(self, name: str) -> Column:
        for column in self.all_columns:
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

    def parquet_name(self, month_start: date) -> str:
        """The TLC's file of the month, directly under its base URL."""
        return f"{self.file_stem(month_start)}.parquet"

    def month_table(self, month_start: date) -> str:
        """Name of a month's own table (BigQuery month table, Postgres staging table)."""
        return f"{self.name}_tripdata_{month_start:%Y_%m}"


def _columns(*spec: tuple) -> tuple[Column, ...]:
    return tuple(Column(*fields) for fields in spec)


# The TLC's codes the zoomcamp DDL types as text: integers in the files (int32, int64 or
# double by month), printed as the course files print them.
_VENDOR = ("VendorID", TEXT, BQ_STRING, CODE)
_RATECODE = ("RatecodeID", TEXT, BQ_STRING, CODE)
_PICKUP_ZONE = ("PULocationID", TEXT, BQ_STRING, CODE)
_DROPOFF_ZONE = ("DOLocationID", TEXT, BQ_STRING, CODE)

# The congestion-pricing charge (Manhattan below 60th Street), from January 2025.
CBD_CONGESTION_FEE = Column("cbd_congestion_fee", DOUBLE, BQ_NUMERIC, first_month=date(2025, 1, 1))
# Yellow's airport pickup fee: in every TLC yellow file, spelled `Airport_fee` from 2023-02.
AIRPORT_FEE = Column(
    "airport_fee", DOUBLE, BQ_NUMERIC, aliases=("Airport_fee",), first_month=date(2019, 1, 1)
)


GREEN = TaxiType(
    name="green",
    description="Green (boro) taxi trips: street hails outside Manhattan's core.",
    columns=_columns(
        _VENDOR,
        ("lpep_pickup_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("lpep_dropoff_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("store_and_fwd_flag", TEXT, BQ_STRING),
        _RATECODE,
        _PICKUP_ZONE,
        _DROPOFF_ZONE,
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
    optional_columns=(CBD_CONGESTION_FEE,),
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
        _VENDOR,
        ("tpep_pickup_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("tpep_dropoff_datetime", TIMESTAMP, BQ_TIMESTAMP),
        ("passenger_count", INTEGER, BQ_INTEGER),
        ("trip_distance", DOUBLE, BQ_NUMERIC),
        _RATECODE,
        ("store_and_fwd_flag", TEXT, BQ_STRING),
        _PICKUP_ZONE,
        _DROPOFF_ZONE,
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
    optional_columns=(AIRPORT_FEE, CBD_CONGESTION_FEE),
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
