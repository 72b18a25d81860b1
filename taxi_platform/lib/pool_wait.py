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
steps waits; and signal handlers that raise ``KeyboardInterrupt`` when the signal lands in
that wait (Dagster then fails the run as interrupted and frees its pending claims). A signal
arriving anywhere else in the orchestration is handed to Dagster as before, and re-sent
while the run is still waiting, so that it takes effect at the next wait.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import dagster as dg

DATABASE_POOL = "taxi_database"

# Where the in-process executor's loop spends a wait between steps. It spins rather than
# sleeps while a claim is pending (1.13.27's ``interval_to_next_pending_claim_check``
# returns at most 0), so a signal lands in one of these almost every time.
_WAIT_FUNCTIONS = frozenset({"sleep_til_ready", "get_next_step"})
_INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SlotWaitWatcher:
    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        log: Callable[[str], None],
        pool: str = DATABASE_POOL,
        poll_seconds: float = 2.0,
        repeat_seconds: float = 300.0,
    ) -> None:
        self.instance, self.run_id, self.log, self.pool = instance, run_id, log, pool
        self.poll_seconds, self.repeat_seconds = poll_seconds, repeat_seconds
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_handlers: dict[int, object] = {}
        self._unhandled_signal: int | None = None

    def start(self) -> SlotWaitWatcher:
        if not self.instance.event_log_storage.supports_global_concurrency_limits:
            return self
        if threading.current_thread() is threading.main_thread():
            for signum in _INTERRUPT_SIGNALS:
                self._previous_handlers[signum] = signal.getsignal(signum)
                signal.signal(signum, self._on_signal)
        self._thread = threading.Thread(target=self._watch, name="slot-wait-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)
        self._previous_handlers.clear()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)  # Dagster's: remembers the interrupt for the next step
        if _in_wait(frame):
            self._unhandled_signal = None
            raise KeyboardInterrupt(
                f"{signal.Signals(signum).name} while waiting between steps (for a "
                f"{self.pool} slot or a retry)"
            )
        self._unhandled_signal = signum

    def _watch(self) -> None:
        announced_at = 0.0
        while not self._stopped.wait(self.poll_seconds):
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
            if waiting and self._unhandled_signal is not None:
                os.kill(os.getpid(), self._unhandled_signal)
            if waiting and time.monotonic() - announced_at > self.repeat_seconds:
                announced_at = time.monotonic()
                self.log(self._blocked_message(waiting[0].step_key, info))
            elif not waiting:
                announced_at = 0.0

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
