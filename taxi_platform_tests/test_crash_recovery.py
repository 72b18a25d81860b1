"""Crashes and kills with real processes: no month recorded without its rows, no run blocked.

Each test has an embedded server of its own, since it kills it (``kill -9`` of the
postmaster, as a power cut or the OOM killer would), or real ``dagster asset materialize``
processes that it kills with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from taxi_platform.defs.trips.sensors import dead_run_reaper
from taxi_platform.lib.asset_keys import PARTITION_ROW_COUNT
from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.months import partition_key
from taxi_platform.local import orphaned_backends
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.generate import write_month
from taxi_platform_tests.support.http_faults import FaultyMirror
from taxi_platform_tests.support.run_results import metadata
from taxi_platform_tests.support.stack import (
    BIN_DIR,
    cli_stack,
    fresh_database,
    hold_staging_lock,
    materialize_command,
    wait_for_staging_lock_wait,
    wait_until,
)
from taxi_platform_tests.test_postgres_etl import assets_of, final_count, load, merge_alone

JANUARY, FEBRUARY, MARCH = date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)


@pytest.fixture
def own_server(scratch_root: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(
        server_dir=scratch_root / f"crash_{free_port()}", port=free_port()
    ).start()
    yield server
    server.stop()


@pytest.fixture
def own_database_url(own_server: EmbeddedPostgres) -> Iterator[str]:
    with fresh_database(own_server, prefix="crash") as url:
        yield url


@pytest.fixture
def crash_resources(own_database_url: str, tmp_path: Path) -> Iterator[dict]:
    from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource

    mirror_folder = tmp_path / "mirror"
    mirror_folder.mkdir()
    with FaultyMirror(mirror_folder) as mirror:
        yield {
            "mirror_folder": mirror_folder,
            "resources": {
                "trip_source": TripFileSource(
                    base_url=mirror.base_url, backoff_seconds=0.01, max_attempts=3
                ),
                "landing": LandingArea(root=str(tmp_path / "landing")),
                "postgres": PostgresResource(url=own_database_url),
            },
        }


def kill_postmaster(server: EmbeddedPostgres) -> None:
    """SIGKILL the postmaster, then wait for its backends to notice and exit."""
    postmaster = orphaned_backends.postmaster_pid(server.data_dir)
    children = [
        stat.parent.name
        for stat in Path("/proc").glob("[0-9]*/stat")
        if _parent_pid(stat) == postmaster
    ]
    os.kill(postmaster, signal.SIGKILL)
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in [postmaster, *children]),
        timeout=30,
        what="the killed server's processes to exit",
    )


def _parent_pid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def ledger_rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as connection:
        exists = connection.execute(
            "select to_regclass('taxi_platform.loaded_files') is not null"
        ).fetchone()[0]
        if not exists:
            return []
        return connection.execute(
            "select filename, rows_staged, rows_inserted from taxi_platform.loaded_files"
        ).fetchall()


def test_crash_between_staging_and_merge_never_records_the_month_as_merged(
    own_server: EmbeddedPostgres, own_database_url: str, crash_resources: dict
) -> None:
    resources = crash_resources["resources"]
    write_month(GREEN, JANUARY, 2000, crash_resources["mirror_folder"], seed=1)
    staged = dg.materialize(
        assets_of(GREEN),
        selection=["raw/green_tripdata_csv", "postgres/green_tripdata_staging"],
        partition_key=partition_key(JANUARY),
        resources=resources,
    )
    assert metadata(staged, "postgres/green_tripdata_staging")[PARTITION_ROW_COUNT] == 2000

    kill_postmaster(own_server)
    own_server.start()

    # The staged month is a file beside the landed one, not an unlogged table that crash
    # recovery empties: the merge alone loads every row of it.
    merged = merge_alone(GREEN, JANUARY, resources)
    assert metadata(merged, "postgres/green_tripdata")["rows_inserted"] == 2000
    assert final_count(own_database_url, GREEN) == 2000
    assert ledger_rows(own_database_url) == [("green_tripdata_2019-01.csv", 2000, 2000)]

    rerun = load(GREEN, JANUARY, resources)
    assert metadata(rerun, "postgres/green_tripdata")["rows_inserted"] == 0
    assert final_count(own_database_url, GREEN) == 2000


def test_crash_during_the_merge_leaves_the_table_as_it_was_and_the_next_run_loads_it(
    own_server: EmbeddedPostgres, own_database_url: str, crash_resources: dict
) -> None:
    import threading

    resources = crash_resources["resources"]
    write_month(GREEN, JANUARY, 1000, crash_resources["mirror_folder"], seed=1)
    load(GREEN, JANUARY, resources)
    write_month(GREEN, FEBRUARY, 3000, crash_resources["mirror_folder"], seed=2)

    outcome: dict = {}
    holder = psycopg.connect(own_database_url, autocommit=True)
    holder.execute("select pg_advisory_lock(hashtext('taxi_platform:merge:public.green_tripdata'))")
    runner = threading.Thread(
        target=lambda: outcome.update(result=load(GREEN, FEBRUARY, resources, raise_on_error=False))
    )
    runner.start()
    with psycopg.connect(own_database_url, autocommit=True) as watcher:
        wait_until(
            lambda: watcher.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                "and query ilike '%taxi_platform:merge%'"
            ).fetchone()[0],
            timeout=60,
            what="the merge to wait inside its transaction",
        )
    kill_postmaster(own_server)
    runner.join(timeout=120)
    holder.close()
    assert not outcome["result"].success

    own_server.start()
    assert final_count(own_database_url, GREEN) == 1000
    again = load(GREEN, FEBRUARY, resources)
    assert metadata(again, "postgres/green_tripdata")["rows_inserted"] == 3000
    assert final_count(own_database_url, GREEN) == 4000
    ledger = {name: (staged, inserted) for name, staged, inserted in ledger_rows(own_database_url)}
    assert ledger["green_tripdata_2019-02.csv"] == (3000, 3000)


def _limit_pool_to_one(home: Path) -> None:
    instance_yaml = home / "dagster.yaml"
    text = instance_yaml.read_text()
    assert re.search(r"default_limit: \d+", text)
    instance_yaml.write_text(re.sub(r"default_limit: \d+", "default_limit: 1", text))


def _kill_while_staging(stack, database_url: str, month: date) -> None:
    """Start a run of ``month`` and SIGKILL it while its staging step holds the pool slot
    (it waits on the month's staging lock, which the test holds)."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        staging_lock = f"taxi_platform:staging:{GREEN.month_table(month)}"
        holder.execute("select pg_advisory_lock(hashtext(%s))", (staging_lock,))
        victim = stack.spawn(f"victim_{month}", materialize_command(month))
        wait_until(
            lambda: holder.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                "and query ilike '%taxi_platform:staging%'"
            ).fetchone()[0],
            timeout=120,
            what="the run's staging step to hold its slot",
            watch=[victim],
        )
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait(timeout=30)


def _runs_by_partition(instance: dg.DagsterInstance) -> dict[str, str]:
    return {run.tags.get("dagster/partition", ""): run.status.value for run in instance.get_runs()}


def test_a_killed_run_does_not_keep_its_database_slot(
    postgres_server: EmbeddedPostgres,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mirror_folder = tmp_path / "mirror"
    mirror_folder.mkdir()
    for seed, (month, rows) in enumerate([(JANUARY, 500), (FEBRUARY, 600), (MARCH, 700)]):
        write_month(GREEN, month, rows, mirror_folder, seed=seed)
    with cli_stack(tmp_path, postgres_server, database_url, mirror_folder, monkeypatch) as stack:
        _limit_pool_to_one(stack.home)
        instance = dg.DagsterInstance.from_config(str(stack.home))

        # Killed, then found by the sensor (the daemon's way, with no new run coming).
        _kill_while_staging(stack, database_url, JANUARY)
        assert _runs_by_partition(instance) == {"2019-01-01": "STARTED"}
        assert instance.event_log_storage.get_concurrency_run_ids()
        evaluation = dead_run_reaper(dg.build_sensor_context(instance=instance))
        assert "marked 1 dead run(s) failed" in str(evaluation.skip_message)
        assert _runs_by_partition(instance) == {"2019-01-01": "FAILURE"}
        assert not instance.event_log_storage.get_concurrency_run_ids()
        failed = instance.get_runs()[0]
        failure = instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "is gone" in failure[-1].dagster_event.message

        # Killed, then found by the next run that needs the database, with no daemon.
        _kill_while_staging(stack, database_url, FEBRUARY)
        survivor = stack.run_cli(materialize_command(MARCH), timeout=240)
        assert survivor.returncode == 0, survivor.stdout[-3000:] + survivor.stderr[-3000:]
        # The survivor says which run it found dead (Dagster prints run events to stderr).
        assert "process (pid" in survivor.stderr and "is gone" in survivor.stderr
        assert _runs_by_partition(instance) == {
            "2019-01-01": "FAILURE",
            "2019-02-01": "FAILURE",
            "2019-03-01": "SUCCESS",
        }
        instance.dispose()
    with psycopg.connect(database_url) as connection:
        assert connection.execute("select count(*) from green_tripdata").fetchone()[0] == 700


def _db_start(server: EmbeddedPostgres) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN_DIR / "taxi-platform"), "db", "start"],
        env={
            **os.environ,
            "TAXI_POSTGRES_DIR": str(server.server_dir),
            "TAXI_POSTGRES_PORT": str(server.port),
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_first_db_start_after_a_kill_recovers_and_says_what_it_did(
    own_server: EmbeddedPostgres, own_database_url: str
) -> None:
    with psycopg.connect(own_database_url, autocommit=True) as connection:
        connection.execute("create table kept (id int)")
        connection.execute("insert into kept values (1), (2)")
    kill_postmaster(own_server)

    started = _db_start(own_server)

    assert started.returncode == 0, started.stdout + started.stderr
    assert "had not been shut down cleanly" in started.stdout
    assert "bug #17731" not in started.stdout
    with psycopg.connect(own_database_url) as connection:
        assert connection.execute("select count(*) from kept").fetchone()[0] == 2


def test_db_start_right_after_a_kill_ends_a_statement_the_dead_server_left_running(
    own_server: EmbeddedPostgres, own_database_url: str
) -> None:
    """A backend busy with a long statement outlives its killed postmaster and keeps the
    shared memory, so a new server would not start until the statement ended (minutes
    for a big month's COPY): ``db start`` ends it instead, at once."""
    with psycopg.connect(own_database_url, autocommit=True) as connection:
        connection.execute("create table kept (id int)")
        connection.execute("insert into kept values (1), (2)")
    busy = psycopg.connect(own_database_url, autocommit=True)
    busy_pid = busy.info.backend_pid
    # Minutes of work that never waits, so it never looks whether its postmaster lives.
    endless = threading.Thread(
        target=_ignoring_a_lost_connection,
        args=(
            busy,
            "select count(*) from generate_series(1, 100000) as a, generate_series(1, 100000) as b",
        ),
    )
    endless.start()
    try:
        with psycopg.connect(own_database_url, autocommit=True) as watcher:
            wait_until(
                lambda: watcher.execute(
                    "select state = 'active' from pg_stat_activity where pid = %s", (busy_pid,)
                ).fetchone()[0],
                timeout=30,
                what="the endless statement to run",
            )
        os.kill(orphaned_backends.postmaster_pid(own_server.data_dir), signal.SIGKILL)

        started = _db_start(own_server)

        assert started.returncode == 0, started.stdout + started.stderr
        assert "left 1 of its processes running" in started.stdout
        assert orphaned_backends.is_gone(busy_pid)
        with psycopg.connect(own_database_url) as connection:
            assert connection.execute("select count(*) from kept").fetchone()[0] == 2
    finally:
        if not orphaned_backends.is_gone(busy_pid):
            os.kill(busy_pid, signal.SIGKILL)
        endless.join(timeout=30)
        busy.close()


def _ignoring_a_lost_connection(connection: psycopg.Connection, statement: str) -> None:
    try:
        connection.execute(statement)
    except psycopg.OperationalError:
        pass


def test_db_start_gets_past_the_unlogged_table_recovery_bug_on_the_first_try(
    own_server: EmbeddedPostgres, own_database_url: str
) -> None:
    """PostgreSQL bug #17731: recovery meets a main fork whose init fork is missing and
    comes back during redo. We make that state exactly (the init fork of a staging-like
    table created since the last checkpoint, removed while the server is down), so the
    first recovery fails as in the issue, and ``db start`` must still succeed."""
    with psycopg.connect(own_database_url, autocommit=True) as connection:
        connection.execute("create unlogged table staged (line text)")
        connection.execute("insert into staged select 'row' from generate_series(1, 1000)")
        connection.execute("create table kept (id int)")
        connection.execute("insert into kept values (1), (2)")
        main_fork = connection.execute("select pg_relation_filepath('staged')").fetchone()[0]
    kill_postmaster(own_server)
    (own_server.data_dir / f"{main_fork}_init").unlink()
    log_before = own_server.log_file.stat().st_size

    started = _db_start(own_server)

    assert started.returncode == 0, started.stdout + started.stderr
    assert "Traceback" not in started.stderr
    new_log = own_server.log_file.read_bytes()[log_before:].decode(errors="replace")
    assert 'could not create file "' in new_log and "File exists" in new_log
    assert "PostgreSQL bug #17731" in started.stdout and "started again" in started.stdout
    with psycopg.connect(own_database_url) as connection:
        assert connection.execute("select count(*) from kept").fetchone()[0] == 2
        assert connection.execute("select count(*) from staged").fetchone()[0] == 0


def test_database_that_goes_away_with_dagsters_storage_still_tells_the_user(
    own_server: EmbeddedPostgres,
    own_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mirror_folder = tmp_path / "mirror"
    write_month(GREEN, JANUARY, 500, mirror_folder, seed=1)
    with cli_stack(tmp_path, own_server, own_database_url, mirror_folder, monkeypatch) as stack:
        holder = psycopg.connect(own_database_url, autocommit=True)
        hold_staging_lock(holder, GREEN, JANUARY)
        victim = stack.spawn("victim", materialize_command(JANUARY))
        wait_for_staging_lock_wait(
            holder, victim, "the run's staging step to wait inside the database"
        )
        kill_postmaster(own_server)
        holder.close()
        victim.popen.wait(timeout=180)

        output = victim.log_tail(200_000)
        expected = (
            "green_tripdata_2019-01.csv (partition green 2019-01-01): the database went "
            "away during staging"
        )
        assert expected in output

        own_server.start()
        instance = dg.DagsterInstance.from_config(str(stack.home))
        (run,) = instance.get_runs()
        if run.status == dg.DagsterRunStatus.STARTED:
            dead_run_reaper(dg.build_sensor_context(instance=instance))
        run = instance.get_run_by_id(run.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert expected in failure[-1].dagster_event.message
        instance.dispose()
    assert final_count(own_database_url, GREEN) == 0
