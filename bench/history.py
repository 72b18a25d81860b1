"""The whole history on one machine: every month of both taxi types, loaded as users load it.

    .venv/bin/python -m bench.history --from 2019-01 --to 2021-07 --taxi all --scale 1.0

Generates every month at its real row count times ``--scale`` (``bench.tlc_row_counts``;
the generator's realistic shape, out-of-month pickups included), serves them from a local
release mirror, and loads them through the platform as a user does: a code server,
webserver and daemon with the repository's ``dagster.yaml`` (run queue and concurrency
limits), on a fresh embedded Postgres, and ``taxi-platform backfill --taxi ... --wait``,
one asset backfill per taxi type. Then it reads each month's run back from Dagster.

It prints and writes (``--json``, default ``bench/results/{stamp}_history_{taxi}_x{scale}.json``)
per month the rows, the run's wall time and step times, the final table's rows before the
month and the cost per million rows; totals: wall time of the backfills, rows per second,
``pg_total_relation_size`` of each final table, Dagster's storage, the landing area's peak
and the peak RSS of a run; and a PNG plot of the cost per million rows against the table's
size. ``--with-zoomcamp`` then loads the same months with the zoomcamp flow's statements as
its users run them (at ``--zoomcamp-scale``, default 0.1, in a database of their own), and
the plot shows both curves. While the backfill runs, a partial JSON is rewritten every
minute, so a run stopped early still says how far it got.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import psutil
import psycopg

from bench import history_postgres, history_report, history_zoomcamp
from bench.history_backfill import BackfillWatch, run_backfill
from bench.history_cpu import CpuAccount
from bench.history_data import PlannedMonth, generate, planned_months
from bench.history_postgres_cpu import PostgresCpuSampler, with_not_seen
from bench.history_runs import MonthRun
from bench.history_sampler import Sampler
from bench.history_stack import (
    code_server_pid,
    drop_database,
    history_stack,
    recreate_database,
    stack_parts,
)
from bench.run import RESULTS_DIR
from taxi_platform.lib.catalog import TAXIS, TaxiType
from taxi_platform.lib.months import parse_month
from taxi_platform.local import orphaned_backends
from taxi_platform.local.embedded_postgres import SERVER_SETTINGS, EmbeddedPostgres
from taxi_platform.local.ports import free_port

TAXI_DATABASE = "history_taxi"
DAGSTER_DATABASE = "history_dagster"


@dataclass
class HistoryOptions:
    first: date
    last: date
    taxi_option: str  # green | yellow | all, as taxi-platform backfill takes it
    scale: float = 1.0
    json_path: Path | None = None
    with_zoomcamp: bool = False
    zoomcamp_scale: float = 0.1
    overlap: bool = False
    work_dir: Path | None = None
    keep_work: bool = False
    keep_databases: bool = False
    command: str = ""
    log: Callable[[str], None] = field(default=print)

    @property
    def taxis(self) -> list[TaxiType]:
        return list(TAXIS.values()) if self.taxi_option == "all" else [TAXIS[self.taxi_option]]


def default_json_path(options: HistoryOptions, stamp: str) -> Path:
    return RESULTS_DIR / f"{stamp}_history_{options.taxi_option}_x{options.scale:g}.json"


def run_history(options: HistoryOptions, server: EmbeddedPostgres | None = None) -> dict:
    """Generate, load, measure; write the JSON and the plot; return the results."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    json_path = options.json_path or default_json_path(options, stamp)
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="taxi_history-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the server's system user must reach its folder below
    own_server = server is None
    if server is None:
        options.log(f"starting an embedded Postgres in {work / 'postgres'}")
        server = EmbeddedPostgres(server_dir=work / "postgres", port=free_port()).start()
    try:
        results = _measure(options, server, work, stamp, json_path)
    finally:
        if own_server:
            server.stop()
        if options.work_dir is None and not options.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    options.log(history_report.format_history(results))
    options.log(f"results: {json_path}")
    return results


def _measure(
    options: HistoryOptions, server: EmbeddedPostgres, work: Path, stamp: str, json_path: Path
) -> dict:
    log = options.log
    planned = planned_months(
        options.taxis, options.first, options.last, options.scale, options.overlap
    )
    log(f"generating {len(planned)} months, {sum(m.rows for m in planned):,} rows")
    generation_seconds = generate(planned, work / "mirror", log)
    results = _skeleton(options, server, stamp, planned, generation_seconds)
    taxi_url = recreate_database(server, TAXI_DATABASE)
    dagster_url = recreate_database(server, DAGSTER_DATABASE)
    try:
        counters = history_postgres.server_counters(taxi_url)
        _load_through_platform(
            options, work, (taxi_url, dagster_url), postmaster_pid(server), results, json_path
        )
        results["postgres_activity"] = {
            "server": history_postgres.counters_since(
                counters, history_postgres.server_counters(taxi_url)
            ),
            "tables": history_postgres.table_maintenance(taxi_url, options.taxis),
        }
        results["table_rows"], results["table_bytes"] = _final_tables(taxi_url, options.taxis)
        results["dagster_storage_bytes"] = _database_bytes(server, DAGSTER_DATABASE)
        if options.with_zoomcamp and not results.get("interrupted"):
            results["zoomcamp"] = _zoomcamp_pass(options, server, work)
    finally:
        if options.keep_databases:
            log(
                f"kept databases {TAXI_DATABASE} and {DAGSTER_DATABASE} in {server.data_dir} "
                f"(password in {server.password_file})"
            )
        else:
            drop_database(server, TAXI_DATABASE)
            drop_database(server, DAGSTER_DATABASE)
    results["status"] = "interrupted" if results.get("interrupted") else "finished"
    results["machine"]["load_average_at_end"] = os.getloadavg()
    history_report.summarize(results)
    _write(results, json_path)
    results["plot_path"] = str(history_report.plot(results, json_path.with_suffix(".png")))
    _write(results, json_path)
    return results


def _skeleton(
    options: HistoryOptions,
    server: EmbeddedPostgres,
    stamp: str,
    planned: list[PlannedMonth],
    generation_seconds: float,
) -> dict:
    with psycopg.connect(server.url("postgres")) as connection:
        version = connection.execute("show server_version").fetchone()[0]
    return {
        "command": options.command,
        "started_at": stamp,
        "status": "running",
        "parameters": {
            "from": f"{options.first:%Y-%m}",
            "to": f"{options.last:%Y-%m}",
            "taxi": options.taxi_option,
            "scale": options.scale,
            "with_zoomcamp": options.with_zoomcamp,
            "zoomcamp_scale": options.zoomcamp_scale if options.with_zoomcamp else None,
            "overlap": options.overlap,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgres": version,
            "postgres_settings": SERVER_SETTINGS,
            # A shared machine: the other engineers' tests show here, not in the figures.
            "load_average_at_start": os.getloadavg(),
        },
        "generated": [
            {"taxi": m.taxi.name, "month": f"{m.month_start:%Y-%m}", "rows": m.rows}
            for m in planned
        ],
        "generation_seconds": round(generation_seconds, 3),
        "months": [],
    }


def postmaster_pid(server: EmbeddedPostgres) -> int:
    """The server's first process, parent of every backend; the server has just started."""
    pid = orphaned_backends.postmaster_pid(server.data_dir)
    if pid is None:
        raise RuntimeError(f"no postmaster.pid in {server.data_dir}: the server is not running")
    return pid


def _load_through_platform(
    options: HistoryOptions,
    work: Path,
    urls: tuple[str, str],
    postgres_pid: int,
    results: dict,
    json_path: Path,
) -> None:
    """The backfill through the running platform, sampled; results filled in place."""
    taxi_url, dagster_url = urls
    stack_root = work / "stack"
    shutil.rmtree(stack_root, ignore_errors=True)
    stack_root.mkdir(parents=True)
    with history_stack(stack_root, taxi_url, dagster_url, work / "mirror") as stack:
        landing = Path(stack.env["TAXI_HOME"]) / "landing"
        with Sampler(code_server_pid(stack), landing) as sampler:
            watch = BackfillWatch(stack, sampler.peaks, options.log)

            def progress(runs: list[MonthRun]) -> None:
                results["months"] = [run.as_json() for run in runs]
                results["landing_peak_bytes"] = sampler.landing_peak_bytes
                results["launched_at"] = watch.launched_at
                _write(results, json_path)
                options.log(f"  progress: {len(runs)} months finished, partial JSON written")

            first, last = f"{options.first:%Y-%m}", f"{options.last:%Y-%m}"
            cpu = CpuAccount(stack_parts(stack, postgres_pid))
            taxi_database = psycopg.conninfo.conninfo_to_dict(taxi_url)["dbname"]
            with PostgresCpuSampler(taxi_url, {taxi_database}) as postgres_cpu:
                launched_at = run_backfill(watch, options.taxi_option, first, last, progress)
            results["cpu_seconds"] = cpu.spent()
            results["postgres_cpu_by_activity"] = with_not_seen(
                postgres_cpu.seconds, results["cpu_seconds"]["postgres"]
            )
            runs = watch.month_runs()
        results["launched_at"] = launched_at
        results["interrupted"] = watch.interrupted
        results["command_seconds"] = round(watch.command_seconds, 3)
        results["backfill_exit_code"] = watch.exit_code
        results["backfills"] = {backfill: taxi.name for backfill, taxi in watch.backfills.items()}
        results["months"] = [run.as_json() for run in runs]
        results["landing_peak_bytes"] = sampler.landing_peak_bytes
        results["rss_samples"] = sampler.samples


def _final_tables(url: str, taxis: list[TaxiType]) -> tuple[dict, dict]:
    """Rows and bytes (table, TOAST and indexes) of each final table."""
    rows, sizes = {}, {}
    with psycopg.connect(url) as connection:
        for taxi in taxis:
            name = f"public.{taxi.table}"
            exists = connection.execute("select to_regclass(%s)", (name,)).fetchone()[0]
            if exists is None:
                rows[taxi.name], sizes[taxi.name] = 0, 0
                continue
            rows[taxi.name] = connection.execute(f"select count(*) from {name}").fetchone()[0]
            sizes[taxi.name] = connection.execute(
                "select pg_total_relation_size(%s)", (name,)
            ).fetchone()[0]
    return rows, sizes


def _database_bytes(server: EmbeddedPostgres, name: str) -> int:
    with psycopg.connect(server.url("postgres")) as connection:
        return connection.execute("select pg_database_size(%s)", (name,)).fetchone()[0]


def _zoomcamp_pass(options: HistoryOptions, server: EmbeddedPostgres, work: Path) -> dict:
    """The same months through the flow's statements, as run, at the zoomcamp scale."""
    log = options.log
    planned = planned_months(
        options.taxis, options.first, options.last, options.zoomcamp_scale, options.overlap
    )
    mirror = work / f"mirror_x{options.zoomcamp_scale:g}"
    if options.zoomcamp_scale == options.scale:
        mirror = work / "mirror"
    log(f"zoomcamp as run: {len(planned)} months at scale {options.zoomcamp_scale:g}")
    generate(planned, mirror, log)
    url = recreate_database(server, history_zoomcamp.DATABASE_NAME)
    try:
        started = time.perf_counter()
        months = history_zoomcamp.load_months(url, planned, mirror, log)
        wall = time.perf_counter() - started
        sizes = history_zoomcamp.table_bytes(url, [taxi.name for taxi in options.taxis])
    finally:
        drop_database(server, history_zoomcamp.DATABASE_NAME)
    return {
        "scale": options.zoomcamp_scale,
        "wall_seconds": round(wall, 3),
        "table_bytes": sizes,
        "months": months,
    }


def _write(results: dict, json_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = json_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2, default=str))
    temporary.replace(json_path)


def parse_args(argv: list[str] | None = None) -> HistoryOptions:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--from", dest="first", default="2019-01", help="first month, YYYY-MM")
    parser.add_argument("--to", dest="last", default="2021-07", help="last month, YYYY-MM")
    parser.add_argument("--taxi", choices=[*TAXIS, "all"], default="all")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="times each month's real row count (default 1.0)"
    )
    parser.add_argument("--json", dest="json_path", type=Path, default=None)
    parser.add_argument(
        "--with-zoomcamp",
        action="store_true",
        help="also load the months with the zoomcamp flow's statements, as run",
    )
    parser.add_argument("--zoomcamp-scale", type=float, default=0.1)
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="generate every month over the first month's days (files whose pickups meet)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the server, generated months and logs here (reused by a later run); "
        "default a temporary folder under /tmp, removed at the end",
    )
    parser.add_argument(
        "--keep-databases",
        action="store_true",
        help="leave the loaded tables and Dagster's storage on the server (with --work-dir, "
        "to EXPLAIN statements on full-size tables afterwards); default: dropped at the end",
    )
    args = parser.parse_args(argv)
    if args.keep_databases and args.work_dir is None:
        parser.error("--keep-databases needs --work-dir (the server is removed otherwise)")
    if args.scale <= 0 or args.zoomcamp_scale <= 0:
        parser.error("--scale and --zoomcamp-scale must be positive")
    first, last = parse_month(args.first), parse_month(args.last)
    if first > last:
        parser.error(f"--from {args.first} is after --to {args.last}")
    return HistoryOptions(
        first=first,
        last=last,
        taxi_option=args.taxi,
        scale=args.scale,
        json_path=args.json_path,
        with_zoomcamp=args.with_zoomcamp,
        zoomcamp_scale=args.zoomcamp_scale,
        overlap=args.overlap,
        work_dir=args.work_dir,
        keep_databases=args.keep_databases,
        command=" ".join(
            [".venv/bin/python -m bench.history", *(shlex.quote(a) for a in (argv or sys.argv[1:]))]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    print(f"$ {options.command}", flush=True)
    options.log = lambda line: print(line, flush=True)
    results = run_history(options)
    return 0 if results.get("backfill_exit_code") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
