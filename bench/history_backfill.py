"""``taxi-platform backfill --wait`` as a user types it, watched while it runs.

The command launches one asset backfill per taxi type through the webserver and waits for
them; its output is echoed and the backfill ids are read from it. Meanwhile the runs that
have finished are read back from Dagster every ``progress_seconds`` and handed to
``on_progress``, so that a history that takes hours leaves a partial result behind.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.history_runs import MonthRun, fill_rows_before, month_run
from bench.history_sampler import ProcessPeaks
from taxi_platform.lib.catalog import TaxiType, taxi_type
from taxi_platform.tools.backfill import FINISHED_RUN, WebserverClient, backfill_state
from taxi_platform_tests.support.stack import BIN_DIR, DagsterStack

# A run's process starts before the run's STARTED event, by at most the daemon's
# start_timeout_seconds (dagster.yaml).
PROCESS_START_SLACK_SECONDS = 180

_LAUNCHED = re.compile(r"^launched backfill (\S+): (\S+) ")


@dataclass
class BackfillWatch:
    """The backfill command's process and what has been learnt from it so far."""

    stack: DagsterStack
    peaks: ProcessPeaks
    log: Callable[[str], None]
    backfills: dict[str, TaxiType] = field(default_factory=dict)  # backfill id -> taxi
    finished_runs: dict[str, MonthRun] = field(default_factory=dict)  # run id -> run
    exit_code: int | None = None
    command_seconds: float | None = None
    interrupted: bool = False
    launched_at: float | None = None  # epoch seconds

    @property
    def client(self) -> WebserverClient:
        return WebserverClient(self.stack.webserver_url, timeout_seconds=120)

    def _echo(self, stream) -> None:
        for line in stream:
            line = line.rstrip("\n")
            launched = _LAUNCHED.match(line)
            if launched:
                self.backfills[launched.group(1)] = taxi_type(launched.group(2))
            self.log(f"  | {line}")

    def month_runs(self) -> list[MonthRun]:
        """The finished runs of every backfill, rows-before filled in per taxi type."""
        client = self.client
        for backfill_id, taxi in list(self.backfills.items()):
            for month in backfill_state(client, backfill_id).months.values():
                if month.run_id is None or month.status not in FINISHED_RUN:
                    continue
                if month.run_id not in self.finished_runs:
                    run = month_run(client, taxi, month.run_id)
                    if run.pid is not None:
                        run.peak_rss_bytes, run.peak_rss_helpers_bytes = _run_peak(self.peaks, run)
                    self.finished_runs[month.run_id] = run
        by_taxi: dict[str, list[MonthRun]] = {}
        for run in self.finished_runs.values():
            by_taxi.setdefault(run.taxi, []).append(run)
        ordered = []
        for runs in by_taxi.values():
            # Only the newest run of a month counts (a retry replaces a failure).
            latest = {run.month: run for run in sorted(runs, key=lambda r: r.merge_ended)}
            runs = list(latest.values())
            fill_rows_before(runs)
            ordered.extend(runs)
        return ordered


def run_backfill(
    watch: BackfillWatch,
    taxi_option: str,
    first: str,
    last: str,
    on_progress: Callable[[list[MonthRun]], None],
    progress_seconds: float = 60.0,
) -> float:
    """Run the command to its end; the epoch second it was started at.

    The wall time that counts is from then to the end of the last run (``summarize``): the
    command itself notices the end a daemon iteration later.
    """
    command = [
        str(BIN_DIR / "taxi-platform"),
        "backfill",
        "--taxi",
        taxi_option,
        "--from",
        first,
        "--to",
        last,
        "--wait",
        "--poll-seconds",
        "2",
        "--url",
        watch.stack.webserver_url,
    ]
    watch.log("$ " + " ".join(command))
    started_at = watch.launched_at = time.time()
    process = subprocess.Popen(
        command,
        env=watch.stack.process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    reader = threading.Thread(target=watch._echo, args=(process.stdout,), daemon=True)
    reader.start()
    next_progress = time.monotonic() + progress_seconds
    try:
        while process.poll() is None:
            for service in watch.stack.processes:
                service.check_alive()
            if time.monotonic() >= next_progress:
                on_progress(watch.month_runs())
                next_progress = time.monotonic() + progress_seconds
            time.sleep(1.0)
    except KeyboardInterrupt:
        # Stopped early (Ctrl-C, or SIGINT from whoever started it): the months finished
        # so far are still read back and reported, marked as an interrupted history.
        watch.interrupted = True
        process.terminate()
        process.wait(timeout=30)
    reader.join(timeout=10)
    watch.exit_code = process.returncode
    watch.command_seconds = time.time() - started_at
    return started_at


def _run_peak(peaks: ProcessPeaks, run: MonthRun) -> tuple[int | None, int | None]:
    """The sampled peak of the run's own process (its pid, started just before the run),
    and what its helpers held alone at that sample."""
    started = run.ended_at - run.seconds
    found = peaks.peak_with_helpers(run.pid, started - PROCESS_START_SLACK_SECONDS, started + 1)
    return found if found else (None, None)
