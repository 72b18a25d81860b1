"""A month merged into an empty final table is loaded in bulk, and nothing else is.

Truncated in the merge's own transaction, the table is written without WAL (the embedded
server runs ``wal_level = minimal``), frozen on the way in, and its indexes are built after
the COPY (``statements.fill_empty_table``). A table holding rows, or one the platform's
role does not own, is merged into the usual way, without an exclusive lock.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from taxi_platform.lib import staged_month
from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.postgres_load import LoadError, ensure_tables, merge_month
from taxi_platform_tests.support.loaded_month import load_generated_month, stage_generated_month

JANUARY, FEBRUARY = date(2019, 1, 1), date(2019, 2, 1)
# Enough rows for a table of several MB: under ``wal_skip_threshold`` (2 MB) Postgres
# writes a new relation to the WAL at the commit instead of syncing its file.
ROWS = 40_000


def index_definitions(connection: psycopg.Connection) -> dict[str, str]:
    return dict(
        connection.execute(
            "select indexname, indexdef from pg_indexes where tablename = 'green_tripdata'"
        ).fetchall()
    )


def wal_position(connection: psycopg.Connection) -> str:
    return connection.execute("select pg_current_wal_insert_lsn()::text").fetchone()[0]


def wal_written_since(connection: psycopg.Connection, position: str) -> int:
    return int(
        connection.execute(
            "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", (position,)
        ).fetchone()[0]
    )


def count(connection: psycopg.Connection) -> int:
    return connection.execute("select count(*) from green_tripdata").fetchone()[0]


def test_first_month_is_written_without_wal_and_indexed_as_setup_indexes_it(
    database_url: str, tmp_path: Path
) -> None:
    csv_path = stage_generated_month(database_url, tmp_path, GREEN, JANUARY, ROWS, seed=1)
    with psycopg.connect(database_url, autocommit=True) as observer:
        indexes_before = index_definitions(observer)
        position = wal_position(observer)
        with psycopg.connect(database_url) as connection:
            merge_month(connection, GREEN, JANUARY, csv_path, "test")
        wal_bytes = wal_written_since(observer, position)
        heap = observer.execute("select pg_relation_size('green_tripdata')").fetchone()[0]

        assert count(observer) == ROWS
        assert len(indexes_before) == 2 and index_definitions(observer) == indexes_before
        # The rows went to the table's file, not to the WAL (the usual merge writes more
        # WAL than the heap's own size); the indexes, under 2 MB here, are logged whole.
        assert heap > 4_000_000 and wal_bytes < heap / 4
        assert (
            observer.execute(
                "select brin_summarize_new_values('green_tripdata_filename_brin'::regclass)"
            ).fetchone()[0]
            == 0
        )


def test_next_month_merges_without_locking_out_readers(database_url: str, tmp_path: Path) -> None:
    load_generated_month(database_url, tmp_path, GREEN, JANUARY, 2_000, seed=1)
    csv_path = stage_generated_month(database_url, tmp_path, GREEN, FEBRUARY, 2_000, seed=2)
    with psycopg.connect(database_url) as reader:
        count(reader)  # its transaction stays open, holding the table's share lock
        with psycopg.connect(database_url) as connection:
            connection.execute("set lock_timeout = '3s'")
            result = merge_month(connection, GREEN, FEBRUARY, csv_path, "test")
        reader.rollback()
        assert result.rows_inserted == 2_000 and count(reader) == 4_000


def test_a_failed_first_month_leaves_the_empty_table_and_its_indexes(
    database_url: str, tmp_path: Path
) -> None:
    csv_path = stage_generated_month(database_url, tmp_path, GREEN, JANUARY, ROWS, seed=1)
    staged_path = staged_month.staged_path(csv_path)
    good = staged_path.read_bytes()
    # Same size, so the merge's own damage check passes and the COPY fails late.
    cut = good.rindex(b"2019-01-")
    staged_path.write_bytes(good[:cut] + b"2019-13-" + good[cut + 8 :])
    with psycopg.connect(database_url, autocommit=True) as observer:
        indexes_before = index_definitions(observer)
        with psycopg.connect(database_url) as connection:
            with pytest.raises(LoadError, match="merge into the final table failed"):
                merge_month(connection, GREEN, JANUARY, csv_path, "test")
        assert count(observer) == 0
        assert index_definitions(observer) == indexes_before

        staged_path.write_bytes(good)
        with psycopg.connect(database_url) as connection:
            assert merge_month(connection, GREEN, JANUARY, csv_path, "test").rows_inserted == ROWS
        assert count(observer) == ROWS and index_definitions(observer) == indexes_before


def test_a_table_another_role_owns_is_merged_into_the_usual_way(
    database_url: str, tmp_path: Path
) -> None:
    """A zoomcamp table created by another role: the platform's role may insert, not
    truncate or re-index, so the month goes in row by row, and the BRIN is left to
    autovacuum."""
    loader = "loader_" + database_url.rsplit("/", 1)[-1]
    with psycopg.connect(database_url, autocommit=True) as owner:
        ensure_tables(owner, GREEN, "public")
        owner.execute(f"create role {loader} login password 'loader'")
        database = owner.execute("select current_database()").fetchone()[0]
        owner.execute(f'grant create on database "{database}" to {loader}')
        for schema in ("public", "taxi_platform"):
            owner.execute(f"grant usage, create on schema {schema} to {loader}")
        for table in ("public.green_tripdata", "taxi_platform.loaded_files"):
            owner.execute(f"grant select, insert, update, delete on {table} to {loader}")
        indexes_before = index_definitions(owner)
        try:
            loader_url = make_conninfo(database_url, user=loader, password="loader")
            load_generated_month(loader_url, tmp_path, GREEN, JANUARY, 2_000, seed=1)
            assert count(owner) == 2_000 and index_definitions(owner) == indexes_before
        finally:
            owner.execute(f"drop owned by {loader}")
            owner.execute(f"drop role {loader}")
