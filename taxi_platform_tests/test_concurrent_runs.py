"""Two real ``dagster asset materialize`` processes loading the same month at once."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from taxi_platform.lib.catalog import GREEN
from taxi_platform.lib.months import partition_key
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.tools.generate import write_month
from taxi_platform_tests.support.http_faults import FaultyMirror
from taxi_platform_tests.support.stack import (
    dagster_stack,
    dagster_storage_url,
    fresh_database,
    wait_until,
)

JANUARY = date(2019, 1, 1)
BIN_DIR = Path(sys.executable).parent


def materialize_command(month: date) -> list[str]:
    return [
        str(BIN_DIR / "dagster"),
        "asset",
        "materialize",
        "-m",
        "taxi_platform.definitions",
        "--select",
        "*postgres/green_tripdata",
        "--partition",
        partition_key(month),
    ]


def test_second_run_of_a_month_gives_way_to_the_first_naming_it(
    postgres_server: EmbeddedPostgres,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mirror_folder = tmp_path / "mirror"
    write_month(GREEN, JANUARY, 800, mirror_folder, seed=1)
    with (
        FaultyMirror(mirror_folder) as mirror,
        fresh_database(postgres_server, prefix="dag") as storage_url,
    ):
        env = {
            "TAXI_HOME": str(tmp_path / "taxi_home"),
            "TAXI_DATABASE_URL": database_url,
            "DAGSTER_POSTGRES_URL": dagster_storage_url(storage_url),
            "TAXI_SOURCE_URL": mirror.base_url,
        }
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", env["DAGSTER_POSTGRES_URL"])
        with dagster_stack(tmp_path / "stack", env) as stack:
            instance = dg.DagsterInstance.from_config(str(stack.home))
            with psycopg.connect(database_url, autocommit=True) as holder:
                # The first run waits inside its staging step, on the month's lock.
                holder.execute(
                    "select pg_advisory_lock(hashtext(%s))",
                    (f"taxi_platform:staging:{GREEN.month_table(JANUARY)}",),
                )
                first = stack.spawn("first", materialize_command(JANUARY))
                wait_until(
                    lambda: holder.execute(
                        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                        "and query ilike '%taxi_platform:staging%'"
                    ).fetchone()[0],
                    timeout=120,
                    what="the first run's staging step to wait for the month",
                    watch=[first],
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
