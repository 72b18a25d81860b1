"""``bench.history`` end to end at a tiny scale: three green months through the platform.

The history benchmark's figures mean something only if every generated month went through
a real backfill and landed whole, so this checks its JSON month by month against what was
generated, and the final table's count against their sum, rather than that it ran.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import psycopg
import pytest

from bench.history import TAXI_DATABASE, HistoryOptions, run_history
from bench.history_postgres_cpu import NOT_SEEN
from taxi_platform.local.embedded_postgres import EmbeddedPostgres

# About 3,000 rows a month (green 2019-01 has 672,105).
TINY_SCALE = 0.005
MONTHS = ["2019-01", "2019-02", "2019-03"]


@pytest.fixture(scope="module")
def tiny_history(postgres_server: EmbeddedPostgres, scratch_root: Path) -> tuple[dict, dict]:
    json_path = scratch_root / "history" / "history.json"
    options = HistoryOptions(
        first=date(2019, 1, 1),
        last=date(2019, 3, 1),
        taxi_option="green",
        scale=TINY_SCALE,
        json_path=json_path,
        with_zoomcamp=True,
        zoomcamp_scale=TINY_SCALE,
        work_dir=scratch_root / "history_work",
        keep_databases=True,
        command="test_bench_history_smoke",
        log=lambda line: None,
    )
    returned = run_history(options, server=postgres_server)
    return returned, json.loads(json_path.read_text())


def test_history_json_holds_every_month_with_the_rows_generated(tiny_history) -> None:
    _, saved = tiny_history
    generated = {(m["taxi"], m["month"]): m["rows"] for m in saved["generated"]}
    loaded = {(m["taxi"], m["month"]): m["rows"] for m in saved["months"]}

    assert sorted(month for _, month in generated) == MONTHS
    assert all(2_000 < rows < 5_000 for rows in generated.values())
    assert loaded == generated
    assert all(month["status"] == "SUCCESS" for month in saved["months"])
    assert saved["backfill_exit_code"] == 0


def test_history_final_count_is_the_sum_of_the_months(tiny_history) -> None:
    _, saved = tiny_history
    total = sum(month["rows"] for month in saved["generated"])

    assert saved["total_rows"] == total
    assert saved["table_rows"] == {"green": total}
    assert saved["table_bytes"]["green"] > 0
    assert saved["dagster_storage_bytes"] > 0


def test_history_keeps_its_databases_for_a_look_at_the_plans(
    tiny_history, postgres_server: EmbeddedPostgres
) -> None:
    _, saved = tiny_history
    with psycopg.connect(postgres_server.url(TAXI_DATABASE)) as connection:
        kept = connection.execute("select count(*) from green_tripdata").fetchone()[0]

    assert kept == saved["total_rows"] > 0


def test_history_rows_before_each_month_are_the_months_merged_before_it(tiny_history) -> None:
    _, saved = tiny_history
    by_merge = sorted(saved["months"], key=lambda month: month["table_rows_before"])

    assert by_merge[0]["table_rows_before"] == 0
    for earlier, later in zip(by_merge, by_merge[1:], strict=False):
        assert later["table_rows_before"] == earlier["table_rows_before"] + earlier["rows_inserted"]
    for month in saved["months"]:
        assert set(month["steps"]) >= {"raw", "staging", "final"}
        assert month["seconds"] >= month["steps"]["final"] > 0
        assert month["seconds_per_million_rows"] > 0


def test_history_reports_memory_totals_and_a_plot(tiny_history) -> None:
    returned, saved = tiny_history

    # Every run's process was sampled: a Dagster run process holds well over 50 MB.
    assert all(month["peak_rss_bytes"] > 50 * 2**20 for month in saved["months"])
    # The part of each peak that the run's helpers (compute-log ``tail``) held alone.
    assert all(
        0 <= month["peak_rss_helpers_bytes"] < month["peak_rss_bytes"] for month in saved["months"]
    )
    assert saved["peak_rss_bytes"] == max(month["peak_rss_bytes"] for month in saved["months"])
    assert saved["rows_per_second"] == pytest.approx(
        saved["total_rows"] / saved["wall_seconds"], rel=1e-3
    )
    assert set(saved["targets"]) >= {
        "rows_per_second (whole history through the run queue)",
        "peak_rss_bytes (a run's process)",
    }
    plot = Path(returned["plot_path"])
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_history_says_who_spent_the_cores(tiny_history) -> None:
    _, saved = tiny_history
    spent = saved["cpu_seconds"]

    # Every run's process exited before the end, and Postgres's backends with them; both
    # are counted through their parents. A Dagster run alone takes a core-second to start.
    assert spent["code_server_and_runs"] > len(saved["months"])
    assert spent["postgres"] > 0
    assert spent["daemon"] > 0
    named = sum(v for k, v in spent.items() if not k.startswith("machine_") and k != "other")
    assert named <= spent["machine_busy"] + 1
    # Postgres's share split by statement: what was credited and what nobody was seen
    # spending add up to the server's total (each entry rounded to 0.1).
    by_statement = saved["postgres_cpu_by_activity"]
    assert NOT_SEEN in by_statement and min(by_statement.values()) >= 0
    assert sum(by_statement.values()) == pytest.approx(
        spent["postgres"], abs=0.05 * len(by_statement) + 0.2
    )


def test_history_says_how_full_the_run_queue_kept_the_machine(tiny_history) -> None:
    _, saved = tiny_history
    queue = saved["run_queue"]

    # From the launch to the last run's end, every moment has some number of runs active.
    assert sum(queue["runs_active_seconds"].values()) == pytest.approx(saved["wall_seconds"], abs=1)
    assert 0 < queue["first_run_started_seconds"] < saved["wall_seconds"]
    # Two green runs at a time (dagster.yaml): the third month waited for one to end.
    assert queue["handoff_seconds"]["handoffs"] >= 1
    assert queue["handoff_seconds"]["mean"] >= 0


def test_history_says_what_the_server_wrote_beside_the_rows(tiny_history) -> None:
    _, saved = tiny_history
    activity = saved["postgres_activity"]

    # Every merged row was logged (only the first month, into an empty table, skips the
    # WAL), so the WAL holds at least the later months' rows at a few dozen bytes each.
    later_rows = saved["total_rows"] - saved["months"][0]["rows"]
    assert activity["server"]["wal_bytes"] > 30 * later_rows
    assert activity["server"]["checkpoints"] >= 0
    assert set(activity["tables"]) == {"green"}
    assert activity["tables"]["green"]["autovacuum_seconds"] >= 0


def test_history_with_zoomcamp_loads_the_same_months_with_the_flow(tiny_history) -> None:
    _, saved = tiny_history
    zoomcamp = saved["zoomcamp"]
    generated = {m["month"]: m["rows"] for m in saved["generated"]}

    assert {m["month"]: m["rows_inserted"] for m in zoomcamp["months"]} == generated
    assert [m["table_rows_before"] for m in zoomcamp["months"]] == [
        0,
        generated["2019-01"],
        generated["2019-01"] + generated["2019-02"],
    ]
    assert zoomcamp["table_bytes"]["green"] > 0
