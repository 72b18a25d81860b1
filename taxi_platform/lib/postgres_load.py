"""Loading one month into Postgres: stage the file with its ids, then COPY it into the final table.

The assets call these functions, and so do the benchmark and the tests, so every caller
loads a month the same way. See ``taxi_platform.lib.sql.postgres`` for why the steps are
cheap, and ``taxi_platform.lib.staged_month`` for the staged file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from taxi_platform.lib import staged_month
from taxi_platform.lib.catalog import Column, TaxiType
from taxi_platform.lib.landing import parse_header
from taxi_platform.lib.sql import postgres as statements

COPY_CHUNK_BYTES = 1 << 20


class LoadError(Exception):
    """A month could not be staged or merged; the final table is as it was."""


class StagedFileDamaged(LoadError):
    """The staged file is missing, cut short or not what staging wrote.

    Merging it would record the month with rows missing, so the merge refuses, and the
    next staging run writes the file again (the ledger has no entry).
    """


class DatabaseWentAway(LoadError):
    """The server closed the connection, crashed or refused new ones mid-step.

    When Dagster's storage lives on the same server, this error may be the last thing the
    run can say: its own events cannot be written until the server is back.
    """


def went_away(error: BaseException) -> bool:
    """True for a lost or refused connection (no server answer, or SQLSTATE class 57P/08)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = getattr(getattr(error, "diag", None), "sqlstate", None) or ""
    return not sqlstate or sqlstate.startswith(("57P", "08"))


def database_went_away(describe: str, step: str, error: BaseException) -> DatabaseWentAway:
    detail = (str(error).strip().splitlines() or ["no answer"])[0]
    return DatabaseWentAway(
        f"{describe}: the database went away during {step} ({detail}); nothing of the month "
        "was merged and the final table is as it was. It loads on the next run once the "
        "database is back."
    )


@dataclass(frozen=True)
class StageResult:
    rows_staged: int
    already_loaded: bool


@dataclass(frozen=True)
class MergeResult:
    rows_staged: int
    rows_inserted: int
    already_loaded: bool

    @property
    def rows_already_present(self) -> int:
        return self.rows_staged - self.rows_inserted


def ensure_tables(connection: psycopg.Connection, taxi: TaxiType, final_schema: str) -> None:
    """Create what a load needs, once; concurrent runs wait for each other here."""
    with connection.transaction():
        connection.execute("select pg_advisory_xact_lock(hashtext('taxi_platform:setup'))")
        for statement in statements.setup_statements(taxi, final_schema):
            connection.execute(statement)


def stage_month(
    connection: psycopg.Connection,
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    sha256: str,
    describe: str,
    final_schema: str = "public",
    force: bool = False,
) -> StageResult:
    """Write the month's staged file: the landed CSV with its ids (``staged_month``).

    A file the ledger already records as merged, with the same sha256, is not staged
    again: the re-run of a loaded month costs one lookup. The month's lock is held in the
    database while the file is written, so that two runs of the month take turns, and the
    merge of it never reads a file being rewritten.
    """
    ensure_tables(connection, taxi, final_schema)
    entry = connection.execute(statements.ledger_entry(taxi, month_start, final_schema)).fetchone()
    if not force and entry is not None and entry[0] == sha256:
        return StageResult(rows_staged=entry[1], already_loaded=True)
    columns = _file_columns(taxi, csv_path, describe)
    try:
        with connection.transaction():
            connection.execute(statements.month_lock(taxi, month_start))
            # Asked again under the lock: another run of the month may have merged this
            # very file while this one waited, and restaging it would only be merged as 0.
            entry = connection.execute(
                statements.ledger_entry(taxi, month_start, final_schema)
            ).fetchone()
            if not force and entry is not None and entry[0] == sha256:
                return StageResult(rows_staged=entry[1], already_loaded=True)
            staged_at = connection.execute(statements.database_clock()).fetchone()[0]
            staged = _write_staged_file(
                taxi, month_start, csv_path, columns, sha256, staged_at, describe
            )
    except psycopg.Error as error:
        if went_away(error):
            raise database_went_away(describe, "staging", error) from error
        raise LoadError(f"{describe}: staging failed: {_explain(error)}") from error
    return StageResult(rows_staged=staged.rows, already_loaded=False)


def _write_staged_file(
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    columns: tuple[Column, ...],
    sha256: str,
    staged_at: datetime,
    describe: str,
) -> staged_month.StagedMonth:
    try:
        return staged_month.stage_file(taxi, month_start, csv_path, columns, sha256, staged_at)
    except duckdb.Error as error:
        detail = (str(error).strip().splitlines() or ["no detail"])[0]
        raise LoadError(
            f"{describe}: writing the staged file {staged_month.staged_path(csv_path).name} "
            f"failed: {detail}; nothing was merged and the final table is unchanged"
        ) from error
    except OSError as error:
        raise LoadError(
            f"{describe}: writing the staged file {staged_month.staged_path(csv_path)} "
            f"failed: {error.strerror or error}; nothing was merged and the final table "
            "is unchanged"
        ) from error


def _file_columns(taxi: TaxiType, csv_path: Path, describe: str) -> tuple:
    """The columns the landed CSV holds: the course layout, or the full one (TLC months)."""
    with open(csv_path, "rb") as csv_file:
        first_line = csv_file.readline(65536)
    try:
        return taxi.columns_of_header(parse_header(first_line))
    except ValueError as error:
        raise LoadError(f"{describe}: {error}") from None


def merge_month(
    connection: psycopg.Connection,
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    describe: str,
    final_schema: str = "public",
) -> MergeResult:
    """COPY the staged month (``csv_path``'s staged file) into the final table, in one
    transaction, then delete the staged file.

    The COPY, the removal of rows the table already held, and the ledger entry commit
    together or not at all, so a failure leaves the final table as it was and the month
    can be retried; the staged file stays until the commit.
    """
    ensure_tables(connection, taxi, final_schema)
    try:
        with connection.transaction():
            # The month lock first: a second run of this month restaging it waits until
            # this merge has committed (or rolled back), and never rewrites the file under it.
            connection.execute(statements.month_lock(taxi, month_start))
            connection.execute(statements.table_lock(taxi, final_schema))
            apply_settings(connection, statements.SESSION_SETTINGS)
            staged = staged_month.read(csv_path)
            entry = connection.execute(
                statements.ledger_entry(taxi, month_start, final_schema)
            ).fetchone()
            if staged is None:
                return _merged_before(entry, describe)
            if entry is not None and staged_month.merged_before(staged, entry[0], entry[3]):
                merged = _merged_before(entry, describe)
            else:
                merged = _merge_staged(
                    connection, taxi, month_start, csv_path, staged, describe, final_schema
                )
    except LoadError:
        raise
    except psycopg.Error as error:
        if went_away(error):
            raise database_went_away(describe, "the merge", error) from error
        raise LoadError(
            f"{describe}: merge into the final table failed: {_explain(error)}"
        ) from error
    staged_month.remove(csv_path)
    return merged


def _merged_before(ledger_entry: tuple | None, describe: str) -> MergeResult:
    """Nothing staged: fine if the ledger has the month (a re-run), else say what to run."""
    if ledger_entry is None:
        raise LoadError(
            f"{describe}: nothing staged and not loaded before; materialize the staging asset first"
        )
    return MergeResult(rows_staged=ledger_entry[1], rows_inserted=0, already_loaded=True)


def _staged_file_damaged(describe: str, problem: str) -> StagedFileDamaged:
    return StagedFileDamaged(
        f"{describe}: the staged file cannot be merged: {problem}; nothing was merged and "
        "the final table is unchanged. Stage the month again: materialize its raw file and "
        "staging assets, then this one (or all three at once)."
    )


def _merge_staged(
    connection: psycopg.Connection,
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    staged: staged_month.StagedMonth,
    describe: str,
    final_schema: str,
) -> MergeResult:
    """COPY the staged rows, delete those met again, record the file."""
    problem = staged_month.damage(csv_path, staged)
    if problem is not None:
        raise _staged_file_damaged(describe, problem)
    month_range = statements.month_range(month_start)
    in_bulk = _emptied_for_bulk_load(connection, taxi, final_schema)
    final_bytes = 0
    if not in_bulk:
        final_bytes = connection.execute(
            statements.heap_bytes(statements.final_table(taxi, final_schema))
        ).fetchone()[0]
    if final_bytes:
        connection.execute(
            statements.collect_rows_at_month_pickups(taxi, final_schema), month_range
        )
    copied = _copy_staged_file(connection, taxi, csv_path, staged, final_schema, in_bulk)
    if copied != staged.rows:
        raise _staged_file_damaged(
            describe, f"it gave {copied:,} rows where staging wrote {staged.rows:,}"
        )
    apply_settings(connection, statements.MONTH_ROWS_PLAN_SETTINGS)
    if staged.ids == staged_month.IDS_LEFT_TO_POSTGRES:
        connection.execute(statements.compute_missing_ids(taxi, month_start, final_schema))
    if in_bulk:
        for statement in statements.final_table_indexes(taxi, final_schema):
            connection.execute(statement)
    met_again = 0
    if final_bytes:
        met_again = _delete_rows_met_again(
            connection, taxi, month_start, month_range, final_schema, copied
        )
    inserted = copied - met_again
    _summarize_filename_index(connection, taxi, final_schema)
    connection.execute(
        statements.record_load(taxi, month_start, final_schema),
        (staged.sha256, copied, inserted),
    )
    return MergeResult(rows_staged=copied, rows_inserted=inserted, already_loaded=False)


def _emptied_for_bulk_load(
    connection: psycopg.Connection, taxi: TaxiType, final_schema: str
) -> bool:
    """Make an empty final table ready for a bulk load (``statements.fill_empty_table``),
    under an exclusive lock until the commit; False, and the table untouched, when it holds
    rows or is not ours to truncate (``statements.loadable_in_bulk``).

    The table is asked twice: first without a lock, so that a merge into a table holding
    rows never blocks its readers; then under the lock, because a writer other than the
    platform (a Kestra flow) may have committed rows in between.
    """
    loadable = statements.loadable_in_bulk(taxi, final_schema)
    if not connection.execute(loadable).fetchone()[0]:
        return False
    connection.execute(statements.lock_final_table(taxi, final_schema))
    if not connection.execute(loadable).fetchone()[0]:
        return False
    for statement in statements.fill_empty_table(taxi, final_schema):
        connection.execute(statement)
    return True


def _copy_staged_file(
    connection: psycopg.Connection,
    taxi: TaxiType,
    csv_path: Path,
    staged: staged_month.StagedMonth,
    final_schema: str,
    freeze: bool,
) -> int:
    """Stream the staged file into the final table; the rows COPY read."""
    statement = statements.copy_into_final(
        taxi, staged.file_columns(taxi), final_schema, freeze=freeze
    )
    with connection.cursor() as cursor:
        return copy_file(cursor, statement, staged_month.staged_path(csv_path))


def apply_settings(connection: psycopg.Connection, settings: tuple[sql.Composable, ...]) -> None:
    """Execute ``set local`` settings (``statements.*_SETTINGS``); they hold until the
    transaction ends."""
    for setting in settings:
        connection.execute(setting)


def copy_file(cursor: psycopg.Cursor, statement: sql.Composable, path: Path) -> int:
    """Stream a CSV file into ``COPY ... FROM STDIN`` in 1 MiB chunks, never holding it
    whole; the rows COPY read. The benchmark's contenders stream the same way, so that
    they differ only in their SQL."""
    with cursor.copy(statement) as copy:
        with open(path, "rb") as csv_file:
            while chunk := csv_file.read(COPY_CHUNK_BYTES):
                copy.write(chunk)
    return cursor.rowcount


def _delete_rows_met_again(
    connection: psycopg.Connection,
    taxi: TaxiType,
    month_start: date,
    month_range: dict[str, date],
    final_schema: str,
    copied: int,
) -> int:
    """Remove the copied rows whose id an earlier row holds, under the table lock the
    merge holds; how many. Few candidates (the usual next month: its neighbours' rows at
    its edges) are looked up one by one (``statements.delete_rows_met_again_at_candidates``);
    many (a re-published or overlapping file) are met in one hash join over the ``copied``
    rows (``statements.delete_rows_met_again``), run after ``MONTH_ROWS_PLAN_SETTINGS``
    with the join's own settings added."""
    connection.execute(
        statements.add_rows_at_out_of_month_pickups(taxi, month_start, final_schema),
        month_range,
    )
    candidates = connection.execute(statements.count_rows_at_pickups()).fetchone()[0]
    if not candidates:
        return 0
    if candidates * statements.COPIED_ROWS_PER_CANDIDATE_FOR_LOOKUPS <= copied:
        return connection.execute(
            statements.delete_rows_met_again_at_candidates(taxi, month_start, final_schema)
        ).rowcount
    connection.execute(statements.analyze_rows_at_pickups())
    apply_settings(connection, statements.MERGE_PLAN_SETTINGS)
    return connection.execute(
        statements.delete_rows_met_again(taxi, month_start, final_schema)
    ).rowcount


def _summarize_filename_index(
    connection: psycopg.Connection, taxi: TaxiType, final_schema: str
) -> None:
    """Keep the month's rows findable by file name at the cost of the month, not the table.

    Only the table's owner may summarize; a platform user who is not (a table the zoomcamp
    flow created under another role) leaves it to autovacuum, as before.
    """
    try:
        with connection.transaction():
            connection.execute(statements.summarize_filename_index(taxi, final_schema))
    except psycopg.errors.InsufficientPrivilege:
        pass


def _explain(error: psycopg.Error) -> str:
    """The server's own words (message, line of the file) without connection details."""
    diag = getattr(error, "diag", None)
    primary = diag.message_primary if diag is not None else None
    if isinstance(error, psycopg.OperationalError) and not primary:
        return f"lost the connection to Postgres ({str(error).strip().splitlines()[0]})"
    parts = [primary or str(error).strip().splitlines()[0]]
    if diag is not None and diag.context:
        parts.append(diag.context.strip().splitlines()[0])
    return "; ".join(parts)
