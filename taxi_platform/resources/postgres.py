"""The Postgres that holds the taxi data: the user's (``TAXI_DATABASE_URL``) or the embedded one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import dagster as dg
import psycopg
from pydantic import Field

from taxi_platform.local_postgres import embedded_server


class PostgresResource(dg.ConfigurableResource):
    """Hands out connections to the taxi database.

    ``url`` is a libpq URL. Left empty, the embedded server is started (or found running)
    and its ``taxi`` database used, so the project works on a fresh machine with nothing
    configured. The URL carries the password: it is never logged, only ``describe()``.
    """

    url: str | None = Field(default=None, description="libpq URL of the taxi database")
    final_schema: str = Field(default="public", description="schema of the final tables")
    connect_timeout_seconds: int = 10

    def resolved_url(self) -> str:
        return self.url or embedded_server().start().url()

    def describe(self) -> str:
        """Where the data goes, without credentials (for logs and metadata)."""
        if not self.url:
            return "embedded Postgres (database taxi)"
        parts = urlsplit(self.url)
        return f"{parts.hostname or 'local socket'}:{parts.port or 5432}{parts.path}"

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with psycopg.connect(
            self.resolved_url(),
            connect_timeout=self.connect_timeout_seconds,
            application_name="taxi_platform",
        ) as connection:
            yield connection
