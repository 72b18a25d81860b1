"""The staged month: the landed CSV with its ids, on disk between staging and the merge.

Staging writes ``{landed csv}.staged`` (the final table's columns: ``unique_row_id``,
``filename``, then the file's own) and a sidecar ``{landed csv}.staged.json`` naming the
landed file it came from (sha256), its rows and bytes, and who computes the ids. The
merge ``COPY``s it into the final table and deletes both once committed.

A file, not an unlogged table: a crash of the database between the two steps used to
empty the staging table (unlogged tables are reset by crash recovery), and the month had
to be staged again; a file survives it. The sidecar is written last, after the file is
complete and renamed into place, so a staged month without a sidecar is no staged month,
and one whose bytes differ from the sidecar's is refused by the merge (``damage``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb

from taxi_platform.lib.catalog import Column, TaxiType
from taxi_platform.lib.sql import duckdb_ids

# Who computed the ids: DuckDB in the staging pass, or nobody yet (the month holds a value
# DuckDB cannot parse, or a double beyond 2^53 whose text it cannot reproduce; the merge
# computes them, and Postgres's COPY names the line of a value it cannot parse either).
IDS_IN_FILE = "in_file"
IDS_LEFT_TO_POSTGRES = "left_to_postgres"
# How DuckDB read the landed file: whole lines (``duckdb_ids.copy_lines_with_ids``) or
# field by field (``duckdb_ids.copy_with_ids``).
LINES_PASS = "lines"
FIELDS_PASS = "fields"
# What makes the pass leave the ids to Postgres: a value that does not parse (a conversion
# error) or one beyond exact doubles (``duckdb_ids.BEYOND_EXACT_DOUBLES``, raised by
# ``error()``). Anything else (out of memory, a full disk) fails the staging step.
VALUES_DUCKDB_CANNOT_PRINT_AS_POSTGRES = (duckdb.ConversionException, duckdb.InvalidInputException)


@dataclass(frozen=True)
class StagedMonth:
    """What the sidecar remembers of a staged month."""

    sha256: str  # the landed file's
    rows: int
    bytes: int
    ids: str
    columns: list[str]  # the landed file's columns, in its order
    # When staging began, by the database's clock (ISO 8601): a ledger entry of the same
    # file recorded after it means this staged month was merged already (``merged_before``).
    staged_at: str = ""
    duckdb_pass: str = ""  # LINES_PASS or FIELDS_PASS (empty in sidecars written before)

    def file_columns(self, taxi: TaxiType) -> tuple[Column, ...]:
        return taxi.columns_of_header(tuple(self.columns))


def staged_path(csv_path: Path) -> Path:
    """Beside the landed file, named after it (``LandingArea.purge`` finds it by month)."""
    return csv_path.with_name(csv_path.name + ".staged")


def sidecar_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + ".staged.json")


def stage_file(
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    columns: tuple[Column, ...],
    sha256: str,
    staged_at: datetime,
) -> StagedMonth:
    """Write the month's staged file and then its sidecar; any earlier one goes first.

    The caller holds the month's lock, so a half-written file of this month is the
    leftover of a killed run, and goes too.
    """
    remove(csv_path)
    target = staged_path(csv_path)
    for leftover in target.parent.glob(f".{target.name}.*.writing*"):
        leftover.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.writing")
    try:
        rows, ids, duckdb_pass = _write_with_ids(taxi, month_start, csv_path, columns, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync(partial)
    partial.rename(target)
    staged = StagedMonth(
        sha256=sha256,
        rows=rows,
        bytes=target.stat().st_size,
        ids=ids,
        columns=[column.name for column in columns],
        staged_at=staged_at.isoformat(),
        duckdb_pass=duckdb_pass,
    )
    sidecar_partial = partial.with_name(partial.name + ".json")
    sidecar_partial.write_text(json.dumps(asdict(staged)))
    _fsync(sidecar_partial)
    sidecar_partial.rename(sidecar_path(csv_path))
    return staged


def _write_with_ids(
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    columns: tuple[Column, ...],
    target: Path,
) -> tuple[int, str, str]:
    """The staged file's rows, who computes the ids, and the pass that wrote it: the
    cheapest that can.

    Plain lines (every trip file we know) go through ``duckdb_ids.copy_lines_with_ids``;
    a file it refuses (quoted fields, a short line) or a value it cannot print is tried
    again field by field (``copy_with_ids``), and a value that pass cannot print either
    leaves the ids to Postgres. Each attempt rewrites ``target`` from the start.
    """
    if duckdb_ids.lines_pass_applies(taxi, columns):
        statement = duckdb_ids.copy_lines_with_ids(taxi, month_start, csv_path, columns, target)
        try:
            return _run(statement, with_ids=True), IDS_IN_FILE, LINES_PASS
        except VALUES_DUCKDB_CANNOT_PRINT_AS_POSTGRES:
            pass
    try:
        statement = duckdb_ids.copy_with_ids(taxi, month_start, csv_path, columns, target)
        return _run(statement, with_ids=True), IDS_IN_FILE, FIELDS_PASS
    except VALUES_DUCKDB_CANNOT_PRINT_AS_POSTGRES:
        statement = duckdb_ids.copy_with_ids(
            taxi, month_start, csv_path, columns, target, with_ids=False
        )
        return _run(statement, with_ids=False), IDS_LEFT_TO_POSTGRES, FIELDS_PASS


def _run(statement: str, with_ids: bool) -> int:
    """One DuckDB ``COPY``; the rows it wrote."""
    with duckdb.connect(config=duckdb_ids.connection_config(with_ids)) as db:
        return db.execute(statement).fetchone()[0]


def _fsync(path: Path) -> None:
    """On disk before the rename: a staged month must not come back empty after a crash."""
    with open(path, "rb") as written:
        os.fsync(written.fileno())


def read(csv_path: Path) -> StagedMonth | None:
    """The staged month's sidecar, or None when nothing is staged."""
    try:
        return StagedMonth(**json.loads(sidecar_path(csv_path).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return StagedMonth(sha256="", rows=-1, bytes=-1, ids="", columns=[])


def merged_before(staged: StagedMonth, ledger_sha256: str, loaded_at: datetime) -> bool:
    """True when the ledger recorded this very staging of the file: same sha256, loaded
    after it was staged. The merge commits before it deletes the staged file, so a kill
    between the two leaves a staged month that is already in the table; merging it again
    would copy every row, take each out again and record 0 rows inserted. A forced reload
    stages the file anew, after the ledger entry, and is merged."""
    if not staged.staged_at or staged.sha256 != ledger_sha256:
        return False
    return loaded_at > datetime.fromisoformat(staged.staged_at)


def damage(csv_path: Path, staged: StagedMonth) -> str | None:
    """What is wrong with a staged file (missing, unreadable sidecar, other size), or None."""
    path = staged_path(csv_path)
    if staged.rows < 0:
        return f"its sidecar {sidecar_path(csv_path).name} cannot be read"
    if not path.exists():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != staged.bytes:
        return f"{path} holds {size:,} bytes where staging wrote {staged.bytes:,}"
    return None


def remove(csv_path: Path) -> int:
    """Delete the staged file and its sidecar (sidecar first); the bytes freed."""
    freed = 0
    for path in (sidecar_path(csv_path), staged_path(csv_path)):
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    return freed
