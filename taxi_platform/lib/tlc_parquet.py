"""A TLC Parquet month, converted to the catalogue's CSV as the course files print it.

The TLC publishes every month as Parquet; the platform lands every month as the CSV the
course releases hold, so that Postgres COPY, the GCS upload and the BigQuery external
table stay one path whatever the source. The same trip must get the same
``unique_row_id`` from either source, and the ids hash text: ``VendorID``,
``PULocationID`` and ``RatecodeID`` are text columns, so ``1.0`` (a double in some TLC
months) must print ``1`` as in the course files. So every column is found *by name*
(aliases included, any case), cast by what the catalogue says it holds (never by the
month's Parquet type: int32, int64, double and Arrow ``null`` all occur), and printed:
integer codes without ``.0``, timestamps ``YYYY-MM-DD HH:MM:SS``, NULL as an empty field,
doubles in shortest form. A value that cannot be cast stops the conversion with the
column and the value.

DuckDB streams the file row group by row group into the CSV, under ``MEMORY_LIMIT`` and
``THREADS``: a month is never held in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from taxi_platform.lib.catalog import CODE, NUMBER, STAMP, Column, TaxiType
from taxi_platform.lib.landing import BadTripFile

# Measured on a 3M-row month (bench/tlc_conversion.py): 256MB with 2 threads peaks at
# 439 MB of RSS for the conversion alone, 128MB with 1 thread at 149 MB (121 MB of it the
# process before it starts) in about the same time: the Parquet reader's buffers per
# thread come on top of the limit.
MEMORY_LIMIT = "128MB"
THREADS = 1
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
_NUMERIC_PREFIXES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "U", "FLOAT", "DOUBLE", "DECIMAL")


@dataclass
class ConvertedMonth:
    """What ``land_month`` needs to know of the CSV written (as for a gunzipped file)."""

    bytes: int = 0
    gz_bytes: int = 0  # the Parquet file's bytes, as downloaded
    rows: int = 0
    sha256: str = ""
    last_line: bytes = b""


class ParquetMonthWriter:
    """``land_month``'s writer for a TLC month: the downloaded Parquet bytes go to a hidden
    file beside ``target``; ``finish`` converts it to the CSV at ``target`` and removes it.

    The download itself (resumed with ``Range`` after a cut, restarted when the source
    cannot resume) is ``land_month``'s, as for a course file.
    """

    def __init__(
        self, taxi: TaxiType, target: Path, expected_header: tuple[str, ...], describe: str
    ) -> None:
        if tuple(expected_header) != taxi.full_header:
            raise ValueError(f"{describe}: a TLC month lands in the full {taxi.name} layout")
        self.taxi, self.target, self.describe = taxi, target, describe
        self.parquet = target.with_name(f"{target.name}.parquet")
        self.expected_gz_bytes: int | None = None
        self._out = None
        self._received = 0
        self.restart()

    @property
    def gz_bytes(self) -> int:
        return self._received

    def __enter__(self) -> ParquetMonthWriter:
        return self

    def __exit__(self, error_type, *exc_info) -> None:
        self._close()
        if error_type is not None:  # the download failed: finish() will not run
            self.parquet.unlink(missing_ok=True)

    def restart(self) -> None:
        self._close()
        self._out = open(self.parquet, "wb")
        self._received = 0

    def feed(self, downloaded: bytes) -> None:
        self._out.write(downloaded)
        self._received += len(downloaded)

    def finish(self) -> ConvertedMonth:
        self._close()
        if self._received == 0:
            self.parquet.unlink(missing_ok=True)
            raise BadTripFile(f"{self.describe}: the file is empty")
        try:
            rows = convert_file(self.taxi, self.parquet, self.target, self.describe)
        finally:
            self.parquet.unlink(missing_ok=True)
        stats = _describe_csv(self.target)
        stats.gz_bytes, stats.rows = self._received, rows
        return stats

    def _close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            out.close()


def convert_file(taxi: TaxiType, parquet: Path, target: Path, describe: str) -> int:
    """Write ``parquet`` as the catalogue's full CSV layout at ``target``; its row count."""
    with duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "threads": THREADS}) as db:
        db.execute("SET TimeZone = 'UTC'")
        db.execute("SET preserve_insertion_order = true")  # same file, same bytes
        db.execute("SET enable_progress_bar = false")  # a run's log is no terminal
        db.execute(f"SET temp_directory = {_literal(str(target.parent / '.duckdb_tmp'))}")
        source = f"read_parquet({_literal(str(parquet))})"
        try:
            described = db.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        except duckdb.Error as error:
            raise BadTripFile(
                f"{describe}: not a complete Parquet file (truncated download or broken "
                f"file): {_first_line(error)}"
            ) from None
        file_types = {name: column_type for name, column_type, *_ in described}
        selects = [_select(column, file_types, describe) for column in taxi.all_columns]
        query = f"SELECT {', '.join(selects)} FROM {source}"
        try:
            copied = db.execute(
                f"COPY ({query}) TO {_literal(str(target))} (FORMAT csv, HEADER true)"
            ).fetchone()
        except duckdb.Error as error:
            problem = _first_line(error)
            raise BadTripFile(f"{describe}: conversion to CSV failed: {problem}") from None
    return int(copied[0]) if copied else 0


def _select(column: Column, file_types: dict[str, str], describe: str) -> str:
    """The expression that prints ``column`` as the course files do, named as the catalogue."""
    found = _file_column(column, file_types)
    alias = _identifier(column.name)
    if found is None:
        if column.first_month is None:
            raise BadTripFile(
                f"{describe}: required column {column.name!r} is missing "
                f"(the file has: {', '.join(file_types)})"
            )
        return f"NULL AS {alias}"
    return f"{_cast(column, _identifier(found), file_types[found])} AS {alias}"


def _file_column(column: Column, file_types: dict[str, str]) -> str | None:
    wanted = {name.lower() for name in (column.name, *column.aliases)}
    for name in file_types:
        if name.lower() in wanted:
            return name
    return None


def _cast(column: Column, source: str, file_type: str) -> str:
    """A cast by the catalogue's kind; what cannot be cast raises, naming column and value."""
    file_type = file_type.upper()
    if file_type == '"NULL"' or file_type == "NULL":
        return "NULL"
    if column.kind == CODE:
        if file_type in _INTEGER_TYPES:
            return f"CAST({source} AS BIGINT)"
        as_double = f"TRY_CAST({source} AS DOUBLE)"
        whole = f"{as_double} = trunc({as_double}) AND abs({as_double}) < 1e15"
        return _guarded(column, source, whole, f"CAST({as_double} AS BIGINT)", "an integer code")
    if column.kind == STAMP:
        printed = f"strftime(CAST({source} AS TIMESTAMP), '%Y-%m-%d %H:%M:%S')"
        if file_type.startswith(("TIMESTAMP", "DATE")):
            return printed
        castable = f"TRY_CAST({source} AS TIMESTAMP) IS NOT NULL"
        return _guarded(column, source, castable, printed, "a timestamp")
    if column.kind == NUMBER:
        printed = _shortest(f"TRY_CAST({source} AS DOUBLE)")
        if file_type.startswith(_NUMERIC_PREFIXES):
            return printed
        castable = f"TRY_CAST({source} AS DOUBLE) IS NOT NULL"
        return _guarded(column, source, castable, printed, "a number")
    return f"CAST({source} AS VARCHAR)"


def _shortest(number: str) -> str:
    """A double as the course files print it: ``13`` not ``13.0``, else the shortest form
    that reads back as the same double (``0.86``)."""
    return (
        f"CASE WHEN {number} = trunc({number}) AND abs({number}) < 1e15 "
        f"THEN CAST(CAST({number} AS BIGINT) AS VARCHAR) ELSE CAST({number} AS VARCHAR) END"
    )


def _guarded(column: Column, source: str, castable: str, value: str, what: str) -> str:
    message = (
        f"{_literal(f'column {column.name}: value ')} || {_literal(chr(39))} || "
        f"CAST({source} AS VARCHAR) || {_literal(chr(39) + f' is not {what}')}"
    )
    return (
        f"CASE WHEN {source} IS NULL THEN NULL WHEN {castable} THEN {value} "
        f"ELSE error({message}) END"
    )


def _describe_csv(csv_path: Path) -> ConvertedMonth:
    """Bytes, sha256 and last line of the CSV written (one streaming read)."""
    stats, digest, tail = ConvertedMonth(), hashlib.sha256(), b""
    with open(csv_path, "rb") as csv_file:
        while block := csv_file.read(1 << 20):
            digest.update(block)
            stats.bytes += len(block)
            tail = (tail + block)[-65536:]
    stats.sha256 = digest.hexdigest()
    stats.last_line = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    return stats


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]
