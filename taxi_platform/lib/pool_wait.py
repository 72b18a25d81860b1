"""A run waiting for a database pool slot says who holds the slots, and can be stopped.

Dagster 1.13.27 reports a step blocked by a pool at DEBUG only ("Step blocked by limit for
pool taxi_database", again every 5 minutes) and never says which runs hold the slots, so a
run stuck behind dead runs looked idle. And a blocked ``dagster asset materialize``
ignored SIGINT and SIGTERM: the run captures interrupts for its whole length
(``capture_interrupts``) and raises them only inside a step (``raise_execution_interrupts``);
the executor's wait between steps (``ActiveExecution.get_next_step`` and
``sleep_til_ready``, also where a step retry's delay is spent) never looks at them.

``SlotWaitWatcher`` fixes both for the run whose resources it is started with: a thread
that polls the pool and logs, at INFO, the runs holding every slot while one of this run's
steps waits; and, once Dagster has captured a SIGINT or SIGTERM while the run's thread is
in that wait, raises ``KeyboardInterrupt`` there (Dagster then fails the run as
interrupted and frees its pending claims). Anywhere else the interrupt is left to Dagster,
which raises it at the next step as before.

``sleep_while_claims_pend`` makes that wait cost nothing, and a freed slot taken within
two seconds.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import dagster as dg

# Dagster's own record of a SIGINT/SIGTERM captured during the run (private in 1.13.27, the
# pinned version; the public alternative would be replacing signal handlers, which Dagster
# resets around every piece of user code, resource setup included).
from dagster._utils.interrupts import check_captured_interrupt

DATABASE_POOL = "taxi_database"

# Where the in-process executor's loop spends a wait between steps (in ``time.sleep`` inside
# ``sleep_til_ready`` once ``sleep_while_claims_pend`` is applied), so a signal lands in one
# of these almost every time.
_WAIT_FUNCTIONS = frozenset({"sleep_til_ready", "get_next_step"})

# The longest the executor sleeps between two looks at its pending claims: a signal caught
# meanwhile is raised when the sleep ends (``SlotWaitWatcher``), so this bounds how long
# Ctrl-C takes to stop a waiting run.
LONGEST_CLAIM_SLEEP_SECONDS = 1.0

# The longest a waiting step lets pass between two attempts at its slot. Dagster backs off
# to 15 s; but a freed slot is assigned to the next waiting step at once and stays unused
# until that step tries again, so in a long backfill (the steps queued behind the pool for
# minutes) every hand-off could leave a slot idle for up to 15 s. An attempt is a query or
# two on the instance's database.
LONGEST_CLAIM_BACKOFF_SECONDS = 2.0


def sleep_while_claims_pend() -> None:
    """Make a run waiting for a pool slot sleep instead of spinning a core.

    Dagster 1.13.27's executor loop sleeps for ``interval_to_next_pending_claim_check``
    between two attempts at a pool slot, and that returns ``min(0, ...)``: never more than
    0, so the loop never sleeps (dagster-io/dagster#20367 described it and was closed
    unmerged). Measured: a run waiting for a ``taxi_database`` slot used 99% of a core
    (``test_concurrent_runs.py``). In a backfill every run queued behind the pool burned
    a core for as long as it waited, on a 2-core machine beside the steps holding the
    slots. The corrected interval is the time until the earliest pending claim may be
    tried again (Dagster's own backoff, here 1 to ``LONGEST_CLAIM_BACKOFF_SECONDS``), at
    most ``LONGEST_CLAIM_SLEEP_SECONDS``. Applied once per process, when the definitions
    load (``defs/executor.py``).
    """
    # The one private Dagster module the package imports (test_dg_project.py names it).
    import dagster._core.execution.plan.instance_concurrency_context as instance_concurrency_context

    InstanceConcurrencyContext = instance_concurrency_context.InstanceConcurrencyContext
    # Read by Dagster's backoff (``_calculate_timeout_interval``) at every failed attempt.
    instance_concurrency_context.MAX_CONCURRENCY_CLAIM_BLOCKED_INTERVAL = (
        LONGEST_CLAIM_BACKOFF_SECONDS
    )
    if getattr(InstanceConcurrencyContext.interval_to_next_pending_claim_check, "sleeps", False):
        return

    def interval_to_next_pending_claim_check(self) -> float:
        if not self._pending_claims:
            return 0.0
        now = time.time()
        earliest = min((ready_at - now for ready_at in self._pending_timeouts.values()), default=0)
        return min(LONGEST_CLAIM_SLEEP_SECONDS, max(0.0, earliest))

    interval_to_next_pending_claim_check.sleeps = True
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = (
        interval_to_next_pending_claim_check
    )


class SlotWaitWatcher:
    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        log: Callable[[str], None],
        pool: str = DATABASE_POOL,
        poll_seconds: float = 1.0,
        repeat_seconds: float = 300.0,
    ) -> None:
        self.instance, self.run_id, self.log, self.pool = instance, run_id, log, pool
        self.poll_seconds, self.repeat_seconds = poll_seconds, repeat_seconds
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._main_thread_id = threading.main_thread().ident

    def start(self) -> SlotWaitWatcher:
        if not self.instance.event_log_storage.supports_global_concurrency_limits:
            return self
        self._thread = threading.Thread(target=self._watch, name="slot-wait-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        announced_at = 0.0
        while not self._stopped.wait(self.poll_seconds):
            if check_captured_interrupt() and _in_wait(self._main_frame()):
                self._interrupt_main_thread()
                return
            try:
                info = self.instance.event_log_storage.get_concurrency_info(self.pool)
            except Exception:  # the storage may be briefly unreachable; try on the next poll
                continue
            # A pending step with an assigned time has its slot: it is running, not waiting.
            waiting = [
                step
                for step in info.pending_steps
                if step.run_id == self.run_id and step.assigned_timestamp is None
            ]
            if waiting and time.monotonic() - announced_at > self.repeat_seconds:
                announced_at = time.monotonic()
                self.log(self._blocked_message(waiting[0].step_key, info))
            elif not waiting:
                announced_at = 0.0

    def _main_frame(self) -> FrameType | None:
        return sys._current_frames().get(self._main_thread_id)

    def _interrupt_main_thread(self) -> None:
        """Raise KeyboardInterrupt in the run's thread, as Dagster would inside a step."""
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self._main_thread_id), ctypes.py_object(KeyboardInterrupt)
        )

    def _blocked_message(self, step_key: str, info) -> str:
        holders = []
        for slot in info.claimed_slots:
            run = self.instance.get_run_by_id(slot.run_id)
            status = run.status.value if run is not None else "unknown run"
            holders.append(f"run {slot.run_id} ({slot.step_key}, {status})")
        return (
            f"{step_key} waits for a {self.pool} pool slot: all {info.slot_count} are held, "
            f"by {', '.join(holders) or 'no run (being freed)'}. It starts when one is freed; "
            "a run whose process died is failed and its slots freed by the dead_run_reaper "
            "sensor or the next run that uses the database. Ctrl-C (or SIGTERM) stops this run."
        )


def _in_wait(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name in _WAIT_FUNCTIONS:
            return True
        frame = frame.f_back
    return False
