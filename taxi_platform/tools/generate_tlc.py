"""TLC months for offline use: the generator's trips as the TLC's Parquet files print them.

The TLC serves ``{taxi}_tripdata_{YYYY}-{MM}.parquet`` directly under its base URL; the
mirror serves this folder's ``trip-data/`` in that layout. The trips are those of
``generate.iter_blocks`` (same seed, same trips as the month's course file, quirks
included: out-of-month pickups, exact duplicates, empty ids), written with the real
files' column names and the Arrow types of each period (see
``../shared/data/real/README.md``):

- integer codes ``passenger_count``, ``RatecodeID``, ``payment_type``, green ``trip_type``
  as double (``1.0``); ``VendorID``, ``PULocationID``, ``DOLocationID`` int64, int32 from 2024;
- timestamps ``timestamp[us]``; green ``ehail_fee`` of Arrow type ``null``;
- yellow ``airport_fee`` (NULL before 2021-08, then 1.25 for airport pickups), spelled
  ``Airport_fee`` from 2023-02; ``cbd_congestion_fee`` for both taxis from 2025-01.

Rows go out in row groups as they are made: memory is one row group, whatever the month.
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from taxi_platform.lib.catalog import (
    CODE,
    FIRST_PUBLISHED_MONTH,
    LAST_PUBLISHED_MONTH,
    NUMBER,
    STAMP,
    TaxiType,
)
from taxi_platform.tools.generate import _replacing, iter_blocks, write_month

TLC_FOLDER = "trip-data"
ROW_GROUP_ROWS = 131_072
_INT32_FROM = date(2024, 1, 1)
_AIRPORT_FEE_VALUES_FROM = date(2021, 8, 1)
_AIRPORT_FEE_RENAMED = date(2023, 2, 1)
_CBD_FROM = date(2025, 1, 1)
_AIRPORT_ZONES = ("132", "138")
_WIDE_CODES = ("VendorID", "PULocationID", "DOLocationID")


def tlc_path(taxi: TaxiType, month_start: date) -> str:
    """The month's path below a mirror folder, in the TLC's layout."""
    return f"{TLC_FOLDER}/{taxi.parquet_name(month_start)}"


def writers_for(layout: str, month_start: date) -> list:
    """The writers ``taxi-platform generate --layout`` runs for a month (see its help)."""
    in_course = FIRST_PUBLISHED_MONTH <= month_start <= LAST_PUBLISHED_MONTH
    course = layout in ("course", "both") or (layout == "auto" and in_course)
    tlc = layout in ("tlc", "both") or (layout == "auto" and not in_course)
    return [writer for writer, wanted in ((write_month, course), (write_tlc_month, tlc)) if wanted]


def arrow_type(taxi: TaxiType, name: str, month_start: date) -> pa.DataType:
    """The Arrow type the TLC's file of that period gives a course column."""
    column = taxi.column(name)
    if name == "ehail_fee":
        return pa.null()
    if name in _WIDE_CODES:
        return pa.int32() if month_start >= _INT32_FROM else pa.int64()
    if column.kind == CODE or column.kind == NUMBER:
        return pa.float64()
    if column.kind == STAMP:
        return pa.timestamp("us")
    return pa.string()


def write_tlc_month(
    taxi: TaxiType, month_start: date, rows: int, out_dir: Path, seed: int = 0
) -> Path:
    """Write the month's Parquet file at ``out_dir / tlc_path(...)``, renamed when complete."""
    target = Path(out_dir) / tlc_path(taxi, month_start)
    blocks = iter_blocks(taxi, month_start, rows, seed)
    header = next(blocks)
    schema = tlc_schema(taxi, month_start)
    with _replacing(target) as raw:
        with pq.ParquetWriter(raw, schema) as writer:
            pending: list[pa.Table] = []
            pending_rows = 0
            for block in blocks:
                table = _block_table(taxi, month_start, header + block, schema)
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending))
                    pending, pending_rows = [], 0
            if pending or rows == 0:
                writer.write_table(pa.concat_tables(pending) if pending else schema.empty_table())
    return target


def tlc_schema(taxi: TaxiType, month_start: date) -> pa.Schema:
    fields = [pa.field(name, arrow_type(taxi, name, month_start)) for name in taxi.header]
    if taxi.name == "yellow":
        spelled = "Airport_fee" if month_start >= _AIRPORT_FEE_RENAMED else "airport_fee"
        fields.append(pa.field(spelled, pa.float64()))
    if month_start >= _CBD_FROM:
        fields.append(pa.field("cbd_congestion_fee", pa.float64()))
    return pa.schema(fields)


def _block_table(taxi: TaxiType, month_start: date, text: str, schema: pa.Schema) -> pa.Table:
    """One block of course-format CSV text as a table of the period's types."""
    types = {name: pa.string() for name in taxi.header}
    parsed = pa_csv.read_csv(
        io.BytesIO(text.encode()),
        convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )
    columns = {}
    for name in taxi.header:
        wanted = schema.field(name).type
        values = parsed.column(name)
        if pa.types.is_null(wanted):
            columns[name] = pa.nulls(len(values))
        elif pa.types.is_integer(wanted):
            columns[name] = pc.cast(pc.cast(values, pa.float64()), wanted)
        else:
            columns[name] = pc.cast(values, wanted)
    for field in schema:
        if field.name not in columns:
            columns[field.name] = _drift_column(field.name, parsed, month_start)
    return pa.table(columns, schema=schema)


def _drift_column(name: str, parsed: pa.Table, month_start: date) -> pa.Array:
    """Values of the columns the course files lack, shaped as the TLC's."""
    rows = parsed.num_rows
    if name == "cbd_congestion_fee":
        # Trips ending in zones below 60th Street pay 0.75; a stand-in: even zone numbers.
        dropoff = pc.cast(parsed.column("DOLocationID"), pa.float64())
        charged = pc.equal(pc.bit_wise_and(pc.cast(pc.fill_null(dropoff, 1), pa.int64()), 1), 0)
        return pc.if_else(charged, 0.75, 0.0)
    if month_start < _AIRPORT_FEE_VALUES_FROM:
        return pa.nulls(rows, pa.float64())
    at_airport = pc.is_in(parsed.column("PULocationID"), pa.array(_AIRPORT_ZONES))
    return pc.if_else(pc.fill_null(at_airport, False), 1.25, 0.0)
