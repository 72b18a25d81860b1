"""Shared fixtures: one real embedded Postgres per test session, a database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port

SHARED_REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def scratch_root() -> Iterator[Path]:
    """A folder the embedded server's system user can reach (pytest's tmp_path is 700)."""
    root = Path(tempfile.mkdtemp(prefix="taxi_platform_tests-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(scratch_root: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(server_dir=scratch_root / "postgres", port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database of the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def mirror_folder(tmp_path: Path) -> Path:
    """An empty folder for a test's release mirror (tests write the months they serve)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    return folder


@pytest.fixture
def real_data() -> Path:
    if not SHARED_REAL_DATA.is_dir():
        pytest.skip(f"real TLC samples not present at {SHARED_REAL_DATA}")
    return SHARED_REAL_DATA


@pytest.fixture(autouse=True)
def _no_dagster_home_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never read the developer's instance; those that need one make their own.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
