"""What the history benchmark watches from outside while the backfill runs.

The run workers are children of the code server (the default run launcher asks it to
start each run in a process of its own), so their memory is read from the process table,
not from Dagster: the peak resident set size of each process below the code server, and
later matched to its run through the run's "Started process for run (pid: N)" event. The
landing area's size is summed at the same rate, so that a landing area that grows with the
history (files kept after their month is merged) shows as a growing peak.

The sampler shares the machine with what it measures, so a sample reads the process table
once: walking it again for each process (``psutil``'s ``children``) and reading every
descendant's page map several times cost 35 core-seconds in a 230 s backfill, 8% of the
two cores the loads had. A process's own part is its peak resident set as the kernel keeps
it (``VmHWM``), so a peak between two samples is not missed and half a second apart is
often enough; what its descendants hold alone (USS) is read at the sample, for run
processes only (``is_run``; ``helpers_of`` says which descendants count): for the gRPC
server, whose descendants are the runs, that read walked every run's page map each
sample, for a figure nothing reports (a server with four 300 MB runs below it: 27.3 ms of
CPU a sample, 3.4 ms without it).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# A process's own peak is the kernel's (VmHWM), so the interval only bounds how late a
# descendant's unique memory is seen; rarely enough to cost nothing measurable beside the
# runs on a 2-core machine.
SAMPLE_SECONDS = 0.5

# How a run's process is told from the servers above it: the run launcher has the code
# server start each run with multiprocessing's ``spawn`` (Dagster 1.13.27), whose command
# line ends with this flag.
SPAWNED_PROCESS_FLAG = "--multiprocessing-fork"


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files below ``folder`` (0 when it does not exist yet)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # a temporary download renamed or deleted meanwhile
                pass
    return total


@dataclass
class ProcessPeaks:
    """Peak memory per process, keyed by pid and start time, with the part of it its
    helpers held alone at that sample (so that a high peak says whose it was).

    A pid alone is not a process: this machine's pid_max is 32,768 and a full history
    starts more processes than that (Postgres's parallel workers among them), so keyed by
    pid, a run could be credited with the peak of an earlier process that had its pid.
    """

    by_process: dict[tuple[int, float], tuple[int, int]] = field(default_factory=dict)

    def record(self, pid: int, started_at: float, rss: int, helpers: int = 0) -> None:
        """``rss``: the process's own peak and its helpers' memory; ``helpers``: the latter."""
        key = (pid, started_at)
        if rss > self.by_process.get(key, (0, 0))[0]:
            self.by_process[key] = (rss, helpers)

    def peak(self, pid: int, started_after: float, started_before: float) -> int | None:
        """The peak of the process ``pid`` started in that window (epoch seconds)."""
        found = self.peak_with_helpers(pid, started_after, started_before)
        return found[0] if found else None

    def peak_with_helpers(
        self, pid: int, started_after: float, started_before: float
    ) -> tuple[int, int] | None:
        """``peak``, and what the helpers held alone at the sample that gave it."""
        peaks = [
            peak
            for (sampled_pid, started_at), peak in self.by_process.items()
            if sampled_pid == pid and started_after <= started_at <= started_before
        ]
        return max(peaks) if peaks else None


@dataclass
class Sampler:
    """A thread that keeps per-process RSS peaks below ``root_pid`` and the landing peak."""

    root_pid: int
    landing: Path
    interval: float = SAMPLE_SECONDS
    peaks: ProcessPeaks = field(default_factory=ProcessPeaks)
    landing_peak_bytes: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="history-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval)

    def sample_once(self) -> None:
        self.samples += 1
        self.landing_peak_bytes = max(self.landing_peak_bytes, folder_bytes(self.landing))
        children = children_by_parent()
        unique_bytes: dict[int, int] = {}
        for process in descendants(self.root_pid, children):
            try:
                started_at = process.create_time()
                own = own_peak_bytes(process)
                command = command_line(process)
            except psutil.NoSuchProcess:
                continue
            below = helpers_of(command, process.pid, children) if is_run(command) else []
            held_alone = sum(_unique_bytes(child, unique_bytes) for child in below)
            self.peaks.record(process.pid, started_at, own + held_alone, held_alone)


def command_line(process: psutil.Process) -> list[str]:
    """The process's command line; empty where it cannot be read (a zombie, another
    user's process)."""
    try:
        return process.cmdline()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return []


def is_run(command: list[str]) -> bool:
    """Whether a process with this command line is a run's (``SPAWNED_PROCESS_FLAG``): its
    descendants are its helpers (the compute-log ``tail`` processes) and count toward its
    memory."""
    return SPAWNED_PROCESS_FLAG in command


def helpers_of(
    run_command: list[str], run_pid: int, children: dict[int, list[psutil.Process]]
) -> list[psutil.Process]:
    """The run's descendants that have become programs of their own.

    A child between its fork and its exec is still the run. ``subprocess`` starts one with
    ``vfork``: until it execs, the child shares the run's memory, and its page map shows
    the run's private pages as its own, so its USS counted the run a second time: the rare
    peaks of 470-472 MB (the run's ~360 MB plus its ~110 MB of private pages), whenever a
    sample fell in the millisecond before a ``tail`` started. Such a child still has the
    run's command line.
    """
    helpers = []
    for child in descendants(run_pid, children):
        try:
            if command_line(child) != run_command:
                helpers.append(child)
        except psutil.NoSuchProcess:  # ended since the process table was read
            pass
    return helpers


def children_by_parent() -> dict[int, list[psutil.Process]]:
    """The process table read once: each pid's children."""
    children: dict[int, list[psutil.Process]] = defaultdict(list)
    for process in psutil.process_iter(["ppid"]):
        children[process.info["ppid"]].append(process)
    return children


def descendants(pid: int, children: dict[int, list[psutil.Process]]) -> list[psutil.Process]:
    found, waiting = [], list(children.get(pid, ()))
    while waiting:
        process = waiting.pop()
        found.append(process)
        waiting.extend(children.get(process.pid, ()))
    return found


def own_peak_bytes(process: psutil.Process) -> int:
    """The process's peak resident set so far (``VmHWM``), or its resident set now where
    the kernel does not say."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return process.memory_info().rss


def _unique_bytes(process: psutil.Process, known: dict[int, int]) -> int:
    """What ``process`` holds alone (USS), read once per sample; 0 once it is gone. See
    ``bench.memory.tree_memory_bytes`` for why a descendant counts by its USS."""
    if process.pid not in known:
        try:
            known[process.pid] = process.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            known[process.pid] = 0
    return known[process.pid]
