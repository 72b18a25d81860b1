"""Where Postgres's CPU went during the backfill: core-seconds per statement.

``cpu_seconds`` gives the server one figure, the whole process tree's; it cannot tell the
merges' COPYs from the checks' reads, the monthly summary, autovacuum or Dagster's
storage. This thread asks ``pg_stat_activity`` what every server process is doing, twice a
second, reads each one's CPU time from the kernel (``/proc/{pid}/stat``), and credits the
CPU a process used since the previous sample to what it was doing then. A statement is
named by its first words with string literals blanked out, so that every month's COPY
into the yellow table is one entry. Parallel workers are credited to their leader's
statement, background processes to their kind (``checkpointer``, ``io worker``,
``autovacuum worker`` with its database), and the databases not named in ``by_statement``
(Dagster's storage) as a whole.

Two limits, both in the figures: a statement shorter than a sample is credited to the
one around it, and a process that starts and ends between two samples (most of Dagster's
storage connections, short parallel workers) is never seen, nor is the postmaster, which
``pg_stat_activity`` does not list. ``with_not_seen`` puts what nobody was seen spending
(the server's total less the credited) on a line of its own.
The sampler's own connection is left out; its queries are Postgres's, but in the total.
"""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import psycopg

SAMPLE_SECONDS = 0.5
# How many characters of a statement name it: enough for the verb, the table and the
# first columns, which tell this platform's statements apart.
STATEMENT_PREFIX_CHARACTERS = 64
NOT_SEEN = "not seen (the postmaster, processes shorter than a sample)"

ACTIVITY = (
    "select pid, backend_type, datname, state, query, leader_pid, "
    "extract(epoch from backend_start) from pg_stat_activity where pid <> pg_backend_pid()"
)
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_SPACES = re.compile(r"\s+")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def statement_name(query: str) -> str:
    """A statement's first words, lower-case, string literals blanked (``'…'``)."""
    text = _SPACES.sub(" ", _LITERAL.sub("'…'", query)).strip().lower()
    return text[:STATEMENT_PREFIX_CHARACTERS]


def activity_name(
    backend_type: str, database: str | None, state: str | None, query: str, by_statement: set
) -> str:
    """What a server process is doing, as the account names it."""
    if backend_type == "client backend":
        if database not in by_statement:
            return f"{database}: every statement"
        if state == "active":
            return f"{database}: {statement_name(query)}"
        return f"{database}: {state or 'starting'}"
    if backend_type == "autovacuum worker":
        return f"autovacuum worker ({database})"
    return backend_type


def process_cpu_seconds(pid: int) -> float | None:
    """User and system CPU of ``pid`` so far, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class PostgresCpuSampler:
    """A thread crediting the server's processes' CPU to what they were doing."""

    url: str
    by_statement: set[str]  # databases whose statements are named one by one
    interval: float = SAMPLE_SECONDS
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    samples: int = 0

    def __post_init__(self) -> None:
        self._last: dict[tuple[int, float], tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="postgres-cpu", daemon=True)

    def __enter__(self) -> PostgresCpuSampler:
        self._connection = psycopg.connect(self.url, autocommit=True)
        self.sample_once(credit=False)  # what each process had spent before the backfill
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._thread.is_alive() or self._connection.closed:
            return
        try:
            self.sample_once()
        except psycopg.Error:
            pass  # the server went away at the end; the backfill's outcome is what counts
        finally:
            self._connection.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except psycopg.Error:
                # The server went away: what was credited so far stands.
                self._connection.close()
                return

    def sample_once(self, credit: bool = True) -> None:
        """Credit each process's CPU since the last sample to what it was doing then; a
        process seen for the first time, all its CPU so far to what it is doing now.
        Without ``credit``, only remember where each process stands."""
        self.samples += 1
        rows = self._connection.execute(ACTIVITY).fetchall()
        doing = {
            pid: activity_name(kind, database, state, query or "", self.by_statement)
            for pid, kind, database, state, query, _leader, _started in rows
        }
        seen: dict[tuple[int, float], tuple[float, str]] = {}
        for pid, _kind, _database, _state, _query, leader, started in rows:
            cpu = process_cpu_seconds(pid)
            if cpu is None:
                continue
            now = doing.get(leader, doing[pid])  # a parallel worker: its leader's statement
            key = (pid, float(started or 0))
            before_cpu, before = self._last.get(key, (0.0, now))
            if credit:
                self.seconds[before] += max(cpu - before_cpu, 0.0)
            seen[key] = (cpu, now)
        self._last = seen


def with_not_seen(credited: dict[str, float], postgres_total: float) -> dict[str, float]:
    """The credited core-seconds, largest first, rounded, and the server's total less them
    as ``NOT_SEEN``: processes that lived between two samples."""
    account = {
        name: round(seconds, 1)
        for name, seconds in sorted(credited.items(), key=lambda item: -item[1])
        if round(seconds, 1) > 0
    }
    account[NOT_SEEN] = round(max(postgres_total - sum(credited.values()), 0.0), 1)
    return account


def format_postgres_cpu(account: dict, shown: int = 12) -> str:
    """Postgres's core-seconds by what its processes were doing
    (``PostgresCpuSampler``), largest first, one per line."""
    named = [(name, seconds) for name, seconds in account.items() if name != NOT_SEEN]
    lines = ["Postgres's CPU by statement, core-seconds (sampled every 0.5 s):"]
    lines += [f"  {seconds:>8,.1f}  {name}" for name, seconds in named[:shown]]
    rest = sum(seconds for _, seconds in named[shown:])
    if rest:
        lines.append(f"  {rest:>8,.1f}  {len(named) - shown} more")
    lines.append(f"  {account.get(NOT_SEEN, 0):>8,.1f}  {NOT_SEEN}")
    return "\n".join(lines)
