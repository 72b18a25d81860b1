"""The load benchmark, one command: ours vs the zoomcamp flow's SQL vs a bare COPY.

    .venv/bin/python -m bench.run --rows 1000000 --repeat 3 --taxi yellow

On a fresh embedded Postgres (PostgreSQL 18 from the wheel, the platform's settings) and
over real HTTP from a local release mirror, it generates a month shaped like the real
files (and the month after it), then times, ``--repeat`` times each, median reported:

- three cases: a new month into an empty final table, the re-run of that month (nothing
  new), the next month into a table that already holds one;
- six contenders (see ``bench.contenders``): ``floor`` (bare COPY into an unlogged table,
  new month only), ``durable_floor`` (COPY into a logged table with the pickup btree, new
  month only), ``zoomcamp_as_run`` (the Kestra flow's statements on its own DDL, as its
  users run it), ``zoomcamp`` (the same with our indexes added), ``ours_sql`` (our two load
  functions on the landed file) and ``ours_dagster`` (a real Dagster run of the three
  assets in a child process, download included, peak RSS sampled);
- a backfill: ``--backfill-months`` green months loaded one run at a time, then two runs
  at a time (the platform's ``taxi`` tag limit in dagster.yaml), wall time for both.

It prints the command, a table per case and the per-step breakdown, and writes everything
to ``bench/results/{timestamp}_{taxi}_{rows}rows.json``. Every contender gets a database of
its own per repetition, dropped afterwards, and a CHECKPOINT before each timed load so that
no one pays for the previous one's dirty pages.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import psutil
import psycopg
import yaml
from psycopg import sql

from bench import contenders, report
from taxi_platform.lib.catalog import GREEN, TaxiType, taxi_type
from taxi_platform.lib.months import next_month, parse_month
from taxi_platform.local.embedded_postgres import SERVER_SETTINGS, EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.generate import write_month
from taxi_platform.tools.mirror import ReleaseMirror

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_ROWS = 1_000_000
# yellow 2019-01, the biggest month of the releases
REAL_YELLOW_2019_01_ROWS = 7_667_792


def platform_runs_per_taxi() -> int:
    """How many runs of one taxi type ``dagster.yaml`` lets run at once (its
    ``tag_concurrency_limits`` entry for the ``taxi`` tag): the backfill case's concurrency."""
    settings = yaml.safe_load((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    limits = settings["concurrency"]["runs"]["tag_concurrency_limits"]
    return next(limit["limit"] for limit in limits if limit["key"] == "taxi")


PLATFORM_CONCURRENCY_PER_TAXI = platform_runs_per_taxi()
CASES = ("new_month", "rerun", "next_month")


@dataclass
class Options:
    taxi: TaxiType
    month: date
    rows: int = QUICK_ROWS
    repeat: int = 3
    backfill_months: int = 6
    backfill_rows: int = 200_000
    backfill_concurrency: int = PLATFORM_CONCURRENCY_PER_TAXI
    results_dir: Path = RESULTS_DIR
    work_dir: Path | None = None
    keep_databases: bool = False
    # `keep` by default: the re-run case then measures the ledger's skip, not a second
    # download (with `delete` the landed file is gone once the month is staged).
    landing_retention: str = "keep"
    command: str = ""
    log: Callable[[str], None] = field(default=print)


@dataclass(frozen=True)
class LandedCsv:
    """The gunzipped month the SQL-level contenders read, as the raw asset lands it."""

    path: Path
    rows: int
    bytes: int
    gz_bytes: int
    sha256: str


def land_locally(gz_path: Path, csv_path: Path) -> LandedCsv:
    """Gunzip once for the SQL-level contenders, with the sha256 our ledger keys on."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    digest, newlines, size = hashlib.sha256(), 0, 0
    with gzip.open(gz_path, "rb") as source, open(csv_path, "wb") as target:
        while chunk := source.read(1 << 20):
            target.write(chunk)
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
    return LandedCsv(csv_path, newlines - 1, size, gz_path.stat().st_size, digest.hexdigest())


class Databases:
    """A database per contender and repetition on the benchmark's server."""

    def __init__(self, server: EmbeddedPostgres, prefix: str) -> None:
        self.server = server
        self.prefix = prefix

    def create(self, name: str) -> str:
        full_name = f"{self.prefix}_{name}"
        with psycopg.connect(self.server.url("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(full_name))
            )
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(full_name)))
        return full_name

    def drop(self, full_name: str) -> None:
        with psycopg.connect(self.server.url("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(full_name))
            )


def _median_timing(timings: list[contenders.Timing]) -> dict:
    """Median of the totals and of each step (step medians need not add up to the total)."""
    steps = {
        name: statistics.median(timing.steps.get(name, 0.0) for timing in timings)
        for name in timings[0].steps
    }
    summary = {
        "seconds": statistics.median(timing.seconds for timing in timings),
        "samples": [round(timing.seconds, 4) for timing in timings],
        "steps": steps,
    }
    numeric = {
        key
        for key, value in timings[0].extra.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    for key, value in timings[0].extra.items():
        if key in numeric:
            summary[key] = statistics.median(timing.extra[key] for timing in timings)
        else:
            summary[key] = value
    if "peak_rss_bytes" in numeric:
        summary["peak_rss_bytes"] = max(timing.extra["peak_rss_bytes"] for timing in timings)
    return summary


def run_benchmark(options: Options, server: EmbeddedPostgres | None = None) -> dict:
    """Run the whole benchmark and return (and write) its results."""
    log = options.log
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="taxi_bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the server's system user must reach its folder below
    own_server = server is None
    if server is None:
        log(f"starting an embedded Postgres in {work / 'postgres'}")
        server = EmbeddedPostgres(server_dir=work / "postgres", port=free_port()).start()
    run_stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    databases = Databases(server, f"bench_{run_stamp.lower()}")
    kept: dict[str, str] = {}
    try:
        results = _run(options, server, work, databases, kept, run_stamp)
    finally:
        if own_server:
            server.stop()
        if options.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    options.results_dir.mkdir(parents=True, exist_ok=True)
    results_path = options.results_dir / f"{run_stamp}_{options.taxi.name}_{options.rows}rows.json"
    results_path.write_text(json.dumps(results, indent=2, default=str))
    results["results_path"] = str(results_path)
    log(report.format_results(results))
    log(f"results: {results_path}")
    return results


def _run(
    options: Options,
    server: EmbeddedPostgres,
    work: Path,
    databases: Databases,
    kept: dict[str, str],
    run_stamp: str,
) -> dict:
    log, taxi = options.log, options.taxi
    load_at_start = os.getloadavg()
    months = (options.month, next_month(options.month))
    mirror_folder = work / "mirror"
    mirror_folder.mkdir(exist_ok=True)

    started = time.perf_counter()
    gz_files = [write_month(taxi, month, options.rows, mirror_folder) for month in months]
    generation_seconds = time.perf_counter() - started
    log(
        f"generated {taxi.name} {months[0]:%Y-%m} and {months[1]:%Y-%m}, {options.rows:,} "
        f"rows each, in {generation_seconds:.1f} s"
    )
    landed = [
        land_locally(gz, work / "landed" / taxi.name / taxi.csv_name(month))
        for gz, month in zip(gz_files, months, strict=True)
    ]

    with psycopg.connect(server.url("postgres")) as connection:
        server_version = connection.execute("show server_version").fetchone()[0]

    timings: dict[str, dict[str, list[contenders.Timing]]] = {case: {} for case in CASES}

    def record(case: str, contender: str, timing: contenders.Timing) -> None:
        timings[case].setdefault(contender, []).append(timing)
        log(
            f"  {case:<10} {contender:<15} {timing.seconds:8.2f} s  "
            + "  ".join(f"{name}={seconds:.2f}" for name, seconds in timing.steps.items())
        )

    last = options.repeat - 1
    with ReleaseMirror(mirror_folder) as mirror:
        for repetition in range(options.repeat):
            log(f"repetition {repetition + 1}/{options.repeat}")
            keep = options.keep_databases and repetition == last

            name = databases.create(f"floor_{repetition}")
            url = server.url(name)
            contenders.checkpoint(url)
            record("new_month", "floor", contenders.floor_load(url, taxi, landed[0].path))
            _release(databases, name, keep, kept, "floor")

            name = databases.create(f"durable_floor_{repetition}")
            url = server.url(name)
            contenders.checkpoint(url)
            record(
                "new_month",
                "durable_floor",
                contenders.durable_floor_load(url, taxi, landed[0].path),
            )
            _release(databases, name, keep, kept, "durable_floor")

            for contender, with_our_indexes in (("zoomcamp_as_run", False), ("zoomcamp", True)):
                name = databases.create(f"{contender}_{repetition}")
                url = server.url(name)
                for case, month, csv in _case_files(months, landed):
                    contenders.checkpoint(url)
                    timing = contenders.zoomcamp_load(url, taxi, month, csv.path, with_our_indexes)
                    record(case, contender, timing)
                _release(databases, name, keep, kept, contender)

            name = databases.create(f"ours_sql_{repetition}")
            url = server.url(name)
            for case, month, csv in _case_files(months, landed):
                contenders.checkpoint(url)
                record(
                    case,
                    "ours_sql",
                    contenders.ours_sql_load(url, taxi, month, csv.path, csv.sha256),
                )
            _release(databases, name, keep, kept, "ours_sql")

            name = databases.create(f"ours_dagster_{repetition}")
            url = server.url(name)
            landing = work / f"landing_{repetition}"
            for case, month, _csv in _case_files(months, landed):
                contenders.checkpoint(url)
                child = contenders.run_dagster_month(
                    url,
                    taxi,
                    month,
                    mirror.base_url,
                    landing,
                    work / f"ours_dagster_{repetition}_{case}.json",
                    options.landing_retention,
                )
                record(case, "ours_dagster", contenders.dagster_timing(child, taxi))
            _release(databases, name, keep, kept, "ours_dagster")
            shutil.rmtree(landing, ignore_errors=True)

        backfill = None
        if options.backfill_months > 0:
            backfill = _backfill(options, server, work, databases, mirror, kept)

    cases = {
        case: {contender: _median_timing(runs) for contender, runs in by_contender.items()}
        for case, by_contender in timings.items()
    }
    for by_contender in cases.values():
        for summary in by_contender.values():
            summary["rows_per_second"] = options.rows / summary["seconds"]
            if "materialize_seconds" in summary:
                summary["rows_per_second_run"] = options.rows / summary["materialize_seconds"]
    results = {
        "command": options.command,
        "started_at": run_stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgres": server_version,
            "postgres_settings": SERVER_SETTINGS,
            # The machine may be shared: a busy neighbour shows here, not in the medians.
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "parameters": {
            "taxi": taxi.name,
            "month": f"{months[0]:%Y-%m}",
            "next_month": f"{months[1]:%Y-%m}",
            "rows": options.rows,
            "repeat": options.repeat,
            "backfill_months": options.backfill_months,
            "backfill_rows": options.backfill_rows,
            "backfill_concurrency": options.backfill_concurrency,
            "landing_retention": options.landing_retention,
        },
        "files": [
            {
                "name": csv.path.name,
                "rows": csv.rows,
                "csv_bytes": csv.bytes,
                "gz_bytes": csv.gz_bytes,
            }
            for csv in landed
        ],
        "generation_seconds": generation_seconds,
        "cases": cases,
        "backfill": backfill,
        "databases": kept,
    }
    results["ratios"] = report.ratios(results)
    results["targets"] = report.targets(results)
    return results


def _case_files(months: tuple[date, date], landed: list[LandedCsv]):
    """(case, month, file) in the order a user meets them."""
    return [
        ("new_month", months[0], landed[0]),
        ("rerun", months[0], landed[0]),
        ("next_month", months[1], landed[1]),
    ]


def _release(
    databases: Databases, name: str, keep: bool, kept: dict[str, str], contender: str
) -> None:
    """Drop a repetition's database (disk: a 7.7M-row month is GBs), or keep it if asked."""
    if keep:
        kept[contender] = name
    else:
        databases.drop(name)


def _backfill(
    options: Options,
    server: EmbeddedPostgres,
    work: Path,
    databases: Databases,
    mirror: ReleaseMirror,
    kept: dict[str, str],
) -> dict:
    """Green months one run at a time, then ``backfill_concurrency`` runs at a time.

    Each month is its own Dagster run in its own process, as the run launcher starts
    them; the concurrent pass keeps at most ``backfill_concurrency`` of them alive, the
    limit dagster.yaml puts on runs of one taxi type.
    """
    log, taxi = options.log, GREEN
    months = [options.month]
    while len(months) < options.backfill_months:
        months.append(next_month(months[-1]))
    for month in months:
        write_month(taxi, month, options.backfill_rows, work / "mirror")
    log(f"backfill: {len(months)} green months of {options.backfill_rows:,} rows")
    passes = {}
    for mode, workers in (("sequential", 1), ("concurrent", options.backfill_concurrency)):
        name = databases.create(f"backfill_{mode}")
        url = server.url(name)
        landing = work / f"landing_backfill_{mode}"
        contenders.checkpoint(url)

        def load(month: date, mode: str = mode, url: str = url, landing: Path = landing):
            return contenders.run_dagster_month(
                url,
                taxi,
                month,
                mirror.base_url,
                landing,
                work / f"backfill_{mode}_{month:%Y-%m}.json",
                options.landing_retention,
            )

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(load, months))
        wall = time.perf_counter() - started
        with psycopg.connect(url) as connection:
            final_rows = connection.execute(
                sql.SQL("select count(*) from {}").format(sql.Identifier("public", taxi.table))
            ).fetchone()[0]
        passes[mode] = {
            "workers": workers,
            "wall_seconds": wall,
            "run_seconds": [round(run.wall_seconds, 3) for run in runs],
            "peak_rss_bytes": max(run.peak_rss_bytes for run in runs),
            "final_rows": final_rows,
        }
        log(f"  backfill {mode:<10} {workers} at a time: {wall:.1f} s, {final_rows:,} rows")
        shutil.rmtree(landing, ignore_errors=True)
        _release(databases, name, options.keep_databases, kept, f"backfill_{mode}")
    return {
        "taxi": taxi.name,
        "months": [f"{month:%Y-%m}" for month in months],
        "rows_per_month": options.backfill_rows,
        **passes,
        "speedup": passes["sequential"]["wall_seconds"] / passes["concurrent"]["wall_seconds"],
    }


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--taxi", default="yellow", help="taxi type (default yellow)")
    parser.add_argument("--month", default="2019-01", help="month to load, YYYY-MM")
    parser.add_argument(
        "--rows",
        type=int,
        default=QUICK_ROWS,
        help=f"rows per month (default {QUICK_ROWS:,}; the real yellow 2019-01 has "
        f"{REAL_YELLOW_2019_01_ROWS:,}, use 7700000)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument(
        "--backfill-months",
        type=int,
        default=6,
        help="green months in the backfill figure (0 skips it)",
    )
    parser.add_argument(
        "--backfill-rows", type=int, default=200_000, help="rows per backfill month"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep generated files and server here (default: a temporary "
        "folder under /tmp, removed at the end)",
    )
    parser.add_argument(
        "--landing-retention",
        choices=("keep", "delete"),
        default="keep",
        help="the landing area's retention in the Dagster runs (default keep: the re-run "
        "then finds the file landed; delete makes it download the month again)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be at least 1")
    return Options(
        taxi=taxi_type(args.taxi),
        month=parse_month(args.month),
        rows=args.rows,
        repeat=args.repeat,
        backfill_months=args.backfill_months,
        backfill_rows=args.backfill_rows,
        results_dir=args.results_dir,
        work_dir=args.work_dir,
        landing_retention=args.landing_retention,
        command=" ".join(
            [".venv/bin/python -m bench.run", *(shlex.quote(arg) for arg in (argv or sys.argv[1:]))]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    print(f"$ {options.command}", flush=True)
    options.log = lambda line: print(line, flush=True)
    run_benchmark(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
