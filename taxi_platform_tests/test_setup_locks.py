"""Setting up the tables never waits for a merge of another month.

Every staging and merge step first makes sure the tables and indexes exist
(``ensure_tables``), under a lock that all taxi types share. A statement there that waits
for the final table's lock would wait for whichever merge is running, and every step of
both taxi types would queue behind it.
"""

from __future__ import annotations

import psycopg

from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.postgres_load import ensure_tables


def test_setup_does_not_wait_for_a_merge_in_progress(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        ensure_tables(connection, GREEN, "public")
    with psycopg.connect(database_url) as merging:
        # What a merge's COPY holds until it commits: a row-exclusive lock on the table.
        merging.execute("insert into green_tripdata (filename) values ('green_tripdata_x.csv')")
        with psycopg.connect(database_url, autocommit=True) as staging:
            staging.execute("set lock_timeout = '3s'")
            ensure_tables(staging, GREEN, "public")
            indexes = staging.execute(
                "select indexname from pg_indexes where tablename = 'green_tripdata' "
                "order by indexname"
            ).fetchall()
        merging.rollback()

    assert indexes == [("green_tripdata_filename_brin",), ("green_tripdata_pickup_idx",)]


def test_setup_creates_missing_indexes(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        ensure_tables(connection, GREEN, "public")
        connection.execute("drop index green_tripdata_pickup_idx")
        ensure_tables(connection, GREEN, "public")
        found = connection.execute(
            "select indexdef from pg_indexes where indexname = 'green_tripdata_pickup_idx'"
        ).fetchone()

    assert found is not None and "lpep_pickup_datetime" in found[0]
