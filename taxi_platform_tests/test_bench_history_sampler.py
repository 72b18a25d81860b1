"""``bench.history``'s memory peaks belong to the run's own process, not to its pid.

Pids are reused within a full history (pid_max is 32,768 here), so a peak keyed by pid
alone credited a run with an earlier process's memory.
"""

from __future__ import annotations

import subprocess
import sys

import psutil

from bench.history_sampler import ProcessPeaks, Sampler


def test_a_reused_pid_keeps_each_process_peak_apart() -> None:
    peaks = ProcessPeaks()
    peaks.record(pid=4242, started_at=1_000.0, rss=470_000_000)  # an earlier process
    peaks.record(pid=4242, started_at=2_000.0, rss=330_000_000)  # the run's, same pid
    peaks.record(pid=4242, started_at=2_000.0, rss=310_000_000)  # a lower sample later

    assert peaks.peak(4242, started_after=1_900.0, started_before=2_001.0) == 330_000_000
    assert peaks.peak(4242, started_after=900.0, started_before=1_001.0) == 470_000_000
    assert peaks.peak(4242, started_after=2_500.0, started_before=3_000.0) is None
    assert peaks.peak(4343, started_after=0.0, started_before=3_000.0) is None


def test_the_sampler_records_a_child_under_its_real_start_time(tmp_path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        started = psutil.Process(child.pid).create_time()
        sampler = Sampler(root_pid=psutil.Process().pid, landing=tmp_path)
        sampler.sample_once()
    finally:
        child.communicate(b"")

    peak = sampler.peaks.peak(child.pid, started - 1, started + 1)
    assert peak is not None and peak > 1_000_000


def test_a_peak_between_two_samples_is_not_missed(tmp_path) -> None:
    """The child touches 200 MB, lets it go, and only then is sampled."""
    script = (
        "import sys\n"
        "block = bytearray(200 * 1024 * 1024)\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"
        "del block\n"
        "print('released', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout.readline() == b"released\n"
        started = psutil.Process(child.pid).create_time()
        resident_now = psutil.Process(child.pid).memory_info().rss
        sampler = Sampler(root_pid=psutil.Process().pid, landing=tmp_path)
        sampler.sample_once()
    finally:
        child.communicate(b"")

    assert resident_now < 100 * 1024 * 1024
    assert sampler.peaks.peak(child.pid, started - 1, started + 1) >= 200 * 1024 * 1024
