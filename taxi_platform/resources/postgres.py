"""The Postgres that holds the taxi data: the user's (``TAXI_DATABASE_URL``) or the embedded one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import dagster as dg
import psycopg
from pydantic import Field, PrivateAttr

from taxi_platform.lib.pool_wait import SlotWaitWatcher
from taxi_platform.lib.run_liveness import reap_dead_runs, tag_run_with_host
from taxi_platform.local.embedded_postgres import embedded_server


class PostgresResource(dg.ConfigurableResource):
    """Hands out connections to the taxi database.

    ``url`` is a libpq URL. Left empty, the embedded server is started (or found running)
    and its ``taxi`` database used, so the project works on a fresh machine with nothing
    configured. The URL carries the password: it is never logged, only ``describe()``.
    """

    url: str | None = Field(default=None, description="libpq URL of the taxi database")
    final_schema: str = Field(default="public", description="schema of the final tables")
    connect_timeout_seconds: int = 10
    _slot_wait_watcher: SlotWaitWatcher | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Before a run touches the database, free the pool slots of runs whose process died.

        A run killed mid-step keeps its ``taxi_database`` slots claimed; the next run that
        needs the database is the one that would wait for them, and its resources are set
        up before its steps claim a slot (``run_liveness`` explains how death is told).
        While its steps wait for a slot, the run says who holds them and can be stopped
        (``pool_wait``).
        """
        instance, run_id = context.instance, context.run_id
        if instance is None or run_id is None:
            return
        tag_run_with_host(instance, run_id)
        reap_dead_runs(instance, log=context.log.info if context.log else None)
        if context.log is not None:
            self._slot_wait_watcher = SlotWaitWatcher(instance, run_id, context.log.info).start()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._slot_wait_watcher is not None:
            self._slot_wait_watcher.stop()
            self._slot_wait_watcher = None

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
