"""``bench.history``'s Postgres account credits each statement with the CPU it used, on a
real server: two statements run one after the other in one backend, a parallel query, and
a statement in a database that is accounted as a whole."""

from __future__ import annotations

import psycopg

from bench.history_postgres_cpu import (
    NOT_SEEN,
    PostgresCpuSampler,
    process_cpu_seconds,
    statement_name,
    with_not_seen,
)

SAMPLE_SECONDS = 0.1
# A sample boundary can credit at most one interval's CPU to the neighbouring statement.
SLOP_SECONDS = 2.5 * SAMPLE_SECONDS
FIRST = "select count(*) from generate_series(1, 30000000)"
SECOND = "select sum(length(md5(i::text))) from generate_series(1, 2000000) as i"


def _database(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def _cpu_of(connection: psycopg.Connection, statement: str) -> float:
    """What the backend spent on ``statement``, read from the kernel around it."""
    pid = connection.info.backend_pid
    before = process_cpu_seconds(pid)
    connection.execute(statement)
    return process_cpu_seconds(pid) - before


def test_each_statement_is_credited_with_its_own_cpu(database_url: str) -> None:
    database = _database(database_url)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("set max_parallel_workers_per_gather to 0")
        spent_before = _cpu_of(connection, FIRST)
        with PostgresCpuSampler(database_url, {database}, interval=SAMPLE_SECONDS) as sampler:
            first_cpu = _cpu_of(connection, FIRST)
            second_cpu = _cpu_of(connection, SECOND)
    credited = dict(sampler.seconds)

    assert first_cpu >= 0.5 and second_cpu >= 0.3
    assert abs(credited[f"{database}: {statement_name(FIRST)}"] - first_cpu) <= SLOP_SECONDS
    assert abs(credited[f"{database}: {statement_name(SECOND)}"] - second_cpu) <= SLOP_SECONDS
    assert sampler.samples >= 5
    # What the backend spent before the sampler started is nobody's.
    assert spent_before >= 0.5
    assert credited.get(f"{database}: idle", 0.0) <= SLOP_SECONDS


def test_parallel_workers_count_for_their_leaders_statement(database_url: str) -> None:
    database = _database(database_url)
    statement = "select count(*) from spread where md5(i::text) like 'a%'"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("create table spread as select i from generate_series(1, 3000000) as i")
        connection.execute("analyze spread")
        for setting in (
            "parallel_setup_cost to 0",
            "parallel_tuple_cost to 0",
            "min_parallel_table_scan_size to 0",
            "max_parallel_workers_per_gather to 2",
        ):
            connection.execute(f"set {setting}")
        plan = "\n".join(row[0] for row in connection.execute(f"explain {statement}"))
        assert "Gather" in plan
        with PostgresCpuSampler(database_url, {database}, interval=SAMPLE_SECONDS) as sampler:
            leader_cpu = _cpu_of(connection, statement)
    credited = dict(sampler.seconds)

    assert not [name for name in credited if name.startswith("parallel worker")]
    # The workers did most of the scan, so the statement was credited more than the
    # leader's own CPU.
    assert credited[f"{database}: {statement_name(statement)}"] > leader_cpu + 0.2


def test_other_databases_are_one_entry_and_the_rest_is_not_seen(
    database_url: str, postgres_server
) -> None:
    database = _database(database_url)
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as elsewhere:
        with PostgresCpuSampler(database_url, {database}, interval=SAMPLE_SECONDS) as sampler:
            elsewhere_cpu = _cpu_of(elsewhere, FIRST)
    credited = dict(sampler.seconds)

    assert abs(credited["postgres: every statement"] - elsewhere_cpu) <= SLOP_SECONDS
    assert not [name for name in credited if name.startswith(f"{database}: select")]
    account = with_not_seen(credited, postgres_total=sum(credited.values()) + 3.0)
    assert account[NOT_SEEN] == 3.0
    assert list(account)[0] == "postgres: every statement"


def test_statement_names_blank_literals_and_spacing() -> None:
    assert (
        statement_name("SELECT sha256\n  FROM ledger WHERE filename = 'yellow_2019-01.csv'")
        == "select sha256 from ledger where filename = '…'"
    )
    assert statement_name("select 'it''s', 1") == "select '…', 1"
    assert len(statement_name("select " + "x, " * 100)) == 64


def test_a_server_that_goes_away_ends_the_sampling_not_the_benchmark(database_url: str) -> None:
    """The sampler's own connection is ended, as a server crash would end it: the thread
    stops and leaving the account raises nothing, so the backfill's results still count."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        with PostgresCpuSampler(database_url, {_database(database_url)}, interval=0.05) as sampler:
            sampler_pid = sampler._connection.info.backend_pid
            admin.execute("select pg_terminate_backend(%s)", (sampler_pid,))
            sampler._thread.join(timeout=10)
            assert not sampler._thread.is_alive()
            samples = sampler.samples
    assert sampler.samples == samples
