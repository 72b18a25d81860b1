"""Dagster's storage, as ``dagster.yaml`` configures it, keeps its connections to Postgres.

dagster-postgres alone opens a connection per call, and every one is a Postgres backend
started and authenticated. SQLAlchemy's pool announces each new database connection it
makes (its ``connect`` event), which counts them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.instance_storage import KEPT_CONNECTIONS

REPOSITORY = Path(__file__).resolve().parents[1]
CALLS = 100


@pytest.fixture
def instance(database_url: str, tmp_path: Path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """An instance of the repository's dagster.yaml, its storage in the test's database."""
    shutil.copy(REPOSITORY / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", database_url)
    with dg.DagsterInstance.from_config(str(tmp_path)) as made:
        yield made


@pytest.fixture
def new_connections() -> Iterator[list[object]]:
    """Every database connection any SQLAlchemy pool opens while the test runs."""
    opened: list[object] = []

    def count(dbapi_connection, _record) -> None:
        opened.append(dbapi_connection)

    event.listen(Pool, "connect", count)
    yield opened
    event.remove(Pool, "connect", count)


def storage_calls(instance: dg.DagsterInstance) -> None:
    """Calls to each of the three storages (runs, event log, schedules), as runs and the
    daemon make them."""
    instance.get_runs(limit=1)
    instance.get_asset_keys()
    instance.all_instigator_state()


def test_storage_keeps_its_connections_and_survives_a_server_restart(
    instance: dg.DagsterInstance, postgres_server: EmbeddedPostgres, new_connections: list
) -> None:
    for _ in range(CALLS):
        storage_calls(instance)

    # One kept connection per storage, not one per call.
    assert 0 < len(new_connections) <= 3 * KEPT_CONNECTIONS

    # The kept connections die with the server; the next call checks and reconnects.
    postgres_server.stop()
    postgres_server.start()
    before_restart = len(new_connections)
    storage_calls(instance)
    assert len(new_connections) > before_restart
