"""Dagster's run, event-log and schedule storage, in Postgres, found without configuration.

``dagster.yaml`` names these classes instead of dagster-postgres's own so that one file
serves every way the platform runs: with ``DAGSTER_POSTGRES_URL`` set (docker-compose, a
production database) they use it; without it they use the ``dagster`` database of the
embedded server, starting it if needed. So ``dagster asset materialize`` and ``dagster
dev`` work from the project folder with nothing set, and the URL (it carries a password)
never has to be written into a file or a command line: each process resolves it itself.
"""

from __future__ import annotations

import os

from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage

from taxi_platform.local.embedded_postgres import DAGSTER_DATABASE, embedded_server


def storage_url() -> str:
    url = os.environ.get("DAGSTER_POSTGRES_URL") or embedded_server().start().url(DAGSTER_DATABASE)
    # dagster-postgres speaks through psycopg2 (its NOTIFY passes parameters client-side);
    # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql:// URL.
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        url = f"postgresql+psycopg2://{rest}"
    return url


class _UrlFromEnvironmentOrEmbedded:
    """No configuration in dagster.yaml: the URL is resolved by each process at start."""

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict):
        return cls(postgres_url=storage_url(), inst_data=inst_data)


class TaxiRunStorage(_UrlFromEnvironmentOrEmbedded, PostgresRunStorage):
    pass


class TaxiEventLogStorage(_UrlFromEnvironmentOrEmbedded, PostgresEventLogStorage):
    pass


class TaxiScheduleStorage(_UrlFromEnvironmentOrEmbedded, PostgresScheduleStorage):
    pass
