"""The TLC path's cost: a Parquet month converted on landing, next to a course CSV.gz month.

    .venv/bin/python -m bench.tlc_conversion --rows 3000000 --taxi yellow

Generates one month of ``--rows`` trips in both layouts (the same trips: same seed), serves
them from a local mirror, and loads each into a fresh database of an embedded Postgres by
a real Dagster run (``bench.ours_run``: raw file, staging, final table) in a child process:
once from the course layout (download + gunzip) and once from the TLC's (download +
DuckDB conversion to CSV). For each it reports the raw step's time (the landing:
conversion or gunzip), the whole run's wall time and the run's peak RSS, read two ways:
``getrusage(RUSAGE_CHILDREN)`` of a wrapper process whose only child is the run, and
psutil samples of the run's process tree. It fails (exit 1) when the TLC run's peak RSS is
over ``--max-rss-mb`` (400 by default, the issue's bound), and writes the figures to
``bench/results/{timestamp}_tlc_conversion_{taxi}_{rows}rows.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import psutil
import psycopg

from taxi_platform.lib.asset_keys import PARTITION_ROW_COUNT
from taxi_platform.lib.catalog import TaxiType, taxi_type
from taxi_platform.lib.months import parse_month
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.generate import write_month
from taxi_platform.tools.generate_tlc import write_tlc_month
from taxi_platform.tools.mirror import ReleaseMirror

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPOSITORY_ROOT / "bench" / "results"
SAMPLE_SECONDS = 0.05

# The wrapper: runs the command given as arguments, then prints its child's peak RSS (KiB).
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:], stdout=sys.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


@dataclass
class PathFigures:
    """One source's load of the month."""

    source: str
    file_bytes: int
    rows: int
    landing_seconds: float  # the raw step: download + gunzip, or download + conversion
    run_wall_seconds: float
    peak_rss_mb_rusage: float
    peak_rss_mb_sampled: float


def _run_month(
    server: EmbeddedPostgres,
    mirror: ReleaseMirror,
    taxi: TaxiType,
    month: date,
    source: str,
    work: Path,
) -> PathFigures:
    database = f"bench_tlc_{source}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'drop database if exists "{database}" with (force)')
        admin.execute(f'create database "{database}"')
    report_path = work / f"{source}.json"
    command = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "bench.ours_run"]
    command += ["--taxi", taxi.name, "--month", f"{month:%Y-%m}", "--base-url", mirror.base_url]
    command += ["--tlc-url", mirror.tlc_url, "--sources", source, "--out", str(report_path)]
    command += ["--landing", str(work / f"landing_{source}"), "--landing-retention", "delete"]
    environment = {**os.environ, "BENCH_DATABASE_URL": server.url(database)}
    environment.pop("DAGSTER_HOME", None)
    started = time.perf_counter()
    with open(work / f"{source}.log", "w") as log:
        child = subprocess.Popen(
            command,
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        sampled = _sample_peak_rss(child)
    wall = time.perf_counter() - started
    output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise RuntimeError(f"the {source} run failed: {report_path.read_text()[-3000:]}")
    report = json.loads(report_path.read_text())
    step = report["steps"][f"raw__{taxi.name}_tripdata_csv"]
    raw = report["assets"][f"raw/{taxi.table}_csv"]["metadata"]
    return PathFigures(
        source=source,
        file_bytes=raw["gz_bytes"],
        rows=raw[PARTITION_ROW_COUNT],
        landing_seconds=round(step["STEP_SUCCESS"] - step["STEP_START"], 2),
        run_wall_seconds=round(wall, 2),
        peak_rss_mb_rusage=round(int(output.strip().splitlines()[-1]) / 1024, 1),
        peak_rss_mb_sampled=round(sampled / 2**20, 1),
    )


def _sample_peak_rss(child: subprocess.Popen) -> int:
    """The largest RSS of the wrapper's children (the run) seen until the wrapper exits."""
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            members = watched.children(recursive=True)
            peak = max(peak, sum(member.memory_info().rss for member in members))
        except psutil.NoSuchProcess:
            pass
        time.sleep(SAMPLE_SECONDS)
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--taxi", default="yellow")
    parser.add_argument("--month", default="2020-01", help="YYYY-MM")
    parser.add_argument("--max-rss-mb", type=float, default=400)
    parser.add_argument("--work", default=None, help="scratch folder (a temporary one by default)")
    args = parser.parse_args(argv)
    taxi, month = taxi_type(args.taxi), parse_month(args.month)
    with tempfile.TemporaryDirectory(prefix="bench_tlc_", dir=args.work) as scratch:
        work = Path(scratch)
        work.chmod(0o755)  # the embedded server's system user reads below it
        started = time.perf_counter()
        write_month(taxi, month, args.rows, work / "mirror", seed=11)
        write_tlc_month(taxi, month, args.rows, work / "mirror", seed=11)
        generated = time.perf_counter() - started
        server = EmbeddedPostgres(server_dir=work / "postgres", port=free_port()).start()
        try:
            with ReleaseMirror(work / "mirror") as mirror:
                figures = [
                    _run_month(server, mirror, taxi, month, source, work)
                    for source in ("course", "tlc")
                ]
        finally:
            _stop(server)
    result = {
        "command": " ".join(["python -m bench.tlc_conversion", *(argv or sys.argv[1:])]),
        "taxi": taxi.name,
        "month": f"{month:%Y-%m}",
        "rows": args.rows,
        "generate_seconds": round(generated, 1),
        "paths": [asdict(figure) for figure in figures],
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "max_rss_mb": args.max_rss_mb,
    }
    _print(result)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"{stamp}_tlc_conversion_{taxi.name}_{args.rows}rows.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    tlc = figures[-1]
    return 0 if max(tlc.peak_rss_mb_rusage, tlc.peak_rss_mb_sampled) <= args.max_rss_mb else 1


def _print(result: dict) -> None:
    print(f"{result['command']}  ({result['rows']:,} rows of {result['taxi']} {result['month']})")
    columns = ("file MB", 8), ("rows", 10), ("landing s", 10), ("run s", 7), ("peak RSS MB", 12)
    print(f"{'source':<8} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for path in result["paths"]:
        peak = max(path["peak_rss_mb_rusage"], path["peak_rss_mb_sampled"])
        print(
            f"{path['source']:<8} {path['file_bytes'] / 2**20:>8.1f} {path['rows']:>10,} "
            f"{path['landing_seconds']:>10.2f} {path['run_wall_seconds']:>7.1f} {peak:>12.1f}"
        )
    print(f"bound: {result['max_rss_mb']} MB; load average {result['load_average']}")


def _stop(server: EmbeddedPostgres) -> None:
    """Stop the benchmark's server; a slow stop on a loaded machine costs no figures."""
    try:
        server.stop()
    except subprocess.CalledProcessError as error:
        print(f"warning: the benchmark's Postgres did not stop cleanly ({error})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
