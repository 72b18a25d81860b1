"""The benchmark runs end to end on a tiny month, and its contenders load the same rows.

A benchmark whose contenders loaded different data would compare nothing, so beyond
"it runs" this checks that ours (SQL level and Dagster run), the zoomcamp sequence and
the bare COPY end with the same (unique_row_id, filename) multiset.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import psycopg
import pytest
import yaml

from bench import zoomcamp_sql
from bench.contenders import FLOOR_SCHEMA
from bench.run import Options, run_benchmark
from taxi_platform.lib.catalog import YELLOW
from taxi_platform.local.embedded_postgres import EmbeddedPostgres

ROWS = 3000
JANUARY_FILE = YELLOW.csv_name(date(2019, 1, 1))
FEBRUARY_FILE = YELLOW.csv_name(date(2019, 2, 1))


def id_multiset(url: str, query: str) -> Counter:
    with psycopg.connect(url) as connection:
        return Counter(connection.execute(query).fetchall())


@pytest.fixture(scope="module")
def tiny_benchmark(postgres_server: EmbeddedPostgres, scratch_root: Path):
    options = Options(
        taxi=YELLOW,
        month=date(2019, 1, 1),
        rows=ROWS,
        repeat=1,
        backfill_months=2,
        backfill_rows=500,
        results_dir=scratch_root / "bench_results",
        work_dir=scratch_root / "bench_work",
        keep_databases=True,
        command="test_bench_smoke",
        log=lambda line: None,
    )
    results = run_benchmark(options, server=postgres_server)
    yield results, postgres_server
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
        for name in results["databases"].values():
            admin.execute(f'drop database if exists "{name}" with (force)')


def test_benchmark_contenders_load_the_same_rows_with_the_same_ids(tiny_benchmark) -> None:
    results, server = tiny_benchmark
    databases = results["databases"]
    final_ids = "select unique_row_id, filename from public.yellow_tripdata"

    ours_dagster = id_multiset(server.url(databases["ours_dagster"]), final_ids)
    ours_sql = id_multiset(server.url(databases["ours_sql"]), final_ids)
    zoomcamp = id_multiset(server.url(databases["zoomcamp"]), final_ids)
    zoomcamp_as_run = id_multiset(server.url(databases["zoomcamp_as_run"]), final_ids)
    # The floor loads bare rows; their ids are computed here with the flow's expression.
    floor = id_multiset(
        server.url(databases["floor"]),
        f"select {zoomcamp_sql.row_id_expression(YELLOW)}, '{JANUARY_FILE}' "
        f"from {FLOOR_SCHEMA}.yellow_tripdata",
    )

    assert sum(ours_dagster.values()) == 2 * ROWS  # January, then February; re-run adds none
    assert ours_dagster == ours_sql == zoomcamp == zoomcamp_as_run
    assert Counter(filename for _, filename in ours_sql.elements()) == {
        JANUARY_FILE: ROWS,
        FEBRUARY_FILE: ROWS,
    }
    january = Counter({key: n for key, n in ours_sql.items() if key[1] == JANUARY_FILE})
    assert floor == january
    assert all(len(row_id) == 32 for row_id, _ in ours_sql)


def test_benchmark_reports_every_case_ratio_and_target(tiny_benchmark) -> None:
    results, _ = tiny_benchmark
    saved = json.loads(Path(results["results_path"]).read_text())

    assert set(saved["cases"]) == {"new_month", "rerun", "next_month"}
    assert set(saved["cases"]["new_month"]) == {
        "floor",
        "durable_floor",
        "zoomcamp_as_run",
        "zoomcamp",
        "ours_sql",
        "ours_dagster",
    }
    assert set(saved["cases"]["rerun"]) == {
        "zoomcamp_as_run",
        "zoomcamp",
        "ours_sql",
        "ours_dagster",
    }
    dagster_first = saved["cases"]["new_month"]["ours_dagster"]
    assert set(dagster_first["steps"]) >= {"raw", "staging", "final", "dagster_overhead"}
    assert dagster_first["peak_rss_bytes"] > 0
    assert dagster_first["rows_inserted"] == ROWS
    assert saved["cases"]["rerun"]["ours_dagster"]["rows_inserted"] == 0
    assert saved["cases"]["rerun"]["ours_dagster"]["already_loaded"] is True
    assert saved["cases"]["rerun"]["ours_sql"]["rows_inserted"] == 0
    assert saved["cases"]["rerun"]["zoomcamp"]["rows_inserted"] == 0
    assert saved["cases"]["new_month"]["floor"]["rows_loaded"] == ROWS
    assert saved["cases"]["new_month"]["durable_floor"]["rows_loaded"] == ROWS
    assert saved["cases"]["rerun"]["zoomcamp_as_run"]["rows_inserted"] == 0
    assert "ours_sql/zoomcamp_as_run" in saved["ratios"]["new_month"]
    assert "ours_sql/durable_floor" in saved["ratios"]["new_month"]
    assert "new_month_vs_zoomcamp_as_run (ours SQL)" in saved["targets"]
    assert "new_month_vs_durable_floor (ours SQL)" in saved["targets"]
    assert "ours_sql/floor" in saved["ratios"]["new_month"]
    assert "ours_sql/zoomcamp" in saved["ratios"]["new_month"]
    assert "peak_rss_bytes (Dagster run process)" in saved["targets"]
    backfill = saved["backfill"]
    assert backfill["sequential"]["final_rows"] == backfill["concurrent"]["final_rows"] == 1000
    # As many at once as dagster.yaml lets one taxi type run (read from the file itself).
    settings = yaml.safe_load((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    (taxi_limit,) = [
        limit["limit"]
        for limit in settings["concurrency"]["runs"]["tag_concurrency_limits"]
        if limit["key"] == "taxi"
    ]
    assert backfill["concurrent"]["workers"] == taxi_limit > 1


def test_durable_floor_writes_a_logged_table_with_the_pickup_btree(tiny_benchmark) -> None:
    results, server = tiny_benchmark
    with psycopg.connect(server.url(results["databases"]["durable_floor"])) as connection:
        persistence, rows = connection.execute(
            f"select relpersistence, (select count(*) from {FLOOR_SCHEMA}.yellow_tripdata_durable)"
            " from pg_class where oid = %s::regclass",
            (f"{FLOOR_SCHEMA}.yellow_tripdata_durable",),
        ).fetchone()
        indexed = connection.execute(
            "select indexdef from pg_indexes where schemaname = %s and tablename = %s",
            (FLOOR_SCHEMA, "yellow_tripdata_durable"),
        ).fetchall()
    assert (persistence, rows) == ("p", ROWS)
    assert [definition for (definition,) in indexed] == [
        f"CREATE INDEX yellow_tripdata_durable_tpep_pickup_datetime_idx ON "
        f"{FLOOR_SCHEMA}.yellow_tripdata_durable USING btree (tpep_pickup_datetime)"
    ]
