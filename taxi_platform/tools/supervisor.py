"""``taxi-platform up`` and ``down``: run the local platform, and stop every piece of it.

``up`` starts detached servers (the embedded Postgres, fake-gcs-server) that would outlive
a plain ``exec`` of ``dg dev``, and ``dg dev``'s own children (webserver, daemon, code
server, run workers) do not always exit on one SIGTERM. So ``up`` supervises: ``dg dev``
runs in a process group of its own, a signal to ``up`` (Ctrl-C, SIGTERM, SIGHUP) is
forwarded to it, whatever of its process tree is still alive after a grace period is
killed, and the servers ``up`` started are stopped, always, in a ``finally``.

A state file (``$TAXI_HOME/platform.json``) names the supervisor and ``dg dev``, so
``taxi-platform down`` can stop a platform left running, even one whose supervisor was
killed outright.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from taxi_platform.local.embedded_postgres import taxi_home

# Dagster's own shutdown takes about 3 s; with Postgres and fake-gcs-server after it the
# whole stop stays within 10 s.
DAGSTER_GRACE_SECONDS = 6.0
ORPHAN_GRACE_SECONDS = 1.0
KILL_WAIT_SECONDS = 2.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(Exception):
    """A stop signal reached the supervisor."""


@dataclass
class PlatformState:
    """What ``down`` needs to find a running platform."""

    supervisor_pid: int
    dagster_pid: int


def state_file() -> Path:
    return taxi_home() / "platform.json"


def write_state(state: PlatformState) -> None:
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_text(json.dumps(asdict(state)))


def read_state() -> PlatformState | None:
    try:
        return PlatformState(**json.loads(state_file().read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def runs(pid: int, marker: bytes) -> bool:
    """True when ``pid`` is alive and its command line holds ``marker`` (pids get reused)."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes() and is_alive(pid)
    except OSError:
        return False


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants, read from /proc (parents first)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent_pid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[parent_pid].append(int(entry.name))
    tree, pending = [], [root_pid]
    while pending:
        pid = pending.pop(0)
        if is_alive(pid):
            tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def _signal(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: Sequence[int], seconds: float, reap: subprocess.Popen | None) -> list[int]:
    """Poll until every pid is gone or the time is up; returns those still alive."""
    deadline = time.monotonic() + seconds
    while True:
        if reap is not None:
            reap.poll()  # a dead direct child stays a zombie until reaped
        alive = [pid for pid in pids if is_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)  # polling process exit, bounded by the deadline


def stop_process_tree(
    root_pid: int, grace_seconds: float, popen: subprocess.Popen | None = None
) -> int:
    """SIGINT to the root, as Ctrl-C gives ``dg dev``; then end what it left behind.

    ``dg dev`` shuts its webserver, daemon and their code servers down in order when it
    alone is interrupted (a signal to every process at once makes them race and hang).
    The tree is read before signalling: once a parent exits, its children belong to init
    and can no longer be found from it. Returns how many processes had to be killed.
    """
    tree = process_tree(root_pid)
    if not tree:
        return 0
    _signal([root_pid], signal.SIGINT)
    _wait_gone([root_pid], grace_seconds, popen)
    # What outlives dg dev are orphans (code servers wait for a heartbeat that will not
    # come): asked to go, then killed.
    survivors = [pid for pid in [*tree, *process_tree(root_pid)] if is_alive(pid)]
    _signal(survivors, signal.SIGTERM)
    survivors = _wait_gone(survivors, ORPHAN_GRACE_SECONDS, popen)
    _signal(survivors, signal.SIGKILL)
    _wait_gone(survivors, KILL_WAIT_SECONDS, popen)
    return len(survivors)


def _raise_stop(signum: int, _frame: object) -> None:
    raise StopRequested(signal.Signals(signum).name)


def supervise(
    command: list[str], env: dict[str, str], cwd: Path, stop_servers: Callable[[], list[str]]
) -> int:
    """Run ``command`` until it exits or a stop signal arrives; then stop everything.

    ``stop_servers`` stops what ``up`` started besides ``command`` and returns their names,
    printed in the closing line so the user knows nothing is left behind.
    """
    previous = {signum: signal.signal(signum, _raise_stop) for signum in STOP_SIGNALS}
    process: subprocess.Popen | None = None
    return_code = 0
    try:
        sys.stdout.flush()  # our lines before the child's
        process = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)
        write_state(PlatformState(supervisor_pid=os.getpid(), dagster_pid=process.pid))
        return_code = process.wait()
    except StopRequested as stop:
        print(f"\n{stop}: stopping the platform...", flush=True)
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stopping_since = time.monotonic()
        stopped = []
        if process is not None:
            killed = stop_process_tree(process.pid, DAGSTER_GRACE_SECONDS, process)
            stopped.append("Dagster UI and daemon" + (f" ({killed} killed)" if killed else ""))
        stopped += stop_servers()
        state_file().unlink(missing_ok=True)
        print(
            f"stopped in {time.monotonic() - stopping_since:.1f} s: {', '.join(stopped)}",
            flush=True,
        )
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return return_code


def stop_running_platform(timeout_seconds: float = 30.0) -> list[str]:
    """``down``: stop the ``up`` that runs (it cleans up), or what a dead one left behind."""
    state = read_state()
    if state is None:
        return []
    stopped = []
    if runs(state.supervisor_pid, b"taxi-platform"):
        os.kill(state.supervisor_pid, signal.SIGTERM)
        if not _wait_gone([state.supervisor_pid], timeout_seconds, None):
            stopped.append(f"taxi-platform up (pid {state.supervisor_pid})")
    if runs(state.dagster_pid, b"dev"):
        stop_process_tree(state.dagster_pid, DAGSTER_GRACE_SECONDS)
        stopped.append("Dagster UI and daemon")
    state_file().unlink(missing_ok=True)
    return stopped
