"""``bench.history``'s CPU account credits a tree with the CPU of children that exited."""

from __future__ import annotations

import subprocess
import sys

from bench.history_cpu import CpuAccount

BURN = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
# A parent that starts two short-lived children one after the other, waits for each, and
# lives on until told to stop, as the code server does with its runs' processes.
PARENT = (
    "import subprocess, sys\n"
    "sys.stdin.readline()\n"
    f"for _ in range(2): subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
    "print('done', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_children_that_exited_count_for_their_parents_tree() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        account = CpuAccount({"parent": parent.pid})
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == b"done\n"
        spent = account.spent()
    finally:
        parent.communicate(b"")

    assert 1.1 <= spent["parent"] <= 3.0
    assert spent["machine_busy"] >= spent["parent"] - 0.2
    assert set(spent) >= {"benchmark", "machine_idle", "machine_steal", "other"}
