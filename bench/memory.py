"""The memory a run takes, read from the process table."""

from __future__ import annotations

import psutil


def tree_memory_bytes(process: psutil.Process) -> int:
    """The process's resident set plus what each of its descendants holds alone (USS).

    Summing every member's RSS counts a page shared by a parent and its forked child once
    per process: a child caught between ``fork`` and ``exec`` looks as large as the run
    itself. A run forks often: Dagster's compute-log capture starts a ``tail`` and a
    watcher for each step's stdout and stderr (``subprocess.Popen`` in
    ``execute_posix_tail``), four processes a step, which summed RSS counted in full.
    Over the whole history (``bench.history --scale 1.0``, two runs): 386-390 MB a run by
    summed RSS, 305-306 MB by this measure. A descendant's unique set is what it adds to
    the machine's memory. Rare single samples far above a run's usual figure remain under
    both measures (one run of 62 at 472 MB in a ``--scale 0.05`` run) and are not
    explained.
    """
    try:
        total = process.memory_info().rss
        descendants = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for child in descendants:
        try:
            total += child.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total
