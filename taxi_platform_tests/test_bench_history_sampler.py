"""``bench.history``'s memory peaks belong to the run's own process, not to its pid.

Pids are reused within a full history (pid_max is 32,768 here), so a peak keyed by pid
alone credited a run with an earlier process's memory.
"""

from __future__ import annotations

import subprocess
import sys

import psutil

from bench.history_sampler import SPAWNED_PROCESS_FLAG, ProcessPeaks, Sampler


def test_a_reused_pid_keeps_each_process_peak_apart() -> None:
    peaks = ProcessPeaks()
    peaks.record(pid=4242, started_at=1_000.0, rss=470_000_000)  # an earlier process
    peaks.record(pid=4242, started_at=2_000.0, rss=330_000_000, helpers=9_000_000)  # the run's
    peaks.record(pid=4242, started_at=2_000.0, rss=310_000_000, helpers=1)  # lower, later

    assert peaks.peak(4242, started_after=1_900.0, started_before=2_001.0) == 330_000_000
    assert (
        peaks.peak_with_helpers(4242, started_after=1_900.0, started_before=2_001.0)[1] == 9_000_000
    )
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


RUN_PROCESS_TREE = """
import multiprocessing, subprocess, sys

HELPER = (
    "import sys; block = bytearray(60 * 1024 * 1024)\\n"
    "for i in range(0, len(block), 4096): block[i] = 1\\n"
    "print('held', flush=True); sys.stdin.read()"
)

def run(report):
    block = bytearray(200 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    helper.stdout.readline()
    report.send(helper.pid)
    report.recv()
    helper.communicate(b"")

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=run, args=(theirs,))
    process.start()
    helper_pid = ours.recv()
    print(process.pid, helper_pid, flush=True)
    sys.stdin.readline()
    ours.send("done")
    process.join()
"""


def test_a_run_counts_its_helpers_and_the_server_above_it_counts_only_itself(tmp_path) -> None:
    """The shape of the code server's tree: a server (a plain process) starts a run with
    multiprocessing's spawn, as Dagster's run launcher does, and the run starts a helper
    holding 60 MB of its own (the compute-log ``tail`` processes). The run's peak holds the
    helper's; the server's does not hold the run's (reading every run's page map for it
    was most of the sampler's cost)."""
    script = tmp_path / "server.py"
    script.write_text(RUN_PROCESS_TREE)
    server = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        run_pid, helper_pid = map(int, server.stdout.readline().split())
        started = {pid: psutil.Process(pid).create_time() for pid in (server.pid, run_pid)}
        helper_alone = psutil.Process(helper_pid).memory_full_info().uss
        sampler = Sampler(root_pid=psutil.Process().pid, landing=tmp_path)
        sampler.sample_once()
    finally:
        server.communicate(b"\n", timeout=60)

    def peak(pid: int) -> int:
        return sampler.peaks.peak(pid, started[pid] - 1, started[pid] + 1)

    assert helper_alone > 50 * 1024 * 1024
    assert peak(run_pid) >= 200 * 1024 * 1024 + helper_alone
    assert peak(server.pid) < 100 * 1024 * 1024
    # The peak says how much of it was the helpers'.
    helpers = sampler.peaks.peak_with_helpers(run_pid, started[run_pid] - 1, started[run_pid] + 1)[
        1
    ]
    assert helper_alone - 5 * 1024 * 1024 <= helpers < helper_alone + 20 * 1024 * 1024
    assert (
        sampler.peaks.peak_with_helpers(
            server.pid, started[server.pid] - 1, started[server.pid] + 1
        )[1]
        == 0
    )


RUN_WITH_A_CHILD_BEFORE_ITS_EXEC = """
import ctypes, os, signal, sys

# A child sharing the run's memory, as one started by subprocess (vfork) is until it
# execs: clone(CLONE_VM) running libc's pause() on a stack of its own, so that it stays
# in that state until it is killed instead of for a millisecond.
CLONE_VM = 0x100
libc = ctypes.CDLL(None, use_errno=True)
libc.clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
stack = ctypes.create_string_buffer(1 << 16)
stack_top = (ctypes.addressof(stack) + len(stack)) & ~15

block = bytearray(200 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
pause = ctypes.cast(libc.pause, ctypes.c_void_p)
child = libc.clone(pause, stack_top, CLONE_VM | signal.SIGCHLD, None)
assert child > 0, ctypes.get_errno()
print(child, flush=True)
sys.stdin.readline()
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
"""


def test_a_child_not_yet_execd_is_not_counted_as_a_helper(tmp_path) -> None:
    """A run's memory counted twice: a child between ``vfork`` and ``exec`` shares the
    run's pages, and its page map shows them as its own (the rare 470 MB peaks). The run
    here holds 200 MB; counting the child would add about as much again."""
    script = tmp_path / "run.py"
    script.write_text(RUN_WITH_A_CHILD_BEFORE_ITS_EXEC)
    run = subprocess.Popen(
        [sys.executable, str(script), SPAWNED_PROCESS_FLAG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        child_pid = int(run.stdout.readline())
        started = psutil.Process(run.pid).create_time()
        child_alone = psutil.Process(child_pid).memory_full_info().uss
        sampler = Sampler(root_pid=psutil.Process().pid, landing=tmp_path)
        sampler.sample_once()
    finally:
        run.communicate(b"\n", timeout=60)
    assert run.returncode == 0

    peak, helpers = sampler.peaks.peak_with_helpers(run.pid, started - 1, started + 1)
    assert child_alone > 150 * 1024 * 1024  # what counting it would have added
    assert peak >= 200 * 1024 * 1024
    assert helpers == 0
    assert peak < 200 * 1024 * 1024 + 100 * 1024 * 1024
