"""The platform as a user runs it, for the history benchmark: mirror, code server,
webserver and daemon, with the repository's ``dagster.yaml`` (its run queue, its
concurrency limits, its pools), on the benchmark's embedded Postgres.

The processes are the Docker Compose stack's own commands, started as the test suite
starts them (``taxi_platform_tests.support.stack``); the release mirror is ``taxi-platform
mirror`` in a process of its own, so serving the files costs the benchmark's process
nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
import requests
from psycopg import sql

from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.cli import LAUNCH_TIMEOUT_SECONDS
from taxi_platform_tests.support.stack import (
    BIN_DIR,
    DagsterStack,
    dagster_stack,
    dagster_storage_url,
    wait_until,
)


def recreate_database(server: EmbeddedPostgres, name: str) -> str:
    """An empty database ``name`` on ``server`` (dropped first if it exists); its URL."""
    drop_database(server, name)
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return server.url(name)


def drop_database(server: EmbeddedPostgres, name: str) -> None:
    drop = sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(drop)


@contextmanager
def history_stack(
    root: Path, taxi_database_url: str, dagster_database_url: str, mirror_folder: Path
) -> Iterator[DagsterStack]:
    """Start the mirror and the three Dagster services; stop them all on exit."""
    mirror_port = free_port()
    env = {
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(free_port()),
        "DAGSTER_POSTGRES_URL": dagster_storage_url(dagster_database_url),
        "TAXI_DATABASE_URL": taxi_database_url,
        "TAXI_HOME": str(root / "taxi_home"),
        "TAXI_SOURCE_URL": f"http://127.0.0.1:{mirror_port}",
        "TAXI_LANDING_RETENTION": "delete",  # the default a user has
        "DAGSTER_DISABLE_TELEMETRY": "1",
        # As docker-compose.yaml and `taxi-platform up` set it (a run's launch may take
        # longer than Dagster's default 60 s on a busy machine).
        "DAGSTER_GRPC_TIMEOUT_SECONDS": LAUNCH_TIMEOUT_SECONDS,
    }
    with contextlib.ExitStack() as cleanup:
        stack = cleanup.enter_context(dagster_stack(root, env))
        mirror = stack.spawn(
            "mirror",
            [
                str(BIN_DIR / "taxi-platform"),
                "mirror",
                "--folder",
                str(mirror_folder),
                "--port",
                str(mirror_port),
            ],
        )
        wait_until(
            lambda: requests.head(env["TAXI_SOURCE_URL"] + "/", timeout=5).status_code < 500,
            timeout=60,
            what="the release mirror",
            watch=[mirror],
        )
        stack.start_code_server(["--module-name", "taxi_platform.definitions"], timeout=180)
        # Both only need the code server: starting them side by side saves a start-up.
        with ThreadPoolExecutor(max_workers=2) as starting:
            webserver = starting.submit(stack.start_webserver, free_port(), 180)
            daemon = starting.submit(stack.start_daemon, 180)
            webserver.result(), daemon.result()
        stack.wait_for_location_loaded(timeout=120)
        yield stack


def code_server_pid(stack: DagsterStack) -> int:
    """The process below which the run launcher starts each run's process."""
    for process in stack.processes:
        if process.name == "code_server":
            return process.popen.pid
    raise RuntimeError("the code server is not running")


def stack_parts(stack: DagsterStack, postgres_pid: int) -> dict[str, int]:
    """The roots of the process trees whose CPU the benchmark accounts for: Postgres, the
    code server (every run's process is below it), the daemon, the webserver, the mirror."""
    parts = {"postgres": postgres_pid}
    for process in stack.processes:
        name = "code_server_and_runs" if process.name == "code_server" else process.name
        parts[name] = process.popen.pid
    return parts
