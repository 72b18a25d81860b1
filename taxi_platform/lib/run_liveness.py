"""Runs whose process is gone: marked failed, and the pool slots they held freed.

A run killed mid-step (``kill -9``, out of memory, a reboot) stays STARTED and keeps the
``taxi_database`` pool slots it claimed, so after two such deaths every database step of
every later run waits forever. Dagster's run monitoring cannot see it: the default run
launcher has no worker health check, and a ``dagster asset materialize`` in a terminal has
no launcher at all. What it does record is each run's process id (the engine events
"Started process for run (pid: N)" and "Executing steps in process (pid: N)"); we add the
host the run runs on as a tag. A STARTED run of this host whose process no longer exists,
or whose pid now belongs to a process started after the run's, is dead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

RUN_HOST_TAG = "taxi_platform/host"

# A /proc start time is rounded to the clock tick and the boot time to the second.
_START_TIME_SLACK_SECONDS = 2.0


@dataclass(frozen=True)
class RunProcess:
    pid: int
    seen_at: float
    """When Dagster reported the pid: the process had started by then."""


def this_host() -> str:
    return socket.gethostname()


def tag_run_with_host(instance: dg.DagsterInstance, run_id: str) -> None:
    """Say where the run's process lives, so that only this host judges whether it is alive."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.tags.get(RUN_HOST_TAG) != this_host():
        instance.add_run_tags(run_id, {RUN_HOST_TAG: this_host()})


def run_process(instance: dg.DagsterInstance, run_id: str) -> RunProcess | None:
    """The newest process Dagster reported for the run (a resumed run has a new one)."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for record in reversed(events):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and str(pid.value).isdigit():
            return RunProcess(pid=int(pid.value), seen_at=record.timestamp)
    return None


def process_is_alive(process: RunProcess) -> bool:
    """True while the pid exists and is still the process Dagster reported."""
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    started_at = _process_start_time(process.pid)
    return started_at is None or started_at <= process.seen_at + _START_TIME_SLACK_SECONDS


def _process_start_time(pid: int) -> float | None:
    """The process's start as a Unix time (Linux /proc); None where that is unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_line = next(
            line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, StopIteration):
        return None
    # Field 22 (starttime, in clock ticks since boot) counted after the command's ")".
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return int(boot_line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def _run_errors_dir(instance: dg.DagsterInstance) -> Path:
    return Path(instance.root_directory) / "taxi_platform" / "run_errors"


def record_run_error(instance: dg.DagsterInstance, run_id: str, message: str) -> None:
    """Keep a run's failure on local disk, for when its storage is the database that failed.

    With the taxi data and Dagster's storage on one server, a run whose database went away
    cannot write its failure; the run stays STARTED and its process ends. Whoever fails it
    later (``reap_dead_runs``) reads this, so the run's page says what happened.
    """
    folder = _run_errors_dir(instance)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run_id}.txt").write_text(message)
    except OSError:
        pass  # best effort: the message was printed as well


def read_run_error(instance: dg.DagsterInstance, run_id: str) -> str | None:
    try:
        return (_run_errors_dir(instance) / f"{run_id}.txt").read_text()
    except (OSError, TypeError):
        return None


def reap_dead_runs(
    instance: dg.DagsterInstance, log: Callable[[str], None] | None = None
) -> list[str]:
    """Fail this host's STARTED runs whose process is gone and free their pool slots;
    free the slots of finished runs that still hold some. Returns the run ids reaped."""
    reaped = []
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED], tags={RUN_HOST_TAG: this_host()}
        )
    )
    for record in records:
        run = record.dagster_run
        process = run_process(instance, run.run_id)
        if process is None or process_is_alive(process):
            continue
        last_words = read_run_error(instance, run.run_id)
        message = (
            f"Run {run.run_id} failed: {last_words} (recorded by the run when Dagster's storage "
            f"could not be written; its process, pid {process.pid} on {this_host()}, has "
            "ended since)"
            if last_words
            else f"Run {run.run_id}'s process (pid {process.pid} on {this_host()}) is gone: "
            "killed, out of memory or the machine restarted. Marked failed so that the "
            "database pool slots it held are freed; the month it was loading is as it was "
            "before the run and loads on the next run."
        )
        instance.report_run_failed(run, message)
        if log is not None:
            log(message)
        reaped.append(run.run_id)
    for run_id in [*reaped, *_finished_runs_holding_slots(instance)]:
        freed = instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        if freed and log is not None:
            log(f"freed {freed} pool slot(s) held by run {run_id}, whose process is gone")
    return reaped


def _finished_runs_holding_slots(instance: dg.DagsterInstance) -> list[str]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return []
    finished = instance.get_run_records(
        filters=dg.RunsFilter(
            run_ids=list(holders),
            statuses=[
                dg.DagsterRunStatus.SUCCESS,
                dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED,
            ],
        )
    )
    return [record.dagster_run.run_id for record in finished]


def earlier_live_runs_of_step(
    instance: dg.DagsterInstance, run_id: str, partition_key: str, step_key: str
) -> list[dg.DagsterRun]:
    """Other STARTED runs of ``partition_key`` that execute ``step_key`` and were created
    before run ``run_id``, whose process is alive (or on another host, so not judged here).

    Two runs of one month would stage it into the same table and race each other's
    retention of the landed file; the younger one gives way, so that exactly one of any
    pair goes on (creation order is a total order both runs see alike).
    """
    own = instance.get_run_record_by_id(run_id)
    if own is None:
        return []
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED], tags={"dagster/partition": partition_key}
        )
    )
    earlier = []
    for record in records:
        run = record.dagster_run
        if run.run_id == run_id or (record.create_timestamp, run.run_id) > (
            own.create_timestamp,
            run_id,
        ):
            continue
        if step_key not in _planned_step_keys(instance, run) or not _may_be_alive(instance, run):
            continue
        earlier.append(run)
    return earlier


def _planned_step_keys(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[str]:
    if run.execution_plan_snapshot_id is None:
        return set()
    snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return set(snapshot.step_keys_to_execute)


def _may_be_alive(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    if run.tags.get(RUN_HOST_TAG) not in (None, this_host()):
        return True
    process = run_process(instance, run.run_id)
    return process is None or process_is_alive(process)
