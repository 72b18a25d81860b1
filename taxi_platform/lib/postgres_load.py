"""Loading one month into Postgres: stage the file, then merge it into the final table.

The assets call these functions, and so do the benchmark and the tests, so every caller
loads a month the same way. See ``taxi_platform.lib.sql.postgres`` for why the steps are cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.landing import parse_header
from taxi_platform.lib.months import next_month
from taxi_platform.lib.sql import postgres as statements

COPY_CHUNK_BYTES = 1 << 20


class LoadError(Exception):
    """A month could not be staged or merged; the final table is as it was."""


class StagingLost(LoadError):
    """The staging table lost its rows (crash recovery empties unlogged tables).

    Merging it would record the month as loaded with none of its rows, so the merge
    refuses, and the next staging run copies the file again (the ledger has no entry).
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
    """COPY the month's CSV into its own staging table.

    A file the ledger already records as merged, with the same sha256, is not staged
    again: the re-run of a loaded month costs one lookup.
    """
    ensure_tables(connection, taxi, final_schema)
    entry = connection.execute(statements.ledger_entry(taxi, month_start, final_schema)).fetchone()
    if not force and entry is not None and entry[0] == sha256:
        return StageResult(rows_staged=entry[1], already_loaded=True)
    staging = statements.staging_table(taxi, month_start)
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
            connection.execute(statements.drop_staging(taxi, month_start))
            connection.execute(statements.create_staging(taxi, month_start))
            with connection.cursor() as cursor:
                copy_statement = statements.copy_into_staging(taxi, month_start, columns)
                with cursor.copy(copy_statement) as copy:
                    with open(csv_path, "rb") as csv_file:
                        while chunk := csv_file.read(COPY_CHUNK_BYTES):
                            copy.write(chunk)
                rows_staged = cursor.rowcount
            # What the merge needs to know about the staged file, kept with the table so
            # that it survives between the two steps (they may run in different processes).
            connection.execute(
                sql.SQL("comment on table {} is {}").format(
                    staging, sql.Literal(f"{sha256} {rows_staged}")
                )
            )
            connection.execute(sql.SQL("analyze {}").format(staging))
    except psycopg.Error as error:
        if went_away(error):
            raise database_went_away(describe, "staging", error) from error
        raise LoadError(f"{describe}: COPY into staging failed: {_explain(error)}") from error
    return StageResult(rows_staged=rows_staged, already_loaded=False)


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
    describe: str,
    final_schema: str = "public",
) -> MergeResult:
    """Move the staged month into the final table in one transaction.

    The insert, the ledger entry and the drop of the staging table commit together or not
    at all, so a failure leaves the final table as it was and the month can be retried.
    """
    ensure_tables(connection, taxi, final_schema)
    try:
        with connection.transaction():
            # The month lock first: a second run of this month restaging it waits until
            # this merge has committed (or rolled back), and never drops the table under it.
            connection.execute(statements.month_lock(taxi, month_start))
            connection.execute(statements.table_lock(taxi, final_schema))
            for setting in statements.SESSION_SETTINGS:
                connection.execute(setting)
            if not connection.execute(statements.staging_exists(taxi, month_start)).fetchone()[0]:
                entry = connection.execute(
                    statements.ledger_entry(taxi, month_start, final_schema)
                ).fetchone()
                return _merged_before(entry, describe)
            return _merge_staged(connection, taxi, month_start, describe, final_schema)
    except StagingLost:
        # Drop the emptied table, so that nothing downstream mistakes it for a staged month.
        with connection.transaction():
            connection.execute(statements.drop_staging(taxi, month_start))
        raise
    except LoadError:
        raise
    except psycopg.Error as error:
        if went_away(error):
            raise database_went_away(describe, "the merge", error) from error
        raise LoadError(
            f"{describe}: merge into the final table failed: {_explain(error)}"
        ) from error


def _merged_before(ledger_entry: tuple | None, describe: str) -> MergeResult:
    """Nothing staged: fine if the ledger has the month (a re-run), else say what to run."""
    if ledger_entry is None:
        raise LoadError(
            f"{describe}: nothing staged and not loaded before; materialize the staging asset first"
        )
    return MergeResult(rows_staged=ledger_entry[1], rows_inserted=0, already_loaded=True)


def _merge_staged(
    connection: psycopg.Connection,
    taxi: TaxiType,
    month_start: date,
    describe: str,
    final_schema: str,
) -> MergeResult:
    """Insert the staged month's new rows, record the file, drop the staging table."""
    staging = statements.staging_table(taxi, month_start)
    note = connection.execute(
        "select obj_description(to_regclass(%s), 'pg_class')",
        (f"{statements.STAGING_SCHEMA}.{taxi.month_table(month_start)}",),
    ).fetchone()[0]
    sha256, rows_staged = _staged_file(note, connection, staging)
    staged_bytes = connection.execute(statements.heap_bytes(staging)).fetchone()[0]
    if rows_staged > 0 and not staged_bytes:
        raise StagingLost(
            f"{describe}: the staging table {statements.STAGING_SCHEMA}."
            f"{taxi.month_table(month_start)} holds none of the {rows_staged:,} rows "
            f"staged from {taxi.csv_name(month_start)} (the database restarted after "
            "a crash, which empties unlogged tables); nothing was merged and the final "
            "table is unchanged. Stage the month again: materialize its raw file and "
            "staging assets, then this one (or all three at once)."
        )
    _collect_rows_at_pickups(connection, taxi, month_start, final_schema)
    for setting in statements.MERGE_PLAN_SETTINGS:
        connection.execute(setting)
    inserted = connection.execute(
        statements.merge_into_final(taxi, month_start, final_schema)
    ).rowcount
    _summarize_filename_index(connection, taxi, final_schema)
    connection.execute(
        statements.record_load(taxi, month_start, final_schema),
        (sha256, rows_staged, inserted),
    )
    connection.execute(statements.drop_staging(taxi, month_start))
    return MergeResult(rows_staged=rows_staged, rows_inserted=inserted, already_loaded=False)


def _collect_rows_at_pickups(
    connection: psycopg.Connection, taxi: TaxiType, month_start: date, final_schema: str
) -> None:
    """The final table's rows that could share an id with the staged month (see
    ``statements.collect_rows_at_pickups``), under the table lock the merge holds."""
    final_bytes = connection.execute(
        statements.heap_bytes(statements.final_table(taxi, final_schema))
    ).fetchone()[0]
    connection.execute(
        statements.collect_rows_at_pickups(taxi, month_start, final_schema),
        {
            "month_start": month_start,
            "month_end": next_month(month_start),
            "final_has_rows": bool(final_bytes),
        },
    )
    connection.execute(statements.analyze_rows_at_pickups())


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


def _staged_file(
    note: str | None, connection: psycopg.Connection, staging: sql.Identifier
) -> tuple[str, int]:
    """The sha256 and row count stage_month noted on the table (counted if absent)."""
    parts = (note or "").split()
    if len(parts) == 2 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return "", connection.execute(statements.count_rows(staging)).fetchone()[0]


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
