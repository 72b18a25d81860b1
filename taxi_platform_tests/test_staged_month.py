"""The staged month: a file with the zoomcamp ids, COPYed once into the final table.

Staging computes the ids in DuckDB from Postgres's text forms of the values, so this feeds
both engines the values where their printing differs (whole doubles, the 1e15 decade,
signed zero, NaN and the infinities, fractional and odd timestamps) and a few thousand
random doubles of every magnitude, loads them the platform's way and asks Postgres to
recompute each id. Then the file's life: written beside the landed file, refused by the
merge when it is cut short or gone, deleted once merged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from datetime import date
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from taxi_platform.lib import staged_month
from taxi_platform.lib.catalog import YELLOW
from taxi_platform.lib.postgres_load import (
    LoadError,
    StagedFileDamaged,
    merge_month,
    stage_month,
)
from taxi_platform.lib.sql import duckdb_ids
from taxi_platform.lib.sql import postgres as statements

JANUARY = date(2019, 1, 1)
DESCRIBE = "yellow_tripdata_2019-01.csv (partition yellow 2019-01-01)"
AWKWARD_DOUBLES = [
    "1", "1.0", "0.86", ".20", "-12.50", "0", "-0", "-0.0", "1e15", "1.5e15", "-1.5e15",
    "1234567890123456", "1000000000000000.1", "9007199254740991", "-9007199254740991",
    "123456789012345.6", "99999999999999.9", "1e-5", "1.5e-05", "0.0001", "0.00012", "5e-324",
    "123456.789e3", "NaN", "Infinity", "-Infinity", "",
]  # fmt: skip
AWKWARD_TIMESTAMPS = [
    "2019-01-01 00:10:16", "2019-01-01 00:10:16.5", "2019-01-01 00:10:16.000120",
    "2019-01-01T00:10:16", "2019-01-01 24:00:00", "2019-01-01", "2019-01-31 23:59:59.999999",
    "",
]  # fmt: skip


def random_doubles(count: int, seed: int = 16) -> list[str]:
    """Shortest round-trip text of doubles from 1e-8 to 2^53, as files might print them."""
    rng = random.Random(seed)
    values = [rng.uniform(-1, 1) * 10 ** rng.uniform(-8, 15.95) for _ in range(count)]
    return [repr(value) for value in values] + [f"{value:.2f}" for value in values[:100]]


def write_awkward_month(path: Path, doubles: list[str] | None = None) -> int:
    doubles = AWKWARD_DOUBLES + random_doubles(3000) if doubles is None else doubles
    header = [column.name for column in YELLOW.columns]
    with open(path, "w", newline="") as csv_file:
        writer = csv.writer(csv_file)
        writer.writerow(header)
        for number, fare in enumerate(doubles):
            row = dict.fromkeys(header, "")
            row.update(
                VendorID=str(number % 3),
                tpep_pickup_datetime=AWKWARD_TIMESTAMPS[number % len(AWKWARD_TIMESTAMPS)],
                tpep_dropoff_datetime=AWKWARD_TIMESTAMPS[(number + 3) % len(AWKWARD_TIMESTAMPS)],
                PULocationID=str(number % 265),
                DOLocationID="" if number % 7 == 0 else str(number % 263),
                fare_amount=fare,
                trip_distance=doubles[-1 - number],
            )
            writer.writerow(row.values())
    return len(doubles)


def stage(url: str, csv_path: Path, force: bool = False) -> int:
    sha256 = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    with psycopg.connect(url) as connection:
        return stage_month(connection, YELLOW, JANUARY, csv_path, sha256, DESCRIBE, force=force)


def merge(url: str, csv_path: Path):
    with psycopg.connect(url) as connection:
        return merge_month(connection, YELLOW, JANUARY, csv_path, DESCRIBE)


def ids_postgres_disagrees_with(url: str) -> int:
    """Rows of the final table whose id differs from Postgres's own md5 of the row."""
    with psycopg.connect(url) as connection, connection.transaction():
        for setting in statements.SESSION_SETTINGS:
            connection.execute(setting)
        return connection.execute(
            sql.SQL(
                "select count(*) from {final} where unique_row_id is distinct from {id}"
            ).format(final=statements.final_table(YELLOW), id=statements.unique_row_id(YELLOW))
        ).fetchone()[0]


def final_rows(url: str) -> int:
    with psycopg.connect(url) as connection:
        return connection.execute("select count(*) from public.yellow_tripdata").fetchone()[0]


def test_staged_ids_equal_postgres_ids_on_awkward_values(database_url: str, tmp_path: Path) -> None:
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    rows = write_awkward_month(landed)
    assert stage(database_url, landed).rows_staged == rows
    assert staged_month.read(landed).ids == staged_month.IDS_IN_FILE
    assert staged_month.read(landed).duckdb_pass == staged_month.LINES_PASS
    assert merge(database_url, landed).rows_inserted == rows
    assert final_rows(database_url) == rows
    assert ids_postgres_disagrees_with(database_url) == 0


def test_the_lines_pass_writes_what_the_fields_pass_writes(tmp_path: Path) -> None:
    """Every line of the file behind the same id, whichever pass wrote it (the order of
    the lines aside: neither keeps it)."""
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed)
    columns = YELLOW.columns_of_header(tuple(landed.read_text().splitlines()[0].split(",")))
    written = {}
    for name, statement in {
        "lines": duckdb_ids.copy_lines_with_ids,
        "fields": duckdb_ids.copy_with_ids,
    }.items():
        target = tmp_path / f"{name}.csv"
        with duckdb.connect(config=duckdb_ids.connection_config(True)) as db:
            db.execute(statement(YELLOW, JANUARY, landed, columns, target))
        header, *lines = target.read_text().splitlines()
        written[name] = (header, sorted(lines))
    assert written["lines"] == written["fields"]
    assert len(written["lines"][1]) == len(landed.read_text().splitlines()) - 1


@pytest.mark.parametrize(
    "quoting",
    [
        "every_field_quoted",
        "a_comma_inside_a_field",
        "a_carriage_return_inside_a_field",
        "the_lines_pass_separator_inside_a_field",
    ],
)
def test_a_file_the_lines_pass_refuses_is_read_field_by_field(
    database_url: str, tmp_path: Path, quoting: str
) -> None:
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed, doubles=["1.5", "2.25", "7"])
    header, *rows = list(csv.reader(landed.open(newline="")))
    flag = header.index("store_and_fwd_flag")
    inside = {
        "a_comma_inside_a_field": "N,Y",
        "a_carriage_return_inside_a_field": "N\rY",
        "the_lines_pass_separator_inside_a_field": f"N{duckdb_ids.LINE_SEPARATOR}Y",
    }
    if quoting in inside:
        rows[1][flag] = inside[quoting]
    with open(landed, "w", newline="") as rewritten:
        style = csv.QUOTE_ALL if quoting == "every_field_quoted" else csv.QUOTE_MINIMAL
        writer = csv.writer(rewritten, quoting=style)
        writer.writerow(header)
        writer.writerows(rows)

    assert stage(database_url, landed).rows_staged == 3
    assert staged_month.read(landed).duckdb_pass == staged_month.FIELDS_PASS
    assert staged_month.read(landed).ids == staged_month.IDS_IN_FILE
    assert merge(database_url, landed).rows_inserted == 3
    assert ids_postgres_disagrees_with(database_url) == 0


def test_a_changed_id_is_noticed(database_url: str, tmp_path: Path) -> None:
    """The comparison itself can fail: one id altered after the load is counted."""
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed)
    stage(database_url, landed)
    merge(database_url, landed)
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "update public.yellow_tripdata set unique_row_id = md5('x') "
            "where ctid = (select min(ctid) from public.yellow_tripdata)"
        )
    assert ids_postgres_disagrees_with(database_url) == 1


def test_a_double_beyond_two_to_the_53_leaves_the_ids_to_postgres(
    database_url: str, tmp_path: Path
) -> None:
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed, doubles=["1.5", "5.152002306108486e+16", "7"])
    stage(database_url, landed)
    assert staged_month.read(landed).ids == staged_month.IDS_LEFT_TO_POSTGRES
    assert merge(database_url, landed).rows_inserted == 3
    assert ids_postgres_disagrees_with(database_url) == 0
    with psycopg.connect(database_url) as connection:
        assert (
            connection.execute(
                "select count(*) from public.yellow_tripdata where unique_row_id is null"
            ).fetchone()[0]
            == 0
        )


def test_staging_writes_a_file_and_the_merge_deletes_it(database_url: str, tmp_path: Path) -> None:
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    rows = write_awkward_month(landed, doubles=["1", "2", "3"])
    stage(database_url, landed)

    staged_file = staged_month.staged_path(landed)
    with open(staged_file, newline="") as staged_csv:
        header, *staged_rows = list(csv.reader(staged_csv))
    assert header[:2] == ["unique_row_id", "filename"]
    assert header[2:] == [column.name for column in YELLOW.columns]
    assert len(staged_rows) == rows
    assert {row[1] for row in staged_rows} == {YELLOW.csv_name(JANUARY)}
    sidecar = json.loads(staged_month.sidecar_path(landed).read_text())
    assert sidecar["rows"] == rows and sidecar["bytes"] == staged_file.stat().st_size
    assert final_rows(database_url) == 0, "staging writes no row of the final table"

    merge(database_url, landed)
    assert final_rows(database_url) == rows
    assert not staged_file.exists() and not staged_month.sidecar_path(landed).exists()
    assert merge(database_url, landed).already_loaded, "a second merge finds the ledger entry"


@pytest.mark.parametrize("damage", ["cut_short", "deleted"])
def test_a_damaged_staged_file_is_refused_and_staging_again_loads_it(
    database_url: str, tmp_path: Path, damage: str
) -> None:
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    rows = write_awkward_month(landed)
    stage(database_url, landed)
    staged_file = staged_month.staged_path(landed)
    if damage == "cut_short":
        kept = staged_file.read_bytes()[: staged_file.stat().st_size // 2]
        staged_file.write_bytes(kept[: kept.rindex(b"\n") + 1])
    else:
        staged_file.unlink()

    with pytest.raises(StagedFileDamaged) as refused:
        merge(database_url, landed)
    message = str(refused.value)
    assert DESCRIBE in message and staged_file.name in message
    assert "nothing was merged" in message and "Stage the month again" in message
    assert final_rows(database_url) == 0
    with psycopg.connect(database_url) as connection:
        assert connection.execute(statements.ledger_entry(YELLOW, JANUARY)).fetchone() is None

    stage(database_url, landed)
    assert merge(database_url, landed).rows_inserted == rows
    assert ids_postgres_disagrees_with(database_url) == 0


def test_a_file_giving_other_rows_than_staged_is_rolled_back_after_its_copy(
    database_url: str, tmp_path: Path
) -> None:
    """COPY's own count is the last word: a file that gives a row less than staging wrote
    (here its sidecar claims one more) is taken out again with everything of the month."""
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed, doubles=["1", "2", "3", "4"])
    stage(database_url, landed)
    merge(database_url, landed)  # January's rows in the table
    write_awkward_month(landed, doubles=["5", "6", "7"])
    stage(database_url, landed)
    sidecar = staged_month.sidecar_path(landed)
    claims = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**claims, "rows": claims["rows"] + 1}))

    with pytest.raises(StagedFileDamaged, match="it gave 3 rows where staging wrote 4"):
        merge(database_url, landed)
    assert final_rows(database_url) == 4
    with psycopg.connect(database_url) as connection:
        assert connection.execute(statements.ledger_entry(YELLOW, JANUARY)).fetchone()[2] == 4


def test_a_pass_out_of_memory_fails_staging_instead_of_leaving_the_ids_to_postgres(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a value DuckDB cannot print as Postgres does sends the ids to Postgres; a pass
    that runs out of memory fails the step, naming the month, and leaves no staged file."""
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    write_awkward_month(landed)
    starved = {"threads": 2, "memory_limit": "1MB", "preserve_insertion_order": False}
    monkeypatch.setattr(duckdb_ids, "connection_config", lambda with_ids: starved)

    with pytest.raises(LoadError) as failed:
        stage(database_url, landed)
    message = str(failed.value)
    assert DESCRIBE in message and "staged file" in message and "Out of Memory" in message
    assert staged_month.read(landed) is None
    assert not staged_month.staged_path(landed).exists()
    assert not list(tmp_path.glob(".*.writing*")), "no half-written file is left"


def test_a_staged_month_left_by_a_kill_after_the_commit_is_not_merged_again(
    database_url: str, tmp_path: Path
) -> None:
    """The merge commits, then deletes the staged file: a kill in between leaves a staged
    month that is in the table already. The next merge recognises it (same sha256, ledger
    entry recorded after it was staged), writes no row, keeps the ledger's count and
    deletes the leftover; a forced reload, staged after the entry, is merged."""
    landed = tmp_path / YELLOW.csv_name(JANUARY)
    rows = write_awkward_month(landed, doubles=["1", "2", "3", "4", "5"])
    stage(database_url, landed)
    leftovers = {
        path: path.read_bytes()
        for path in (staged_month.staged_path(landed), staged_month.sidecar_path(landed))
    }
    assert merge(database_url, landed).rows_inserted == rows
    for path, content in leftovers.items():  # as if killed before the files were deleted
        path.write_bytes(content)

    def rows_written() -> int:
        with psycopg.connect(database_url) as connection:
            connection.execute("select pg_stat_force_next_flush()")
            return connection.execute(
                "select n_tup_ins from pg_stat_all_tables "
                "where relid = 'public.yellow_tripdata'::regclass"
            ).fetchone()[0]

    written = rows_written()
    again = merge(database_url, landed)
    assert again.already_loaded and again.rows_inserted == 0
    assert rows_written() == written, "no row was copied in again"
    assert not any(path.exists() for path in leftovers)
    with psycopg.connect(database_url) as connection:
        assert connection.execute(statements.ledger_entry(YELLOW, JANUARY)).fetchone()[2] == rows

    stage(database_url, landed, force=True)
    forced = merge(database_url, landed)
    assert not forced.already_loaded and forced.rows_inserted == 0
    assert rows_written() == written + rows, "the forced reload copied the month"
    assert final_rows(database_url) == rows
