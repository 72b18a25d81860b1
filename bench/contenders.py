"""The contenders, each loading one landed month and returning its time per step.

- ``floor``: a bare ``COPY`` into an unlogged table without ids or index, the best the disk
  and the server can do with the file;
- ``durable_floor``: a ``COPY`` into a logged table carrying a btree on the pickup time, the
  least any durable, indexed load must write (the WAL and the index);
- ``zoomcamp_as_run``: the Kestra flow's statements (``bench.zoomcamp_sql``), one
  transaction each, on the flow's own DDL: what its users run;
- ``zoomcamp``: the same with our two indexes added to its final table, so that both loads
  pay for the same index maintenance;
- ``ours_sql``: ``stage_month`` + ``merge_month``, the functions our assets call, without
  Dagster and without HTTP, each on a connection of its own as the assets open them;
- ``ours_dagster``: a real Dagster run of the three assets in a child process
  (``bench.ours_run``), downloading from the mirror, its RSS sampled from outside.

The first three start from the same landed CSV, so they compare SQL with SQL; the fourth
is what a user waits for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from bench import zoomcamp_sql
from bench.memory import tree_memory_bytes
from bench.ours_run import DATABASE_URL_VARIABLE
from taxi_platform.lib.asset_keys import PARTITION_ROW_COUNT
from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.postgres_load import copy_file, merge_month, stage_month

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
FLOOR_SCHEMA = "bench_floor"
# Often enough to catch a peak that lasts a fraction of a second (a COPY buffer, an
# import), rarely enough that the sampling itself costs nothing measurable.
RSS_SAMPLE_SECONDS = 0.02


@dataclass
class Timing:
    """One contender's pass over one month: seconds per step, in order, and extras."""

    steps: dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.steps.values())

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - started


def checkpoint(url: str) -> None:
    """Flush the previous contender's dirty pages so that no one pays for another's writes."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("checkpoint")


def floor_load(url: str, taxi: TaxiType, csv_path: Path) -> Timing:
    timing = Timing()
    columns = _floor_columns(taxi)
    table = sql.Identifier(FLOOR_SCHEMA, taxi.table)
    with psycopg.connect(url, autocommit=True) as connection:
        with timing.step("create_table"):
            connection.execute(
                sql.SQL("create schema if not exists {}").format(sql.Identifier(FLOOR_SCHEMA))
            )
            connection.execute(sql.SQL("drop table if exists {}").format(table))
            connection.execute(sql.SQL("create unlogged table {} ({})").format(table, columns))
        with timing.step("copy"), connection.cursor() as cursor:
            statement = sql.SQL("copy {} from stdin with (format csv, header true)").format(table)
            timing.extra["rows_loaded"] = copy_file(cursor, statement, csv_path)
    return timing


def durable_floor_load(url: str, taxi: TaxiType, csv_path: Path) -> Timing:
    """COPY into a logged table with a btree on the pickup time, created beforehand.

    The table is created in a transaction of its own, so that ``wal_level=minimal`` cannot
    skip the WAL of the COPY: every row and index entry is written to the WAL, as it is
    for any load into a table that already exists.
    """
    timing = Timing()
    table = sql.Identifier(FLOOR_SCHEMA, f"{taxi.table}_durable")
    with psycopg.connect(url, autocommit=True) as connection:
        with timing.step("create_table"):
            connection.execute(
                sql.SQL("create schema if not exists {}").format(sql.Identifier(FLOOR_SCHEMA))
            )
            connection.execute(sql.SQL("drop table if exists {}").format(table))
            connection.execute(sql.SQL("create table {} ({})").format(table, _floor_columns(taxi)))
            connection.execute(
                sql.SQL("create index on {} ({})").format(
                    table, sql.Identifier(taxi.column(taxi.pickup_column).postgres_name)
                )
            )
        with timing.step("copy"), connection.cursor() as cursor:
            statement = sql.SQL("copy {} from stdin with (format csv, header true)").format(table)
            timing.extra["rows_loaded"] = copy_file(cursor, statement, csv_path)
    return timing


def _floor_columns(taxi: TaxiType) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.postgres_name), sql.SQL(c.postgres_type))
        for c in taxi.columns
    )


def zoomcamp_load(
    url: str,
    taxi: TaxiType,
    month_start: date,
    csv_path: Path,
    with_our_indexes: bool = True,
) -> Timing:
    """The flow's tasks in the flow's order, each statement committed on its own.

    ``with_our_indexes=False`` is the flow as its users run it: its DDL and nothing else.
    """
    timing = Timing()
    with psycopg.connect(url, autocommit=True) as connection:
        with timing.step("create_tables"):
            connection.execute(zoomcamp_sql.create_final_table(taxi))
            if with_our_indexes:
                for statement in zoomcamp_sql.create_final_indexes(taxi):
                    connection.execute(statement)
            connection.execute(zoomcamp_sql.create_staging_table(taxi))
        with timing.step("truncate_staging"):
            connection.execute(zoomcamp_sql.truncate_staging(taxi))
        with timing.step("copy"), connection.cursor() as cursor:
            timing.extra["rows_staged"] = copy_file(
                cursor, zoomcamp_sql.copy_into_staging(taxi), csv_path
            )
        with timing.step("update_ids"):
            connection.execute(zoomcamp_sql.add_unique_id_and_filename(taxi, month_start))
        with timing.step("merge"):
            merged = connection.execute(zoomcamp_sql.merge_into_final(taxi))
            timing.extra["rows_inserted"] = merged.rowcount
    return timing


def ours_sql_load(
    url: str, taxi: TaxiType, month_start: date, csv_path: Path, sha256: str
) -> Timing:
    """Our two database steps, each on its own connection as the two assets open them."""
    timing = Timing()
    describe = f"{taxi.csv_name(month_start)} (benchmark)"
    with timing.step("stage"), psycopg.connect(url) as connection:
        staged = stage_month(connection, taxi, month_start, csv_path, sha256, describe)
    with timing.step("merge"), psycopg.connect(url) as connection:
        merged = merge_month(connection, taxi, month_start, csv_path, describe)
    timing.extra.update(
        rows_staged=staged.rows_staged,
        rows_inserted=merged.rows_inserted,
        already_loaded=staged.already_loaded and merged.already_loaded,
    )
    return timing


@dataclass
class ChildRun:
    """What the parent saw of a child run: wall time and peak memory of the process tree."""

    wall_seconds: float
    peak_rss_bytes: int
    report: dict


def run_dagster_month(
    url: str,
    taxi: TaxiType,
    month_start: date,
    base_url: str,
    landing: Path,
    report_path: Path,
    landing_retention: str = "keep",
) -> ChildRun:
    """Start ``bench.ours_run`` for one month and watch it until it exits."""
    environment = {
        **os.environ,
        DATABASE_URL_VARIABLE: url,
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    environment.pop("DAGSTER_HOME", None)
    log_path = report_path.with_suffix(".log")
    command = [
        sys.executable,
        "-m",
        "bench.ours_run",
        "--taxi",
        taxi.name,
        "--month",
        f"{month_start:%Y-%m}",
        "--base-url",
        base_url,
        "--landing",
        str(landing),
        "--out",
        str(report_path),
        "--landing-retention",
        landing_retention,
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            command, cwd=REPOSITORY_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
        watched = psutil.Process(child.pid)
        peak = 0
        while True:
            peak = max(peak, tree_memory_bytes(watched))
            try:
                child.wait(timeout=RSS_SAMPLE_SECONDS)
                break
            except subprocess.TimeoutExpired:
                continue
    wall = time.perf_counter() - started
    if child.returncode != 0 or not report_path.exists():
        tail = log_path.read_text(errors="replace")[-4000:]
        detail = ""
        if report_path.exists():
            detail = "; ".join(json.loads(report_path.read_text()).get("failures", []))
        raise RuntimeError(
            f"the Dagster run of {taxi.csv_name(month_start)} failed "
            f"(exit {child.returncode}) {detail}\n{tail}"
        )
    return ChildRun(
        wall_seconds=wall, peak_rss_bytes=peak, report=json.loads(report_path.read_text())
    )


def dagster_timing(child: ChildRun, taxi: TaxiType) -> Timing:
    """Split a child run's wall time into startup, the three steps and Dagster's own time.

    ``process_startup``: interpreter, imports and definitions until ``materialize`` is
    called; ``raw``/``staging``/``final``: each step from its STEP_START to its
    STEP_SUCCESS event; ``dagster_overhead``: the rest of ``materialize`` (run start,
    planning, events between steps, teardown); ``process_exit``: after ``materialize``
    returned, until the parent saw the process end.
    """
    report = child.report
    step_names = {
        f"raw/{taxi.table}_csv": "raw",
        f"postgres/{taxi.table}_staging": "staging",
        f"postgres/{taxi.table}": "final",
    }
    timing = Timing()
    materialize = report["materialize_ended"] - report["materialize_started"]
    startup = report["materialize_started"] - report["process_started"]
    steps = {}
    for asset_key, short in step_names.items():
        step_key = report["assets"][asset_key]["step_key"]
        events = report["steps"][step_key]
        steps[short] = events["STEP_SUCCESS"] - events["STEP_START"]
    timing.steps["process_startup"] = startup
    timing.steps.update(steps)
    timing.steps["dagster_overhead"] = materialize - sum(steps.values())
    timing.steps["process_exit"] = max(0.0, child.wall_seconds - startup - materialize)
    metadata = {key: value["metadata"] for key, value in report["assets"].items()}
    timing.extra.update(
        materialize_seconds=materialize,
        process_seconds=child.wall_seconds,
        peak_rss_bytes=child.peak_rss_bytes,
        downloaded=metadata[f"raw/{taxi.table}_csv"].get("downloaded"),
        rows_staged=metadata[f"postgres/{taxi.table}_staging"].get(PARTITION_ROW_COUNT),
        rows_inserted=metadata[f"postgres/{taxi.table}"].get("rows_inserted"),
        already_loaded=metadata[f"postgres/{taxi.table}"].get("already_loaded"),
    )
    return timing
