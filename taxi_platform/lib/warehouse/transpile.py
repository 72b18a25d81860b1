"""BigQuery statements as DuckDB runs them: what sqlglot cannot carry over, in one place.

The local stand-in runs the *same strings* the assets send to BigQuery, transpiled by
sqlglot (``read="bigquery"``, ``write="duckdb"``). What the transpiler cannot carry over is
handled here, visibly, and nowhere else:

* ``CREATE EXTERNAL TABLE`` would become an empty native table (sqlglot drops
  ``EXTERNAL``); it becomes a view over ``read_csv`` of the object's file in the
  fake-gcs-server folder, built from the statement's own column list, ``uris`` and
  ``skip_leading_rows``.
* ``NUMERIC`` would become DuckDB's ``DECIMAL(18,3)``; it is BigQuery's ``DECIMAL(38,9)``.
* ``PARTITION BY`` and column ``OPTIONS`` are storage properties without effect on rows;
  they are dropped. Anything else sqlglot cannot translate fails the statement.
"""

from __future__ import annotations

from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

# BigQuery's NUMERIC: 38 digits, 9 after the point.
BIGQUERY_NUMERIC = exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb")


def to_duckdb(sql: str, gcs_root: Path) -> str:
    """One BigQuery statement as DuckDB runs it (see the module docstring for the rules)."""
    statement = sqlglot.parse_one(sql, read="bigquery")
    properties = statement.args.get("properties")
    if isinstance(statement, exp.Create) and properties is not None:
        if any(isinstance(p, exp.ExternalProperty) for p in properties.expressions):
            return _external_table_as_view(statement, gcs_root)
        for prop in list(properties.expressions):
            if isinstance(prop, exp.PartitionedByProperty):
                prop.pop()
        if not properties.expressions:
            properties.pop()
    for constraint in list(statement.find_all(exp.ColumnConstraint)):
        if isinstance(constraint.args.get("kind"), exp.Properties):
            constraint.pop()  # column OPTIONS (description = ...)
    for data_type in list(statement.find_all(exp.DataType)):
        if data_type.this == exp.DataType.Type.DECIMAL and not data_type.expressions:
            data_type.replace(BIGQUERY_NUMERIC.copy())
    return statement.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE)


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _external_table_as_view(statement: exp.Create, gcs_root: Path) -> str:
    """The external table's columns, URIs and header rows, as a DuckDB view over read_csv."""
    options: dict[str, exp.Expression] = {}
    for prop in statement.args["properties"].expressions:
        if isinstance(prop, exp.FileFormatProperty):
            options["format"] = prop.this
        elif isinstance(prop, exp.Property) and "value" in prop.args:
            options[prop.name.lower()] = prop.args["value"]
    file_format = options.get("format")
    if file_format is None or file_format.name.upper() != "CSV":
        raise ValueError("the local stand-in reads CSV external tables only")
    uris = [literal.name for literal in options["uris"].expressions]
    skip_rows = int(options["skip_leading_rows"].name) if "skip_leading_rows" in options else 0
    # BigQuery's allow_jagged_rows: missing trailing columns are NULL.
    jagged = "allow_jagged_rows" in options and options["allow_jagged_rows"].sql().upper() == "TRUE"
    schema = statement.this
    columns = []
    for column in schema.expressions:
        data_type = column.args["kind"].copy()
        if data_type.this == exp.DataType.Type.DECIMAL and not data_type.expressions:
            data_type = BIGQUERY_NUMERIC.copy()
        columns.append(f"{sql_string(column.name)}: {sql_string(data_type.sql('duckdb'))}")
    paths = [sql_string(str(_local_object_path(uri, gcs_root))) for uri in uris]
    view = schema.this.sql(dialect="duckdb")
    return (
        f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_csv([{', '.join(paths)}], "
        f"header = false, skip = {skip_rows}, auto_detect = false, delim = ',', quote = '\"', "
        f"null_padding = {'true' if jagged else 'false'}, columns = {{{', '.join(columns)}}})"
    )


def _local_object_path(uri: str, gcs_root: Path) -> Path:
    """``gs://bucket/name`` -> the file fake-gcs-server's filesystem backend keeps it in."""
    if not uri.startswith("gs://"):
        raise ValueError(f"external table URI {uri!r} is not a gs:// URI")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return gcs_root / bucket / name
