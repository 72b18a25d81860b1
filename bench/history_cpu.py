"""Where the machine's CPU went during the backfill: core-seconds per part of the stack.

The throughput target is a budget of core-time per row, so the benchmark says who spent
the cores: Postgres (the loads' statements and Dagster's storage, one server), the code
server with every run's process below it, the daemon, the webserver, the release mirror,
this benchmark's own process (its sampler) and the rest of the machine, beside the time
the cores sat idle.

A process tree's CPU is read from the process table at the backfill's start and end: each
live member's own time plus what its exited children used (``children_user`` and
``children_system``, which the kernel adds to a parent when it reaps a child), so every
run's process and every Postgres backend counts although none is alive at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from bench.history_sampler import children_by_parent, descendants


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and every child they reaped."""
    try:
        root = psutil.Process(pid)
        members = [root, *descendants(pid, children_by_parent())]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def machine_cpu_seconds() -> dict[str, float]:
    """Core-seconds of the whole machine since boot: busy, idle (waiting for I/O
    included) and stolen by the hypervisor (a virtual machine's cores are shared)."""
    times = psutil.cpu_times()._asdict()
    idle = times.pop("idle") + times.pop("iowait", 0.0)
    steal = times.pop("steal", 0.0)
    for counted_in_user in ("guest", "guest_nice"):
        times.pop(counted_in_user, None)
    return {"machine_busy": sum(times.values()), "machine_idle": idle, "machine_steal": steal}


def own_cpu_seconds() -> float:
    """This process's own threads (the sampler among them), not its children."""
    times = os.times()
    return times.user + times.system


@dataclass
class CpuAccount:
    """Readings of each part at the start; ``spent()`` gives the core-seconds since."""

    parts: dict[str, int]  # name -> the pid at the root of its process tree

    def __post_init__(self) -> None:
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        reading = {name: tree_cpu_seconds(pid) for name, pid in self.parts.items()}
        reading["benchmark"] = own_cpu_seconds()
        reading.update(machine_cpu_seconds())
        return reading

    def spent(self) -> dict[str, float]:
        """Core-seconds since the start; ``other`` is the busy time no part accounts for."""
        end = self._read()
        spent = {name: round(end[name] - self._start[name], 1) for name in end}
        parts = sum(spent[name] for name in (*self.parts, "benchmark"))
        spent["other"] = round(spent["machine_busy"] - parts, 1)
        return spent
