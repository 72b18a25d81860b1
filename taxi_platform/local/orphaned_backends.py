"""The backends a killed postmaster leaves behind, found and ended so the server can start.

When the postmaster is killed (``kill -9``, the OOM killer), its backends are not: each
carries on with its statement and exits only when it next waits and notices the
postmaster gone. A backend busy with a long ``COPY`` or a check's scan runs on for as long
as the statement takes, still attached to the server's shared memory, and a new
postmaster refuses to start beside it ("pre-existing shared memory block ... is still in
use"). So the next run failed to start the embedded server until the last orphan had
finished its now pointless work, minutes for a big month.

Their work is lost anyway: crash recovery rolls back every transaction that had not
committed when the postmaster died, as it does after a power cut, and Postgres itself
ends every backend at once (``SIGQUIT``) when one of them crashes. Ending the orphans
with ``SIGKILL`` does the same, sooner.

A server's processes are recognised by their working directory, which every one of them
sets to its data directory, and by their name. Linux only (``/proc``); elsewhere none are
found and the start behaves as before.
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

PROC = Path("/proc")
SERVER_PROCESS_NAME = "postgres"
# The state of a live process that cannot be read (``_state``).
UNKNOWN_STATE = "?"


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid that ``postmaster.pid`` names, or None without a readable file."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def is_gone(pid: int) -> bool:
    """True when ``pid`` has exited: no such process, or a zombie (it has exited and let go
    of the shared memory; only its parent has not collected its status yet)."""
    return _state(pid) in (None, "Z")


def is_zombie(pid: int) -> bool:
    return _state(pid) == "Z"


def _state(pid: int) -> str | None:
    """The process's state letter (``/proc/PID/stat``), or None when there is no such
    process; ``UNKNOWN_STATE`` for a live process whose state cannot be read (no ``/proc``,
    or one that hides other users' processes)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None if PROC.is_dir() else _alive_or_none(pid)
    except OSError:
        return _alive_or_none(pid)
    return stat.rsplit(")", 1)[1].split()[0]


def _alive_or_none(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # someone else's, and alive
        pass
    return UNKNOWN_STATE


def server_processes(data_dir: Path) -> list[int]:
    """Live processes of a server of ``data_dir``: named ``postgres``, working in it."""
    target = data_dir.resolve()
    found = []
    for entry in PROC.glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() != SERVER_PROCESS_NAME:
                continue
            if Path(os.readlink(entry / "cwd")) != target:
                continue
        except OSError:  # exited meanwhile, or not ours to look at
            continue
        pid = int(entry.name)
        if not is_gone(pid):
            found.append(pid)
    return found


def clear_dead_server(data_dir: Path, timeout_seconds: float = 30.0) -> list[int]:
    """Clear what ``data_dir``'s killed postmaster left in a new server's way; the pids of
    the backends ended.

    Its backends get SIGKILL, and the start waits until they have exited. Its
    ``postmaster.pid`` goes if the postmaster is a zombie: that still holds its pid, and a
    new postmaster takes the file for the lock of a live server. Nothing is touched while
    the postmaster that the file names is alive: its processes are a running server's.
    """
    postmaster = postmaster_pid(data_dir)
    if postmaster is not None and not is_gone(postmaster):
        return []
    orphans = server_processes(data_dir)
    _kill_and_wait(orphans, timeout_seconds)
    if postmaster is not None and is_zombie(postmaster):
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
    return orphans


def _kill_and_wait(orphans: list[int], timeout_seconds: float) -> None:
    """SIGKILL each of ``orphans`` through a pidfd and wait until all have exited."""
    exits = select.poll()
    handles: list[int] = []
    try:
        for pid in orphans:
            try:
                handle = os.pidfd_open(pid)  # readable once the process has exited
            except ProcessLookupError:
                continue
            handles.append(handle)
            exits.register(handle, select.POLLIN)
            try:
                signal.pidfd_send_signal(handle, signal.SIGKILL)  # never a reused pid
            except ProcessLookupError:
                pass  # exited meanwhile: its descriptor is readable already
        deadline = time.monotonic() + timeout_seconds
        waiting = len(handles)
        while waiting:
            left_ms = max(0, round((deadline - time.monotonic()) * 1000))
            ready = exits.poll(left_ms)
            if not ready:
                left = [pid for pid in orphans if not is_gone(pid)]
                raise TimeoutError(f"processes {left} of the killed server did not exit")
            for handle, _ in ready:
                exits.unregister(handle)
                waiting -= 1
    finally:
        for handle in handles:
            os.close(handle)
