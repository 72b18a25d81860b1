"""Real ``dagster asset materialize`` processes side by side: the same month twice, and
runs waiting for a database pool slot (told why, and stoppable)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import pytest

from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.pool_wait import LONGEST_CLAIM_BACKOFF_SECONDS, sleep_while_claims_pend
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.tools.generate import write_month
from taxi_platform_tests.support.stack import (
    cli_stack,
    hold_staging_lock,
    materialize_command,
    wait_for_staging_lock_wait,
    wait_until,
)

JANUARY, FEBRUARY, MARCH = date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)


@pytest.fixture
def stack_of(
    postgres_server: EmbeddedPostgres,
    database_url: str,
    tmp_path: Path,
    mirror_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Opens the CLI stack (``cli_stack``) over the months written to the mirror folder."""
    return lambda: cli_stack(tmp_path, postgres_server, database_url, mirror_folder, monkeypatch)


def test_second_run_of_a_month_gives_way_to_the_first_naming_it(
    stack_of, database_url: str, mirror_folder: Path
) -> None:
    write_month(GREEN, JANUARY, 800, mirror_folder, seed=1)
    with stack_of() as stack:
        instance = dg.DagsterInstance.from_config(str(stack.home))
        with psycopg.connect(database_url, autocommit=True) as holder:
            # The first run waits inside its staging step, on the month's lock.
            hold_staging_lock(holder, GREEN, JANUARY)
            first = stack.spawn("first", materialize_command(JANUARY))
            wait_for_staging_lock_wait(
                holder, first, "the first run's staging step to wait for the month"
            )
            (first_run,) = instance.get_runs()

            second = stack.run_cli(materialize_command(JANUARY), timeout=240)

            assert second.returncode != 0
            output = second.stdout + second.stderr
            assert f"the month is being loaded by run {first_run.run_id}" in output
            assert "partition green 2019-01-01" in output
            assert "TypeError" not in output
        # The lock is released: the first run goes on and loads the month once.
        assert first.popen.wait(timeout=240) == 0, first.log_tail()
        statuses = {run.run_id: run.status for run in instance.get_runs()}
        assert statuses.pop(first_run.run_id) == dg.DagsterRunStatus.SUCCESS
        assert list(statuses.values()) == [dg.DagsterRunStatus.FAILURE]
        instance.dispose()
    with psycopg.connect(database_url) as connection:
        assert connection.execute("select count(*) from green_tripdata").fetchone()[0] == 800
        assert connection.execute(
            "select rows_staged, rows_inserted from taxi_platform.loaded_files"
        ).fetchall() == [(800, 800)]


def staging_waiters(connection: psycopg.Connection) -> int:
    return connection.execute(
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
        "and query ilike '%taxi_platform:staging%'"
    ).fetchone()[0]


@contextmanager
def month_held(database_url: str, month: date) -> Iterator[psycopg.Connection]:
    """The month's staging lock, held by the test: a run staging it waits, slot in hand."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute(
            "select pg_advisory_lock(hashtext(%s))",
            (f"taxi_platform:staging:{GREEN.month_table(month)}",),
        )
        yield holder


def cpu_share_while_waiting(pid: int, window_seconds: float) -> float:
    """The share of one core a process (with its children) used over a window of wall time.

    A measurement window, not a synchronisation: the run is already known to be waiting.
    """
    process = psutil.Process(pid)

    def cpu_seconds() -> float:
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            total += sum(child.cpu_times()[:2])
        return total

    started_cpu, started_wall = cpu_seconds(), time.monotonic()
    time.sleep(window_seconds)
    return (cpu_seconds() - started_cpu) / (time.monotonic() - started_wall)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_waiting_for_a_pool_slot_names_the_holders_and_stops_on_a_signal(
    signum: int, stack_of, database_url: str, mirror_folder: Path
) -> None:
    for seed, month in enumerate([JANUARY, FEBRUARY]):
        write_month(GREEN, month, 300, mirror_folder, seed=seed)
    with stack_of() as stack:
        instance_yaml = stack.home / "dagster.yaml"
        instance_yaml.write_text(
            re.sub(r"default_limit: \d+", "default_limit: 1", instance_yaml.read_text())
        )
        instance = dg.DagsterInstance.from_config(str(stack.home))
        with month_held(database_url, JANUARY) as holder:
            holding = stack.spawn("holding", materialize_command(JANUARY))
            wait_until(
                lambda: staging_waiters(holder),
                timeout=300,
                what="the first run to hold the only slot",
                watch=[holding],
            )
            (holding_run,) = instance.get_runs()
            # The run holding the slot is not waiting, and never says it is.
            assert "waits for a taxi_database pool slot" not in holding.log_tail(100_000)
            waiting = stack.spawn("waiting", materialize_command(FEBRUARY))
            blocked_line = wait_until(
                lambda: next(
                    (
                        line
                        for line in waiting.log_tail(100_000).splitlines()
                        if "waits for a taxi_database pool slot" in line
                    ),
                    None,
                ),
                timeout=300,
                what="the second run to say why it waits",
                watch=[waiting],
            )
            assert " - INFO - " in blocked_line
            assert f"run {holding_run.run_id} (postgres__green_tripdata_staging, STARTED)" in (
                blocked_line
            )
            # Waiting costs the machine nothing: Dagster 1.13.27's executor loop spun a core
            # for as long as a claim was pending (lib/pool_wait.sleep_while_claims_pend).
            busy = cpu_share_while_waiting(waiting.popen.pid, window_seconds=3.0)
            assert busy < 0.25, f"the waiting run used {busy:.0%} of a core"

            os.kill(waiting.popen.pid, signum)
            waiting.popen.wait(timeout=60)

            assert waiting.popen.returncode != 0
            waiting_run = next(r for r in instance.get_runs() if r.run_id != holding_run.run_id)
            assert waiting_run.status == dg.DagsterRunStatus.FAILURE
            info = instance.event_log_storage.get_concurrency_info("taxi_database")
            # Its claim is withdrawn; the holder's own (assigned) claim stays.
            assert waiting_run.run_id not in {step.run_id for step in info.pending_steps}
            assert [slot.run_id for slot in info.claimed_slots] == [holding_run.run_id]
            assert holding.popen.poll() is None, "the run holding the slot goes on"
        assert holding.popen.wait(timeout=240) == 0, holding.log_tail()
        instance.dispose()


def test_a_step_queued_long_behind_the_pool_still_tries_every_two_seconds() -> None:
    """A freed slot is assigned to the next waiting step at once and idles until that step
    tries again: after minutes of waiting Dagster's backoff had reached 15 s."""
    from dagster._core.execution.plan import instance_concurrency_context

    sleep_while_claims_pend()

    after_an_hour_of_attempts = instance_concurrency_context._calculate_timeout_interval(None, 1000)
    assert after_an_hour_of_attempts == LONGEST_CLAIM_BACKOFF_SECONDS == 2.0
    assert instance_concurrency_context._calculate_timeout_interval(None, 0) == 1
