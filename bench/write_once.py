"""Would a write-once load meet issue 16's single-month targets? A probe, not the platform.

    .venv/bin/python -m bench.write_once --rows 1000000 --repeat 3 --taxi yellow

The platform writes a month twice: ``COPY`` into an unlogged staging table, then an
``INSERT ... SELECT`` that computes the ids and writes the logged final table. The issue's
targets for a new month into an empty table (0.7x the flow as run, 1.25x the durable floor)
need the rows written once: the ids computed before Postgres sees the file, and one
``COPY`` into the final table. Before the asset graph is changed for that, this probe
measures its two halves on the same landed CSV, next to ``bench.run``'s contenders:

- ``ids_pass``: DuckDB reads the landed CSV (every column as text) and writes it again with
  ``unique_row_id`` and ``filename`` in front, in the final table's column order. The ids
  are md5 over the same text Postgres's casts produce (``pg_text``), so they equal the
  zoomcamp ids;
- ``write_once_copy``: that file in one ``COPY`` into the platform's final table (its DDL,
  both indexes) inside one transaction, with the BRIN summary the merge makes;
- ``durable_floor`` and ``ours_sql``, exactly as ``bench.run`` times them.

Every repetition then asks Postgres to recompute each id from the loaded row (the merge's
settings) and counts the rows where DuckDB's differs: a probe whose ids differed would
measure nothing, so a mismatch is printed and the command exits 1.

Not measured, because into an empty table nothing can match: the check against rows the
table already holds. The DuckDB SQL lives here, not in ``lib/sql``, until the platform
adopts it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from bench import contenders
from bench.run import RESULTS_DIR, Databases, LandedCsv, land_locally
from taxi_platform.lib.catalog import DOUBLE, TEXT, TIMESTAMP, Column, TaxiType, taxi_type
from taxi_platform.lib.landing import parse_header
from taxi_platform.lib.postgres_load import ensure_tables
from taxi_platform.lib.sql import postgres as statements
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.generate import write_month

CONTENDERS = ("durable_floor", "ids_pass", "write_once_copy", "ours_sql")
# Below 2^53 every double is printed the same, shortest, by both engines (asserted by
# test_bench_write_once.py); above it Postgres sometimes keeps 17 digits.
EXACT_DOUBLES_BELOW = 2**53


def pg_text(column: Column) -> str:
    """DuckDB SQL for ``coalesce(cast(column as text), '')`` as Postgres computes it.

    The column arrives as the file's text. Postgres parses it into the column's type and
    prints it back (``SESSION_SETTINGS``: ISO dates, shortest round-trip doubles); DuckDB
    parses the same text into the same value (both round doubles correctly, both read
    ``T``, offsets and ``24:00`` alike) and prints it nearly the same way. Three
    differences are mended: a whole double prints ``1.0`` in DuckDB and ``1`` in
    Postgres; between 1e15 and 1e16 Postgres already switches to an exponent
    (``1.5e+15``) where DuckDB does not; and the names ``nan``/``inf``. Beyond 2^53 a
    double can print differently (Postgres keeps a halfway 17th digit), so such a value
    stops the pass with an error naming the column and the value. Text columns are the
    file's own bytes in both.
    """
    name = _identifier(column.name)
    if column.postgres_type == TEXT:
        return f"coalesce({name}, '')"
    if column.postgres_type == TIMESTAMP:
        return f"coalesce(cast(cast({name} as timestamp) as varchar), '')"
    if column.postgres_type == DOUBLE:
        value = f"cast({name} as double)"
        printed = f"cast({value} as varchar)"
        # The digits of a value in [1e15, 1e16): 16 before the point, maybe some after.
        digits = f"rtrim(replace(replace({printed}, '-', ''), '.', ''), '0')"
        exponent_form = (
            f"(case when {value} < 0 then '-' else '' end) || left({digits}, 1) || "
            f"(case when length({digits}) > 1 then '.' || substr({digits}, 2) else '' end)"
            " || 'e+15'"
        )
        beyond = _literal(
            f"{column.name}: a value beyond 2^53, where Postgres prints doubles other than "
            "shortest (its Ryu keeps halfway digits), so the id cannot be computed here: "
        )
        return (
            f"coalesce(case when isnan({value}) then 'NaN' "
            f"when isinf({value}) then "
            f"(case when {value} > 0 then 'Infinity' else '-Infinity' end) "
            f"when abs({value}) >= {EXACT_DOUBLES_BELOW} then error({beyond} || {name}) "
            f"when abs({value}) >= 1e15 then {exponent_form} "
            f"when suffix({printed}, '.0') then {printed}[:-3] else {printed} end, '')"
        )
    return f"coalesce(cast(cast({name} as bigint) as varchar), '')"


def unique_row_id(taxi: TaxiType) -> str:
    """DuckDB SQL of the zoomcamp id (``statements.unique_row_id`` is Postgres's)."""
    return "md5(" + " || ".join(pg_text(taxi.column(n)) for n in taxi.postgres_id_columns) + ")"


def file_columns(taxi: TaxiType, csv_path: Path) -> tuple[Column, ...]:
    with open(csv_path, "rb") as csv_file:
        return taxi.columns_of_header(parse_header(csv_file.readline(65536)))


def write_ids_file(taxi: TaxiType, month_start: date, csv_path: Path, target: Path) -> int:
    """The landed CSV again, ``unique_row_id`` and ``filename`` in front; returns its rows.

    Every column is read as text and written back as it came, so Postgres parses the
    file's own values; only the two new columns are computed.
    """
    columns = file_columns(taxi, csv_path)
    names = ", ".join(_identifier(c.name) for c in columns)
    as_text = ", ".join(f"{_literal(c.name)}: 'VARCHAR'" for c in columns)
    source = (
        f"read_csv({_literal(csv_path)}, header = true, delim = ',', quote = '\"', "
        f"auto_detect = false, columns = {{{as_text}}})"
    )
    query = (
        f"select {unique_row_id(taxi)} as unique_row_id, "
        f"{_literal(taxi.csv_name(month_start))} as filename, {names} from {source}"
    )
    # Row order does not matter to COPY; keeping it makes DuckDB buffer the output, which
    # under a memory limit doubled the pass (2.6 s against 1.3 s, 1M rows).
    config = {"threads": 2, "memory_limit": "128MB", "preserve_insertion_order": False}
    with duckdb.connect(config=config) as db:
        # DuckDB's COPY answers with the number of rows it wrote.
        return db.execute(
            f"copy ({query}) to {_literal(target)} (format csv, header true)"
        ).fetchone()[0]


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: object) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def copy_ids_file(url: str, taxi: TaxiType, ids_path: Path, columns: tuple[Column, ...]) -> int:
    """One COPY of the ids file into the final table, in one transaction; returns rows."""
    target = sql.SQL(", ").join(
        [sql.Identifier("unique_row_id"), sql.Identifier("filename")]
        + [sql.Identifier(c.postgres_name) for c in columns]
    )
    statement = sql.SQL("copy {final} ({target}) from stdin with (format csv, header true)").format(
        final=statements.final_table(taxi), target=target
    )
    with psycopg.connect(url) as connection:
        with connection.transaction(), connection.cursor() as cursor:
            rows = contenders.copy_file(cursor, statement, ids_path)
            connection.execute(statements.summarize_filename_index(taxi))
    return rows


def ids_postgres_disagrees_with(url: str, taxi: TaxiType) -> int:
    """Rows of the final table whose id differs from Postgres's own md5 of the row."""
    with psycopg.connect(url) as connection, connection.transaction():
        for setting in statements.SESSION_SETTINGS:
            connection.execute(setting)
        return connection.execute(
            sql.SQL(
                "select count(*) from {final} where unique_row_id is distinct from {id}"
            ).format(final=statements.final_table(taxi), id=statements.unique_row_id(taxi))
        ).fetchone()[0]


def create_final_table(url: str, taxi: TaxiType) -> None:
    with psycopg.connect(url) as connection:
        ensure_tables(connection, taxi, "public")


@dataclass
class Probe:
    taxi: TaxiType
    month: date
    landed: LandedCsv
    work: Path
    databases: Databases
    seconds: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CONTENDERS})
    id_mismatches: list[int] = field(default_factory=list)

    def repetition(self, number: int) -> None:
        csv_path, taxi, month = self.landed.path, self.taxi, self.month
        url = self.databases.server.url(self.databases.create(f"durable_{number}"))
        contenders.checkpoint(url)
        self.seconds["durable_floor"].append(
            contenders.durable_floor_load(url, taxi, csv_path).seconds
        )
        url = self.databases.server.url(self.databases.create(f"ours_{number}"))
        contenders.checkpoint(url)
        self.seconds["ours_sql"].append(
            contenders.ours_sql_load(url, taxi, month, csv_path, self.landed.sha256).seconds
        )
        url = self.databases.server.url(self.databases.create(f"write_once_{number}"))
        create_final_table(url, taxi)
        ids_path = self.work / "ids.csv"
        started = time.perf_counter()
        rows = write_ids_file(taxi, month, csv_path, ids_path)
        self.seconds["ids_pass"].append(time.perf_counter() - started)
        contenders.checkpoint(url)
        started = time.perf_counter()
        copied = copy_ids_file(url, taxi, ids_path, file_columns(taxi, csv_path))
        self.seconds["write_once_copy"].append(time.perf_counter() - started)
        if not rows == copied == self.landed.rows:
            raise SystemExit(f"rows differ: file {self.landed.rows}, ids {rows}, copied {copied}")
        self.id_mismatches.append(ids_postgres_disagrees_with(url, taxi))

    def summary(self) -> dict:
        median = {name: statistics.median(values) for name, values in self.seconds.items()}
        write_once = median["ids_pass"] + median["write_once_copy"]
        return {
            "rows": self.landed.rows,
            "seconds": self.seconds,
            "median_seconds": median,
            "write_once_total": write_once,
            "write_once_copy_over_durable_floor": median["write_once_copy"]
            / median["durable_floor"],
            "write_once_total_over_ours_sql": write_once / median["ours_sql"],
            "id_mismatches": self.id_mismatches,
        }


def format_summary(summary: dict, command: str) -> str:
    median = summary["median_seconds"]
    lines = [
        f"$ {command}",
        f"{summary['rows']:,} rows, median of {len(summary['seconds']['ours_sql'])} (s):",
    ]
    lines += [
        f"  {name:16s} {median[name]:7.2f}   {summary['seconds'][name]}" for name in CONTENDERS
    ]
    lines += [
        f"  write-once COPY / durable floor: {summary['write_once_copy_over_durable_floor']:.2f}x",
        f"  ids pass + write-once COPY: {summary['write_once_total']:.2f} s = "
        f"{summary['write_once_total_over_ours_sql']:.2f}x ours SQL",
        f"  ids Postgres computes differently: {summary['id_mismatches']}",
    ]
    return "\n".join(lines)


def run_probe(taxi: TaxiType, rows: int, repeat: int, server: EmbeddedPostgres, work: Path) -> dict:
    month = date(2019, 1, 1)
    gz_path = write_month(taxi, month, rows, work / "mirror", seed=1)
    landed = land_locally(gz_path, work / "landing" / taxi.csv_name(month))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dt%H%M%Sz")
    databases = Databases(server, f"write_once_{stamp}")
    probe = Probe(taxi, month, landed, work, databases)
    for number in range(repeat):
        probe.repetition(number)
    return probe.summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxi", default="yellow")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    options = parser.parse_args(argv)
    command = "python -m bench.write_once " + " ".join(argv if argv is not None else sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="taxi_write_once-", dir="/tmp"))
    work.chmod(0o755)  # the server's system user must reach its folder below
    server = EmbeddedPostgres(server_dir=work / "postgres", port=free_port()).start()
    try:
        summary = run_probe(taxi_type(options.taxi), options.rows, options.repeat, server, work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary["command"] = command
    path = options.json or RESULTS_DIR / (
        f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}_write_once_{options.taxi}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    print(format_summary(summary, command))
    print(f"results: {path}")
    return 1 if any(summary["id_mismatches"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
