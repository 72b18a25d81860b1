"""Every Postgres statement the platform runs, built from the catalogue.

Identifiers come from the catalogue (a closed set) and are quoted with
``psycopg.sql.Identifier``; values are parameters. The assets, the tests and the benchmark
all build their SQL here, so what is measured is what runs.

How a month moves, and why it is cheap:
- Staging (``taxi_platform.lib.staged_month``) writes the landed CSV again as a file with
  ``unique_row_id`` and ``filename`` in front, the ids computed by DuckDB
  (``duckdb_ids``) to equal this module's ``unique_row_id``. Postgres is not written.
- The merge is one ``COPY`` of that file into the final table: every row is written
  once, the index entries on the way (a staging table and an ``INSERT ... SELECT`` wrote
  every row twice). The COPY, the removal of the rows whose id the table already held,
  the ledger entry and the BRIN summary commit together or not at all. Rows duplicated
  inside one file are all kept, as the zoomcamp ``MERGE ... WHEN NOT MATCHED`` keeps them.
- The id check reads only the final table's rows that could share an id with the month:
  the id hashes the pickup, so equal ids have equal pickups, and the rows at the month's
  pickups are those inside the month (a range of the pickup btree, read before the COPY,
  when every row is an earlier one) plus the rows at the exact pickups of its few
  out-of-month rows and the rows without a pickup. They go into a temporary table; when
  it is not empty, the month's new rows (found by ``filename`` and by being this
  transaction's own, ``xmin``) that meet one of them by id and pickup are deleted again:
  looked up at the candidates' pickups when they are few (a month's edges), by hash when
  they are many (an overlapping file). A cost that grows with the month and with what
  already sits at its pickups, never with the table's history. Months arrive roughly in
  time order, so the pickup btree grows at its right edge, where a btree on md5 ids would
  be written all over for every row. A BRIN index on ``filename`` (rows of a file are
  appended together) finds a month's rows for the checks and the merge at almost no cost
  to the load.
- Into an empty table the merge loads in bulk (``fill_empty_table``): truncated in the
  same transaction, no WAL, rows frozen, our indexes built after the COPY.
- The ledger (``taxi_platform.loaded_files``) lets a re-run of a loaded, unchanged file
  finish without touching the data.
"""

from __future__ import annotations

from datetime import date

from psycopg import sql

from taxi_platform.lib.catalog import Column, TaxiType
from taxi_platform.lib.months import next_month

LEDGER_SCHEMA = "taxi_platform"

# The id's text casts are Postgres's own (timestamps as `2019-01-01 00:10:16`, doubles in
# shortest form: `.86` -> `0.86`), and depend on two settings; the merge pins them.
SESSION_SETTINGS = (
    sql.SQL("set local datestyle to 'ISO, MDY'"),
    sql.SQL("set local extra_float_digits to 1"),
)

# A month's rows are found through the ``filename`` BRIN (their pages), never by reading
# the whole table: statistics know nothing of a month just merged, and left alone the
# planner reads the whole table for them (``bench.history``: a parallel seq scan in every
# month's checks, a cost that grows with the table's history). The merge and the checks.
MONTH_ROWS_PLAN_SETTINGS = (sql.SQL("set local enable_seqscan to off"),)

# The removal of rows met again: one hash join of the copied rows against the rows at the
# month's pickups. A nested loop would scan the candidates once per copied row. Set on top
# of ``MONTH_ROWS_PLAN_SETTINGS``, which the merge has set already.
MERGE_PLAN_SETTINGS = (
    sql.SQL("set local enable_nestloop to off"),
    sql.SQL("set local enable_mergejoin to off"),
)

LEDGER_TABLE = sql.Identifier(LEDGER_SCHEMA, "loaded_files")
# Rows of the final table at the pickups of the month being merged
# (``collect_rows_at_month_pickups``, ``add_rows_at_out_of_month_pickups``).
ROWS_AT_PICKUPS = sql.Identifier("taxi_platform_rows_at_pickups")


def setup_statements(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """Schemas, the id function, the final table (zoomcamp DDL), its id index, the ledger."""
    return [
        sql.SQL("create schema if not exists {}").format(sql.Identifier(LEDGER_SCHEMA)),
        sql.SQL("create schema if not exists {}").format(sql.Identifier(final_schema)),
        sql.SQL(
            "create table if not exists {table} (unique_row_id text, filename text, {columns})"
        ).format(table=final_table(taxi, final_schema), columns=column_definitions(taxi.columns)),
        *add_optional_columns(taxi, final_schema),
        *final_table_indexes(taxi, final_schema),
        sql.SQL(
            "create table if not exists {ledger} (table_name text, filename text, "
            "sha256 text not null, rows_staged bigint not null, rows_inserted bigint not null, "
            "loaded_at timestamptz not null default now(), primary key (table_name, filename))"
        ).format(ledger=LEDGER_TABLE),
    ]


def add_optional_columns(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """The catalogue's optional trailing columns (schema drift), added to a table that lacks
    them; NULL for the months loaded before. The catalog is looked at first, so a table
    that has them is not locked (``alter table`` takes an exclusive lock even when it ends
    up doing nothing, and would wait for a merge running on another month)."""
    return [
        unless_in_catalog(
            sql.SQL(
                "exists (select 1 from information_schema.columns where table_schema = "
                "{schema} and table_name = {table} and column_name = {name})"
            ).format(
                schema=sql.Literal(final_schema),
                table=sql.Literal(taxi.table),
                name=sql.Literal(column.postgres_name),
            ),
            sql.SQL("alter table {final} add column if not exists {column} {type}").format(
                final=final_table(taxi, final_schema),
                column=sql.Identifier(column.postgres_name),
                type=sql.SQL(column.postgres_type),
            ),
        )
        for column in taxi.optional_columns
    ]


def our_indexes(taxi: TaxiType) -> tuple[tuple[str, sql.Composable], ...]:
    """The two indexes we add to the zoomcamp table, by name and definition (see the module
    docstring for why): the pickup btree and the ``filename`` BRIN."""
    return (
        (f"{taxi.table}_pickup_idx", sql.SQL("({})").format(pickup_identifier(taxi))),
        (f"{taxi.table}_filename_brin", sql.SQL("using brin (filename)")),
    )


def final_table_indexes(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """Create ``our_indexes`` where they are missing.

    Each is looked up in the catalog first and created only when missing: ``create index
    if not exists`` takes the table's share lock before it finds the index there, so every
    staging step (``ensure_tables``) waited for the merge running on another month, and
    held the setup lock meanwhile, which stopped the other taxi type's steps too
    (``bench.history``: staging 24 s for a 238k-row month, green merges of 0.5M rows 17-23 s).
    """
    return [
        unless_in_catalog(
            sql.SQL(
                "to_regclass(quote_ident({schema}) || '.' || quote_ident({name})) is not null"
            ).format(schema=sql.Literal(final_schema), name=sql.Literal(name)),
            sql.SQL("create index if not exists {index} on {table} {definition}").format(
                index=sql.Identifier(name),
                table=final_table(taxi, final_schema),
                definition=definition,
            ),
        )
        for name, definition in our_indexes(taxi)
    ]


def unless_in_catalog(found: sql.Composable, statement: sql.Composable) -> sql.Composable:
    """``statement`` (DDL) run only when the catalog query ``found`` is false.

    ``alter table ... if not exists`` and ``create index if not exists`` lock the table
    before they find there is nothing to do, so each would wait for a merge running on
    another month; a look at the catalog takes no lock on the table.
    """
    return sql.SQL("do $$ begin if not ({found}) then {statement}; end if; end $$").format(
        found=found, statement=statement
    )


def column_definitions(columns: tuple[Column, ...]) -> sql.Composable:
    """Columns with their zoomcamp types, as a table definition lists them."""
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(column.postgres_name), sql.SQL(column.postgres_type))
        for column in columns
    )


def final_table(taxi: TaxiType, final_schema: str = "public") -> sql.Identifier:
    return sql.Identifier(final_schema, taxi.table)


def pickup_identifier(taxi: TaxiType) -> sql.Identifier:
    """The pickup time's column, as the final table spells it (every index and check uses it)."""
    return sql.Identifier(taxi.column(taxi.pickup_column).postgres_name)


def unique_row_id(taxi: TaxiType) -> sql.Composable:
    """The zoomcamp id: md5 over the id columns' text, an empty string for a NULL."""
    return sql.SQL("md5({})").format(
        sql.SQL(" || ").join(
            sql.SQL("coalesce(cast({} as text), '')").format(
                sql.Identifier(taxi.column(name).postgres_name)
            )
            for name in taxi.postgres_id_columns
        )
    )


def month_lock(taxi: TaxiType, month_start: date) -> sql.Composable:
    """Serializes two runs of the same month (they would share a staging table)."""
    return sql.SQL("select pg_advisory_xact_lock(hashtext({key}))").format(
        key=sql.Literal(f"taxi_platform:staging:{taxi.month_table(month_start)}")
    )


def table_lock(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """Serializes merges into one final table, so that concurrent months cannot both
    insert an id that neither saw (out-of-month pickups make ids meet across files)."""
    return sql.SQL("select pg_advisory_xact_lock(hashtext({key}))").format(
        key=sql.Literal(f"taxi_platform:merge:{final_schema}.{taxi.table}")
    )


def heap_bytes(table: sql.Identifier) -> sql.Composable:
    """The table's size on disk: exact and free, unlike a count or a stale estimate."""
    return sql.SQL("select pg_relation_size({name})").format(name=sql.Literal(table.as_string()))


def count_rows(table: sql.Identifier) -> sql.Composable:
    return sql.SQL("select count(*) from {}").format(table)


def relation_exists(qualified_name: str) -> sql.Composable:
    """Whether a table (``schema.name``) exists, without locking or failing."""
    return sql.SQL("select to_regclass({name}) is not null").format(
        name=sql.Literal(qualified_name)
    )


def month_range(month_start: date) -> dict[str, date]:
    """The ``%(month_start)s`` and ``%(month_end)s`` parameters of a month's statements."""
    return {"month_start": month_start, "month_end": next_month(month_start)}


def copy_into_final(
    taxi: TaxiType, columns: tuple[Column, ...], final_schema: str = "public", freeze: bool = False
) -> sql.Composable:
    """COPY of a staged month (``staged_month``): the two id columns, then ``columns``;
    ``freeze`` after ``fill_empty_table`` only."""
    target = [sql.Identifier("unique_row_id"), sql.Identifier("filename")]
    target += [sql.Identifier(c.postgres_name) for c in columns]
    return sql.SQL(
        "copy {final} ({target}) from stdin with (format csv, header true, freeze {freeze})"
    ).format(
        final=final_table(taxi, final_schema),
        target=sql.SQL(", ").join(target),
        freeze=sql.SQL("true" if freeze else "false"),
    )


def loadable_in_bulk(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """Whether the final table can take a month in bulk (``fill_empty_table``): empty (no
    page on disk), a plain table (``COPY FREEZE`` refuses a partitioned one), ours to
    truncate and re-index (its owner's role is ours), and not referenced by a foreign key
    (which ``truncate`` refuses)."""
    return sql.SQL(
        "select pg_relation_size(c.oid) = 0 and c.relkind = 'r' "
        "and pg_has_role(c.relowner, 'USAGE') "
        "and not exists (select 1 from pg_constraint where confrelid = c.oid) "
        "from pg_class as c where c.oid = {name}::regclass"
    ).format(name=sql.Literal(final_table(taxi, final_schema).as_string()))


def lock_final_table(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """Nobody reads or writes the table until the commit: taken only for a table found
    empty, which ``loadable_in_bulk`` is then asked again under the lock."""
    return sql.SQL("lock table {} in access exclusive mode").format(final_table(taxi, final_schema))


def fill_empty_table(taxi: TaxiType, final_schema: str = "public") -> list[sql.Composable]:
    """Prepare an empty final table for a month's ``COPY ... FREEZE``: truncate it and drop
    ``our_indexes`` (``final_table_indexes`` builds them again after the COPY).

    A table truncated in the transaction that fills it is written without WAL under
    ``wal_level = minimal`` (the embedded server's: the file is synced at the commit
    instead), its rows frozen on the way in (no later vacuum rewrites them), and an index
    built after the COPY sorts the month once where the COPY would insert every entry one
    by one. The merge step of ``bench.run``'s *new month* (1M yellow rows into an empty
    table): 1.95 s against 3.04 s. Truncating an empty table loses nothing, and a failure
    rolls back the truncation and the dropped indexes with the rest.
    """
    return [
        sql.SQL("truncate {}").format(final_table(taxi, final_schema)),
        *(
            sql.SQL("drop index if exists {}").format(sql.Identifier(final_schema, name))
            for name, _ in our_indexes(taxi)
        ),
    ]


def _month_rows_written_now(taxi: TaxiType, month_start: date) -> sql.Composable:
    """The condition on ``copied`` for the rows this transaction wrote for the month.

    ``filename`` lets the BRIN index find the month's pages; ``xmin`` tells the rows
    just copied from the month's rows of an earlier load of the same file (a forced
    reload, a re-published month). The merge holds the table's lock, and no
    subtransaction writes, so they carry the transaction's own id.
    """
    return sql.SQL(
        "copied.filename = {filename} and copied.xmin = pg_current_xact_id()::xid"
    ).format(filename=sql.Literal(taxi.csv_name(month_start)))


def collect_rows_at_month_pickups(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """The final table's (pickup, id) inside the month and without a pickup, into a
    temporary table that lives until the commit; run before the COPY, when every row of
    the table is an earlier one. Parameters: ``month_start``, ``month_end``."""
    pickup = pickup_identifier(taxi)
    final = final_table(taxi, final_schema)
    return sql.SQL(
        "create temporary table {rows} on commit drop as "
        "select {pickup} as pickup, unique_row_id from {final} "
        "where {pickup} >= %(month_start)s and {pickup} < %(month_end)s "
        "union all select {pickup}, unique_row_id from {final} where {pickup} is null"
    ).format(rows=ROWS_AT_PICKUPS, pickup=pickup, final=final)


def add_rows_at_out_of_month_pickups(
    taxi: TaxiType, month_start: date, final_schema: str = "public"
) -> sql.Composable:
    """Add the earlier rows at the exact pickups of the month's out-of-month rows; run after
    the COPY. Everything stays in the server, not a list sent to the client and back (when
    a file's pickups lie all in another month, that list is the whole month).

    Each distinct out-of-month pickup is looked up once in the pickup btree, ``lateral``
    with ``offset 0`` so that the plan does not depend on statistics: written as a
    semi-join (``pickup in (select ...)``), it left the planner free to join those few
    pickups against the whole table, as it did in the month's id check once the table had
    statistics (``checks.ids_shared_with_other_files``). Parameters: ``month_start``,
    ``month_end``.
    """
    pickup = pickup_identifier(taxi)
    final = final_table(taxi, final_schema)
    return sql.SQL(
        "insert into {rows} select at_edge.{pickup}, at_edge.unique_row_id "
        "from (select distinct copied.{pickup} as pickup from {final} as copied "
        "where {written_now} "
        "and (copied.{pickup} < %(month_start)s or copied.{pickup} >= %(month_end)s)) as edge "
        "cross join lateral (select earlier.{pickup}, earlier.unique_row_id "
        "from {final} as earlier where earlier.{pickup} = edge.pickup "
        "and earlier.xmin <> pg_current_xact_id()::xid offset 0) as at_edge"
    ).format(
        rows=ROWS_AT_PICKUPS,
        pickup=pickup,
        final=final,
        written_now=_month_rows_written_now(taxi, month_start),
    )


def analyze_rows_at_pickups() -> sql.Composable:
    """Tells the planner how many candidates there are (a temporary table has no stats)."""
    return sql.SQL("analyze {}").format(ROWS_AT_PICKUPS)


def count_rows_at_pickups() -> sql.Composable:
    return count_rows(ROWS_AT_PICKUPS)


def delete_rows_met_again(
    taxi: TaxiType, month_start: date, final_schema: str = "public"
) -> sql.Composable:
    """Delete the month's just-copied rows whose id an earlier row at their pickup holds.

    "Holds" is asked of the rows at the month's pickups (``collect_rows_at_month_pickups``
    and ``add_rows_at_out_of_month_pickups``): equal ids have equal pickups, and a row
    without a pickup time is compared with the rows without one.
    """
    pickup = pickup_identifier(taxi)
    return sql.SQL(
        "delete from {final} as copied using {rows} as earlier where {written_now} "
        "and copied.unique_row_id = earlier.unique_row_id and (copied.{pickup} = earlier.pickup "
        "or (copied.{pickup} is null and earlier.pickup is null))"
    ).format(
        final=final_table(taxi, final_schema),
        rows=ROWS_AT_PICKUPS,
        pickup=pickup,
        written_now=_month_rows_written_now(taxi, month_start),
    )


# Below this many copied rows per candidate, the rows met again are found from the
# candidates, through the pickup btree (``delete_rows_met_again_at_candidates``): a lookup
# costs a few microseconds, a pass over a yellow month's 7.5M copied rows 1.3 s.
COPIED_ROWS_PER_CANDIDATE_FOR_LOOKUPS = 100


def delete_rows_met_again_at_candidates(
    taxi: TaxiType, month_start: date, final_schema: str = "public"
) -> sql.Composable:
    """``delete_rows_met_again`` driven by the candidates, for a month that has few (the
    neighbouring files' rows at its edges), so that its copied rows are not read once more.

    Each distinct candidate pickup is looked up once in the pickup btree: the rows there
    that this transaction copied and that meet a candidate by pickup and id are deleted by
    ``ctid``, and so are the copied rows without a pickup whose id a row without one holds.
    A pickup shared by many rows is read once, not once per candidate at it. The
    ``lateral`` lookups keep the plan off the statistics, which know nothing of the rows
    just copied.
    """
    pickup = pickup_identifier(taxi)
    final = final_table(taxi, final_schema)
    written_now = _month_rows_written_now(taxi, month_start)
    return sql.SQL(
        "delete from {final} where ctid = any (array("
        "select met.ctid from (select distinct pickup from {rows} where pickup is not null) "
        "as at_pickup cross join lateral (select copied.ctid from {final} as copied "
        "where copied.{pickup} = at_pickup.pickup and {written_now} "
        "and (copied.{pickup}, copied.unique_row_id) in (select pickup, unique_row_id "
        "from {rows}) offset 0) as met "
        "union all select copied.ctid from {final} as copied where copied.{pickup} is null "
        "and {written_now} and copied.unique_row_id in (select unique_row_id from {rows} "
        "where pickup is null)))"
    ).format(final=final, rows=ROWS_AT_PICKUPS, pickup=pickup, written_now=written_now)


def compute_missing_ids(
    taxi: TaxiType, month_start: date, final_schema: str = "public"
) -> sql.Composable:
    """Set the ids of the month's just-copied rows that came without one: a staged month
    holding a double beyond 2^53, whose text only Postgres itself prints
    (``duckdb_ids.EXACT_DOUBLES_BELOW``). Rare, and then it costs a second write."""
    return sql.SQL(
        "update {final} as copied set unique_row_id = {id} "
        "where {written_now} and copied.unique_row_id is null"
    ).format(
        final=final_table(taxi, final_schema),
        id=unique_row_id(taxi),
        written_now=_month_rows_written_now(taxi, month_start),
    )


def summarize_filename_index(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """Summarize the BRIN ranges of ``filename`` the merge just filled.

    A BRIN index covers new pages only once they are summarized, which on its own happens
    when (auto)vacuum runs: on an insert-only table, after it grew by a fifth. Until then
    every lookup by file name (each of the month's checks) reads all unsummarized pages:
    at the history's size, millions of rows of other months per check. Measured by
    ``bench.history`` (green, 2019): the ``no_id_inserted_twice`` check took 11 s with one
    month in the table and 21 s with two. Summarizing in the merge reads the month's pages
    once, while they are still in memory.

    It takes the table's share update exclusive lock, as (auto)vacuum and analyze do, so
    a merge that meets an autovacuum of its table waits, and Postgres cancels the
    autovacuum after ``deadlock_timeout`` (never one against wraparound). During a
    backfill the final table's autovacuum therefore rarely finishes; it does once the
    merges stop (``bench.history``, yellow: none finished in 31 months; after the
    backfill, vacuum and analyze of the 124M-row table finished within 12 minutes).
    Skipping the summary while a vacuum runs would leave it to that vacuum, which runs
    for minutes throttled, and every month merged meanwhile would stay unsummarized:
    each of their checks would read all of them.
    """
    return sql.SQL("select brin_summarize_new_values({index}::regclass)").format(
        index=sql.Literal(f"{final_schema}.{taxi.table}_filename_brin")
    )


def ledger_entry(taxi: TaxiType, month_start: date, final_schema: str = "public") -> sql.Composable:
    """The month's ledger row: sha256, rows_staged, rows_inserted, loaded_at."""
    return sql.SQL(
        "select sha256, rows_staged, rows_inserted, loaded_at from {ledger} "
        "where table_name = {table} and filename = {filename}"
    ).format(
        ledger=LEDGER_TABLE,
        table=sql.Literal(f"{final_schema}.{taxi.table}"),
        filename=sql.Literal(taxi.csv_name(month_start)),
    )


def database_clock() -> sql.Composable:
    """The server's time: what a staged month's ``staged_at`` and the ledger's
    ``loaded_at`` are both read from, so that they compare without clock skew."""
    return sql.SQL("select clock_timestamp()")


def record_load(taxi: TaxiType, month_start: date, final_schema: str = "public") -> sql.Composable:
    """Upsert the ledger row; parameters: sha256, rows_staged, rows_inserted."""
    return sql.SQL(
        "insert into {ledger} (table_name, filename, sha256, rows_staged, rows_inserted) "
        "values ({table}, {filename}, %s, %s, %s) on conflict (table_name, filename) do update "
        "set sha256 = excluded.sha256, rows_staged = excluded.rows_staged, "
        "rows_inserted = excluded.rows_inserted, loaded_at = now()"
    ).format(
        ledger=LEDGER_TABLE,
        table=sql.Literal(f"{final_schema}.{taxi.table}"),
        filename=sql.Literal(taxi.csv_name(month_start)),
    )
