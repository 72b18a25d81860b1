"""Dagster's run, event-log and schedule storage, in Postgres, found without configuration.

``dagster.yaml`` names these classes instead of dagster-postgres's own so that one file
serves every way the platform runs: with ``DAGSTER_POSTGRES_URL`` set (docker-compose, a
production database) they use it; without it they use the ``dagster`` database of the
embedded server, starting it if needed. So ``dagster asset materialize`` and ``dagster
dev`` work from the project folder with nothing set, and the URL (it carries a password)
never has to be written into a file or a command line: each process resolves it itself.

They also keep their connections. dagster-postgres opens a new connection for every call
(SQLAlchemy's ``NullPool``, so that short-lived instances hold nothing): a month's run
opened about 340 sessions of Dagster's database (``bench.history`` at ``--scale 0.01``:
4,117 sessions for 12 runs), each a Postgres backend started and authenticated, about
2.6 ms of CPU. Here each storage keeps ``KEPT_CONNECTIONS`` open for the life of its
process (``KEPT_CONNECTIONS + EXTRA_CONNECTIONS`` at once at most, the bound the
webserver's own pool has by default), checks one with a
ping before handing it out (a restarted server costs a reconnect, not an error), and
closes them when the instance is disposed.
"""

from __future__ import annotations

import os

from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine

from taxi_platform.local.embedded_postgres import DAGSTER_DATABASE, embedded_server


def storage_url() -> str:
    url = os.environ.get("DAGSTER_POSTGRES_URL") or embedded_server().start().url(DAGSTER_DATABASE)
    # dagster-postgres speaks through psycopg2 (its NOTIFY passes parameters client-side);
    # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql:// URL.
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        url = f"postgresql+psycopg2://{rest}"
    return url


KEPT_CONNECTIONS = 1
EXTRA_CONNECTIONS = 20


class _UrlFromEnvironmentOrEmbedded:
    """No configuration in dagster.yaml: the URL is resolved by each process at start, and
    the storage keeps its connections (see the module docstring)."""

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict):
        storage = cls(postgres_url=storage_url(), inst_data=inst_data)
        storage.keep_connections()
        return storage

    def keep_connections(self) -> None:
        """Swap dagster-postgres's engine, which opens a connection per call, for one that
        keeps them."""
        opens_per_call = self._engine
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=KEPT_CONNECTIONS,
            max_overflow=EXTRA_CONNECTIONS,
            pool_pre_ping=True,
        )
        opens_per_call.dispose()

    def optimize_for_webserver(self, *args, **kwargs) -> None:
        """The webserver swaps the engine for its own pool (and statement timeout) again."""
        self._engine.dispose()
        super().optimize_for_webserver(*args, **kwargs)

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()


class TaxiRunStorage(_UrlFromEnvironmentOrEmbedded, PostgresRunStorage):
    pass


class TaxiEventLogStorage(_UrlFromEnvironmentOrEmbedded, PostgresEventLogStorage):
    pass


class TaxiScheduleStorage(_UrlFromEnvironmentOrEmbedded, PostgresScheduleStorage):
    pass
