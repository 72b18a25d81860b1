"""The Docker Compose stack's Dagster processes, started for real without Docker.

The compose file runs three processes from one image: a code server (`dagster code-server
start`), `dagster-webserver` and `dagster-daemon`, sharing the repository's `dagster.yaml`
and `deploy/workspace.yaml`. Tests start the same commands with the same two files, on
127.0.0.1 and free ports, so what they prove holds for the containers' configuration rather
than for a look-alike. Every process runs in its own process group and is killed with it.

Waiting is always polling with a deadline, and a process that exits while being waited on
fails the wait at once with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import requests

from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTANCE_YAML = PROJECT_ROOT / "dagster.yaml"
STACK_WORKSPACE_YAML = PROJECT_ROOT / "deploy" / "workspace.yaml"
LOCATION_NAME = "taxi_platform"
BIN_DIR = Path(sys.executable).parent


class StackError(AssertionError):
    """A process of the stack failed to start or to answer in time."""


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except FileNotFoundError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise StackError(
                f"{self.name} exited with code {self.popen.returncode}; its log ends:\n"
                f"{self.log_tail()}"
            )

    def stop(self, grace_seconds: float = 15.0) -> None:
        """SIGTERM to the whole group (a code server's children, a run's worker), then KILL."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive a leader that exited on SIGTERM: clear the group either way.
        _signal_group(self.popen.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=grace_seconds)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    watch: list[ManagedProcess] = (),  # type: ignore[assignment]
    interval: float = 0.25,
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        for process in watch:
            process.check_alive()
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # the thing polled is not up yet
            last_error = error
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p in watch)
            raise StackError(
                f"timed out after {timeout}s waiting for {what} ({last_error})\n{logs}"
            )
        time.sleep(interval)


@contextmanager
def fresh_database(server: EmbeddedPostgres, prefix: str = "d") -> Iterator[str]:
    """A new, empty database on ``server`` (for Dagster's storage), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def dagster_storage_url(libpq_url: str) -> str:
    """The URL as docker-compose.yaml gives it to dagster.yaml: with the psycopg2 driver named
    (a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1, which breaks launchRun)."""
    return libpq_url.replace("postgresql://", "postgresql+psycopg2://", 1)


@dataclass
class DagsterStack:
    """A DAGSTER_HOME holding the repository's dagster.yaml, and the processes using it.

    ``env`` is what the compose file gives the Dagster services (DAGSTER_POSTGRES_URL,
    DAGSTER_CODE_SERVER_HOST/PORT, TAXI_*); it is layered over this process's environment.
    """

    root: Path
    env: dict[str, str]
    processes: list[ManagedProcess] = field(default_factory=list)
    webserver_url: str | None = None

    def __post_init__(self) -> None:
        self.home = self.root / "dagster_home"
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(INSTANCE_YAML, self.home / "dagster.yaml")
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)

    @property
    def process_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("DAGSTER_")}
        env.update(self.env)
        env["DAGSTER_HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, command: list[str]) -> ManagedProcess:
        log_path = self.logs / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                command,
                env=self.process_env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = ManagedProcess(name, popen, log_path)
        self.processes.append(process)
        return process

    def run_cli(self, command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            env=self.process_env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- the three services of docker-compose.yaml -------------------------------------------

    def start_code_server(self, target: list[str], timeout: float = 90) -> ManagedProcess:
        """``dagster code-server start`` on DAGSTER_CODE_SERVER_PORT, ready when the compose
        health check's own command (``dagster api grpc-health-check``) passes."""
        port = self.env["DAGSTER_CODE_SERVER_PORT"]
        process = self.spawn(
            "code_server",
            [
                str(BIN_DIR / "dagster"),
                "code-server",
                "start",
                "--host",
                self.env["DAGSTER_CODE_SERVER_HOST"],
                "--port",
                port,
                *target,
                "--location-name",
                LOCATION_NAME,
            ],
        )
        health_check = [str(BIN_DIR / "dagster"), "api", "grpc-health-check", "--port", port]
        wait_until(
            lambda: self.run_cli(health_check).returncode == 0,
            timeout=timeout,
            what="the code server's gRPC health check",
            watch=[process],
            interval=1.0,
        )
        return process

    def start_webserver(self, port: int, timeout: float = 90) -> ManagedProcess:
        process = self.spawn(
            "webserver",
            [
                str(BIN_DIR / "dagster-webserver"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workspace",
                str(STACK_WORKSPACE_YAML),
            ],
        )
        self.webserver_url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: requests.get(f"{self.webserver_url}/server_info", timeout=5).ok,
            timeout=timeout,
            what="the webserver's /server_info",
            watch=[process],
        )
        return process

    def start_daemon(self, timeout: float = 90) -> ManagedProcess:
        """``dagster-daemon run``, ready when the compose health check (liveness) passes."""
        process = self.spawn(
            "daemon",
            [
                str(BIN_DIR / "dagster-daemon"),
                "run",
                "--workspace",
                str(STACK_WORKSPACE_YAML),
            ],
        )
        liveness = [str(BIN_DIR / "dagster-daemon"), "liveness-check"]
        wait_until(
            lambda: self.run_cli(liveness).returncode == 0,
            timeout=timeout,
            what="dagster-daemon liveness-check",
            watch=[process],
            interval=1.0,
        )
        return process

    # -- talking to the webserver --------------------------------------------------------------

    def graphql(
        self, query: str, variables: Mapping[str, Any] | None = None, base_url: str | None = None
    ) -> dict[str, Any]:
        response = requests.post(
            f"{base_url or self.webserver_url}/graphql",
            json={"query": query, "variables": dict(variables or {})},
            timeout=30,
        )
        # A query the schema rejects comes back as HTTP 400/500 with `errors` in the body.
        try:
            body = response.json()
        except ValueError:
            response.raise_for_status()
            raise
        if body.get("errors") or not response.ok:
            raise StackError(f"GraphQL HTTP {response.status_code}: {body.get('errors') or body}")
        return body["data"]

    def wait_for_location_loaded(self, timeout: float = 60) -> None:
        """The webserver sees the code location over gRPC, loaded without error."""

        def loaded() -> bool:
            data = self.graphql(WORKSPACE_QUERY)
            entries = data["workspaceOrError"]["locationEntries"]
            for entry in entries:
                if entry["name"] == LOCATION_NAME:
                    location = entry["locationOrLoadError"] or {}
                    if location.get("__typename") == "PythonError":
                        raise StackError(f"code location failed to load: {location['message']}")
                    return location.get("__typename") == "RepositoryLocation"
            return False

        wait_until(loaded, timeout=timeout, what="the code location", watch=self.processes)

    def stop(self) -> None:
        """Stop in the reverse order of start: daemon and webserver before their code server."""
        for process in reversed(self.processes):
            process.stop()

    def all_logs(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.processes)


WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


@contextmanager
def dagster_stack(root: Path, env: Mapping[str, str]) -> Iterator[DagsterStack]:
    """A stack whose processes are all stopped on exit, whatever happened inside."""
    stack = DagsterStack(root=root, env=dict(env))
    try:
        yield stack
    finally:
        stack.stop()


def start_http_folder(folder: Path, port: int, log_dir: Path) -> ManagedProcess:
    """A real HTTP server for ``folder`` (a release mirror laid out like the GitHub URLs)."""
    log_path = log_dir / "mirror.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(folder),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = ManagedProcess("mirror", popen, log_path)
    wait_until(
        lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=5).ok,
        timeout=30,
        what="the mirror",
        watch=[process],
    )
    return process


@contextmanager
def platform_stack(
    root: Path,
    postgres_server: EmbeddedPostgres,
    taxi_database_url: str | None = None,
    mirror_folder: Path | None = None,
    configure: Callable[[DagsterStack], None] | None = None,
    with_daemon: bool = True,
) -> Iterator[DagsterStack]:
    """The platform as docker-compose.yaml runs it, without Docker: Dagster storage in a
    fresh database, a code server and a webserver, and unless told otherwise the daemon.
    With ``mirror_folder``, a release mirror serves it as ``TAXI_SOURCE_URL``;
    ``configure`` may change the instance (its DAGSTER_HOME) before the processes start."""
    with contextlib.ExitStack() as cleanup:
        env = {
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(free_port()),
            "TAXI_HOME": str(root / "taxi_home"),
        }
        if mirror_folder is not None:
            mirror_port = free_port()
            mirror = start_http_folder(mirror_folder, mirror_port, root)
            cleanup.callback(mirror.stop)
            env["TAXI_SOURCE_URL"] = f"http://127.0.0.1:{mirror_port}"
            env["TAXI_TLC_URL"] = f"http://127.0.0.1:{mirror_port}/trip-data"
        if taxi_database_url is not None:
            env["TAXI_DATABASE_URL"] = taxi_database_url
        storage_url = cleanup.enter_context(fresh_database(postgres_server))
        env["DAGSTER_POSTGRES_URL"] = dagster_storage_url(storage_url)
        running = cleanup.enter_context(dagster_stack(root, env))
        if configure is not None:
            configure(running)
        running.start_code_server(["--module-name", "taxi_platform.definitions"])
        running.start_webserver(free_port())
        if with_daemon:
            running.start_daemon()
        running.wait_for_location_loaded()
        yield running


@contextmanager
def cli_stack(
    root: Path,
    server: EmbeddedPostgres,
    taxi_database_url: str,
    mirror_folder: Path,
    monkeypatch: Any,
) -> Iterator[DagsterStack]:
    """What real ``dagster asset materialize`` processes need: a DAGSTER_HOME with the
    repository's dagster.yaml, Dagster's storage in a fresh database of ``server``, the
    months of ``mirror_folder`` served over HTTP. ``DAGSTER_POSTGRES_URL`` is set in this
    process too (through ``monkeypatch``), so the test can open the same instance."""
    from taxi_platform_tests.support.http_faults import FaultyMirror

    with (
        FaultyMirror(mirror_folder) as mirror,
        fresh_database(server, prefix="dag") as storage_url,
    ):
        env = {
            "TAXI_HOME": str(root / "taxi_home"),
            "TAXI_DATABASE_URL": taxi_database_url,
            "DAGSTER_POSTGRES_URL": dagster_storage_url(storage_url),
            "TAXI_SOURCE_URL": mirror.base_url,
        }
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", env["DAGSTER_POSTGRES_URL"])
        with dagster_stack(root / "stack", env) as stack:
            yield stack


def hold_staging_lock(holder: Any, taxi: Any, month: date) -> None:
    """Take the month's staging lock on ``holder`` (an autocommit connection), so that a
    run of the month waits inside its staging step, in the database, until it is let go."""
    holder.execute(
        "select pg_advisory_lock(hashtext(%s))",
        (f"taxi_platform:staging:{taxi.month_table(month)}",),
    )


def wait_for_staging_lock_wait(holder: Any, process: Any, what: str) -> None:
    """Until a session waits on a staging lock (``process`` still running)."""
    wait_until(
        lambda: holder.execute(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
            "and query ilike '%taxi_platform:staging%'"
        ).fetchone()[0],
        timeout=300,
        what=what,
        watch=[process],
    )


def materialize_command(month: date, selection: str = "*postgres/green_tripdata") -> list[str]:
    """``dagster asset materialize`` of one month, as a user runs it from the project."""
    return [
        str(BIN_DIR / "dagster"),
        "asset",
        "materialize",
        "-m",
        "taxi_platform.definitions",
        "--select",
        selection,
        "--partition",
        f"{month:%Y-%m-%d}",
    ]
