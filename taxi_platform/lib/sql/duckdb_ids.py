"""DuckDB SQL of the staging pass: the landed CSV again, with the zoomcamp ids in front.

The ids are computed before Postgres sees the month, so the merge writes every row once
(one ``COPY`` into the final table) instead of twice (a staging table, then an
``INSERT ... SELECT`` computing md5). They must equal the ids Postgres computes
(``postgres.unique_row_id``): md5 over ``coalesce(cast(column as text), '')``, so this
module prints each value as Postgres's casts print it (``SESSION_SETTINGS``: ISO
timestamps, shortest round-trip doubles). ``test_staged_month.py`` feeds both engines the
values where their printing differs and asks Postgres to recompute every id.

Every column is read as text and written back as it came: Postgres still parses the
file's own values, and only the two new columns are DuckDB's.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from taxi_platform.lib.catalog import DOUBLE, TEXT, TIMESTAMP, Column, TaxiType

# Below 2^53 every double is printed the same, shortest, by both engines; above it
# Postgres's Ryu sometimes keeps a halfway 17th digit (-5.1520023061084864e+16), so such a
# value stops the pass, and the month's ids are left to Postgres (``staged_month``).
EXACT_DOUBLES_BELOW = 2**53
BEYOND_EXACT_DOUBLES = "taxi_platform: a double beyond 2^53"


# The CSV reader's buffer. DuckDB's default (about 30 MB a thread) held 74 MB more at the
# peak of a 1M-row pass than 4 MB does, at the same speed (0.89 s against 0.95 s), and a
# run's memory is bounded (issue 16: under 400 MB): measured with a 1M-row yellow month.
CSV_BUFFER_BYTES = 4 * 1024 * 1024


def connection_config(with_ids: bool) -> dict:
    """DuckDB's settings for the pass: 2 threads, 64 MB, and the rows' order kept only
    when the ids are left to Postgres. Row order does not matter to COPY, and keeping it
    makes DuckDB buffer the output, which under the memory limit doubled the pass (2.6 s
    against 1.3 s, 1M rows); but without ids the pass runs because a value did not parse,
    and then Postgres's COPY error must name the landed file's own line."""
    return {"threads": 2, "memory_limit": "64MB", "preserve_insertion_order": not with_ids}


def pg_text(column: Column) -> str:
    """DuckDB SQL for ``coalesce(cast(column as text), '')`` as Postgres computes it.

    DuckDB parses the file's text into the same value (both round doubles correctly, both
    read ``T``, offsets and ``24:00`` alike) and prints it nearly as Postgres does. Three
    differences are mended: a whole double prints ``1.0`` in DuckDB and ``1`` in
    Postgres; between 1e15 and 1e16 Postgres already switches to an exponent (``1.5e+15``)
    where DuckDB does not; and the names ``nan``/``inf``. A value beyond 2^53 raises
    ``BEYOND_EXACT_DOUBLES``, and one DuckDB cannot parse raises its conversion error.
    Text columns are the file's own bytes in both.
    """
    name = identifier(column.name)
    if column.postgres_type == TEXT:
        return f"coalesce({name}, '')"
    if column.postgres_type == TIMESTAMP:
        return f"coalesce(cast(cast({name} as timestamp) as varchar), '')"
    if column.postgres_type == DOUBLE:
        # Parsed and printed once per row, by ``with_doubles_once``: written inline, the
        # cast was repeated in each branch (the pass over 2M yellow rows, median of five
        # alternating runs: 3.14 core-seconds against 2.86, the same file).
        value = double_value(column)
        printed = double_printed(column)
        # The digits of a value in [1e15, 1e16): 16 before the point, maybe some after.
        digits = f"rtrim(replace(replace({printed}, '-', ''), '.', ''), '0')"
        exponent_form = (
            f"(case when {value} < 0 then '-' else '' end) || left({digits}, 1) || "
            f"(case when length({digits}) > 1 then '.' || substr({digits}, 2) else '' end)"
            " || 'e+15'"
        )
        return (
            f"coalesce(case when isnan({value}) then 'NaN' "
            f"when isinf({value}) then "
            f"(case when {value} > 0 then 'Infinity' else '-Infinity' end) "
            f"when abs({value}) >= {EXACT_DOUBLES_BELOW} "
            f"then error({literal(BEYOND_EXACT_DOUBLES + ' in ' + column.name + ': ')} || {name}) "
            f"when abs({value}) >= 1e15 then {exponent_form} "
            f"when suffix({printed}, '.0') then {printed}[:-3] else {printed} end, '')"
        )
    return f"coalesce(cast(cast({name} as bigint) as varchar), '')"


def double_value(column: Column) -> str:
    return identifier(f"taxi_platform_double_{column.name}")


def double_printed(column: Column) -> str:
    return identifier(f"taxi_platform_printed_{column.name}")


def with_doubles_once(taxi: TaxiType, source: str) -> str:
    """``source`` with each double of the id parsed (``double_value``) and printed
    (``double_printed``) once per row, for ``pg_text``: two nested selects, since a
    select's columns cannot refer to each other."""
    doubles = [
        taxi.column(name)
        for name in taxi.postgres_id_columns
        if taxi.column(name).postgres_type == DOUBLE
    ]
    if not doubles:
        return source
    parsed = ", ".join(
        f"cast({identifier(c.name)} as double) as {double_value(c)}" for c in doubles
    )
    printed = ", ".join(
        f"cast({double_value(c)} as varchar) as {double_printed(c)}" for c in doubles
    )
    return f"(select *, {printed} from (select *, {parsed} from {source}))"


def unique_row_id(taxi: TaxiType) -> str:
    """DuckDB SQL of the zoomcamp id (``postgres.unique_row_id`` is Postgres's), over a
    source that went through ``with_doubles_once``."""
    return "md5(" + " || ".join(pg_text(taxi.column(n)) for n in taxi.postgres_id_columns) + ")"


# The lines pass (``copy_lines_with_ids``) reads each line whole, as one column: a
# separator no trip file holds (ASCII's unit separator) splits nothing, and no quote
# character is known. It writes each line back behind its id the same way, so the CSV
# writer finds nothing to quote.
LINE_SEPARATOR = chr(31)
NO_QUOTE = chr(30)
NOT_A_PLAIN_LINE = "taxi_platform: a line with quotes or another number of fields"
# A quote, a carriage return, or the character the lines pass quotes with: the CSV writer
# would quote the line. (Its separator cannot be in a line: the line would have two.)
NOT_IN_A_PLAIN_LINE = ('"', "\r", NO_QUOTE)


def lines_pass_applies(taxi: TaxiType, columns: tuple[Column, ...]) -> bool:
    """Whether the file's header holds every column of the id (``copy_lines_with_ids``
    finds them by position)."""
    return all(taxi.column(name) in columns for name in taxi.postgres_id_columns)


def copy_lines_with_ids(
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    columns: tuple[Column, ...],
    target: Path,
) -> str:
    """``copy_with_ids`` for a file of plain lines, at three quarters of its cost: each
    line is read whole, split at its commas for the id's columns only, and written back
    unchanged behind ``unique_row_id`` and ``filename``, where ``copy_with_ids`` parses
    every field and writes every field again (2M yellow rows, median of five: 2.3
    core-seconds against 3.0, of which writing the fields was 1.2; the line's check
    costs a split and three ``contains``, where a regular expression cost 0.5 more).

    A line holding a quote, a carriage return, a character of this pass, or another
    number of fields than the header raises ``NOT_A_PLAIN_LINE`` (a filter, so before any
    of its values is read: quoting would make its commas lie), and the file goes through
    ``copy_with_ids`` (``staged_month``). An empty field is NULL, as in Postgres's COPY
    and DuckDB's CSV reader.
    """
    whole_lines = read_landed_csv(
        csv_path, f"delim = {literal(LINE_SEPARATOR)}, quote = '', escape = ''", ["line"]
    )
    not_plain = " or ".join(f"contains(line, {literal(c)})" for c in NOT_IN_A_PLAIN_LINE)
    split = (
        f"(select line, fields from (select line, string_split(line, ',') as fields "
        f"from {whole_lines}) where case when {not_plain} or len(fields) <> {len(columns)} "
        f"then error({literal(NOT_A_PLAIN_LINE + ': ')} || line) else true end)"
    )
    id_fields = ", ".join(
        f"nullif(fields[{columns.index(column) + 1}], '') as {identifier(column.name)}"
        for column in (taxi.column(name) for name in taxi.postgres_id_columns)
    )
    source = with_doubles_once(taxi, f"(select line, {id_fields} from {split})")
    header = ",".join(["unique_row_id", "filename", *(c.name for c in columns)])
    line = f"{unique_row_id(taxi)} || {literal(f',{taxi.csv_name(month_start)},')} || line"
    query = f"select {line} as {identifier(header)} from {source}"
    return (
        f"copy ({query}) to {literal(target)} (format csv, header true, "
        f"delim {literal(LINE_SEPARATOR)}, quote {literal(NO_QUOTE)}, escape {literal(NO_QUOTE)})"
    )


def copy_with_ids(
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    columns: tuple[Column, ...],
    target: Path,
    with_ids: bool = True,
) -> str:
    """``COPY`` of the landed CSV (``columns``, its header's) to ``target`` with
    ``unique_row_id`` and ``filename`` in front; ``with_ids=False`` leaves the ids empty
    (NULL) for Postgres to compute. DuckDB answers with the number of rows written."""
    names = ", ".join(identifier(c.name) for c in columns)
    source = read_landed_csv(csv_path, "delim = ',', quote = '\"'", [c.name for c in columns])
    if with_ids:
        row_id, source = unique_row_id(taxi), with_doubles_once(taxi, source)
    else:
        row_id = "cast(null as varchar)"
    query = (
        f"select {row_id} as unique_row_id, "
        f"{literal(taxi.csv_name(month_start))} as filename, {names} from {source}"
    )
    return f"copy ({query}) to {literal(target)} (format csv, header true)"


def read_landed_csv(csv_path: Path, dialect: str, column_names: list[str]) -> str:
    """DuckDB's ``read_csv`` of a landed file past its header, every column as text, with
    the bounded buffer (``CSV_BUFFER_BYTES``) in both passes; ``dialect`` is its delimiter
    and quoting."""
    as_text = ", ".join(f"{literal(name)}: 'VARCHAR'" for name in column_names)
    return (
        f"read_csv({literal(csv_path)}, header = true, {dialect}, auto_detect = false, "
        f"buffer_size = {CSV_BUFFER_BYTES}, columns = {{{as_text}}})"
    )


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: object) -> str:
    return "'" + str(text).replace("'", "''") + "'"
