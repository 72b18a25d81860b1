"""The BigQuery statements: zoomcamp-compatible text, and what the local engine makes of it.

These tests need no server. They pin what the README promises about each statement: which
parts are checked by running them on DuckDB and which only by parsing them as BigQuery.
"""

import hashlib
from datetime import date
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from taxi_platform.lib.catalog import GREEN, TAXIS, YELLOW
from taxi_platform.lib.sql import bigquery as bq_sql
from taxi_platform.lib.warehouse.duckdb_standin import DuckDBWarehouse
from taxi_platform.lib.warehouse.transpile import to_duckdb

JANUARY = date(2019, 1, 1)
PROJECT, DATASET, BUCKET = "taxi-test", "zoomcamp", "trips-bucket"

# The DESIGN's reference row (green 2019-01), and its BigQuery id computed independently:
# CAST(TIMESTAMP AS STRING) in BigQuery prints `2019-01-01 00:10:16+00`.
REFERENCE_ROW = (
    "2,2019-01-01 00:10:16,2019-01-01 00:16:32,N,1,97,49,2,.86,6,0.5,0.5,0,0,,0.3,7.3,2,1,"
)
REFERENCE_ID = hashlib.md5(
    b"2" + b"2019-01-01 00:10:16+00" + b"2019-01-01 00:16:32+00" + b"97" + b"49"
).digest()


def test_statements_parse_as_bigquery_and_name_the_zoomcamp_tables():
    statements = {
        "final": bq_sql.create_final_table(GREEN, PROJECT, DATASET),
        "ext": bq_sql.create_external_table(GREEN, PROJECT, DATASET, BUCKET, JANUARY),
        "month": bq_sql.create_month_table(GREEN, PROJECT, DATASET, JANUARY),
        "merge": bq_sql.merge_month(GREEN, PROJECT, DATASET, JANUARY),
    }
    tables = {
        name: [
            f"{t.catalog}.{t.db}.{t.name}"
            for t in sqlglot.parse_one(sql, read="bigquery").find_all(exp.Table)
        ]
        for name, sql in statements.items()
    }
    assert tables["final"] == ["taxi-test.zoomcamp.green_tripdata"]
    assert tables["ext"] == ["taxi-test.zoomcamp.green_tripdata_2019_01_ext"]
    assert set(tables["month"]) == {
        "taxi-test.zoomcamp.green_tripdata_2019_01",
        "taxi-test.zoomcamp.green_tripdata_2019_01_ext",
    }
    assert "PARTITION BY DATE(lpep_pickup_datetime)" in statements["final"]


@pytest.mark.parametrize("taxi", TAXIS.values(), ids=lambda taxi: taxi.name)
def test_external_table_declares_catalogue_columns_over_the_months_object(taxi):
    sql = bq_sql.create_external_table(taxi, PROJECT, DATASET, BUCKET, JANUARY)
    statement = sqlglot.parse_one(sql, read="bigquery")
    columns = [(c.name, c.args["kind"].sql("bigquery")) for c in statement.this.expressions]
    expected_types = {"STRING": "STRING", "TIMESTAMP": "TIMESTAMP", "INTEGER": "INT64"}
    assert columns == [
        (column.name, expected_types.get(column.bigquery_type, column.bigquery_type))
        for column in taxi.all_columns
    ]
    properties = {p.name.lower(): p for p in statement.args["properties"].expressions}
    assert any(isinstance(p, exp.ExternalProperty) for p in properties.values())
    assert statement.args["replace"] is True
    assert f"uris = ['gs://{BUCKET}/{taxi.name}_tripdata_2019-01.csv']" in sql
    assert "format = 'CSV'" in sql and "skip_leading_rows = 1" in sql
    # A course month's file lacks the optional trailing columns: they read as NULL.
    assert "allow_jagged_rows = TRUE" in sql


def test_id_is_md5_bytes_over_the_five_zoomcamp_columns():
    expression = bq_sql.unique_row_id_expression(GREEN)
    parsed = sqlglot.parse_one(expression, read="bigquery")
    assert isinstance(parsed, exp.MD5Digest)  # BigQuery MD5: BYTES, not hex text
    casts = [cast.this.name for cast in parsed.find_all(exp.Cast)]
    assert casts == list(GREEN.bigquery_id_columns)
    assert "fare_amount" not in expression and "trip_distance" not in expression


def test_sqlglot_alone_would_make_the_external_table_an_empty_native_table():
    # Why warehouse.py turns it into a view: the plain transpilation drops EXTERNAL.
    sql = bq_sql.create_external_table(GREEN, PROJECT, DATASET, BUCKET, JANUARY)
    plain = sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]
    assert plain.startswith('CREATE OR REPLACE TABLE "taxi-test"')
    local = to_duckdb(sql, Path("/srv/gcs"))
    assert local.startswith(
        'CREATE OR REPLACE VIEW "taxi-test"."zoomcamp"."green_tripdata_2019_01_ext"'
    )
    assert "read_csv(['/srv/gcs/trips-bucket/green_tripdata_2019-01.csv']" in local
    assert "skip = 1" in local and "'trip_distance': 'DECIMAL(38, 9)'" in local
    assert "'lpep_pickup_datetime': 'TIMESTAMPTZ'" in local


def test_local_engine_keeps_bigquery_numeric_precision_and_drops_only_storage_options():
    local = to_duckdb(bq_sql.create_final_table(YELLOW, PROJECT, DATASET), Path("/srv"))
    assert "PARTITION" not in local
    assert "unique_row_id BLOB" in local
    assert "fare_amount DECIMAL(38, 9)" in local
    assert "tpep_pickup_datetime TIMESTAMPTZ" in local


def test_reference_row_gets_the_bigquery_id(tmp_path: Path):
    object_path = tmp_path / "gcs" / BUCKET / GREEN.csv_name(JANUARY)
    object_path.parent.mkdir(parents=True)
    object_path.write_text(",".join(GREEN.header) + "\n" + REFERENCE_ROW + "\n")
    warehouse = DuckDBWarehouse(tmp_path / "bq.duckdb", tmp_path / "gcs", PROJECT)
    warehouse.ensure_dataset(DATASET, "US")
    warehouse.run(bq_sql.create_external_table(GREEN, PROJECT, DATASET, BUCKET, JANUARY))
    warehouse.run(bq_sql.create_month_table(GREEN, PROJECT, DATASET, JANUARY))
    month = f"`{PROJECT}.{DATASET}.green_tripdata_2019_01`"
    ((row_id, filename, pickup_text, distance),) = warehouse.rows(
        f"SELECT unique_row_id, filename, CAST(lpep_pickup_datetime AS STRING), "
        f"CAST(trip_distance AS STRING) FROM {month}"
    )
    assert bytes(row_id) == REFERENCE_ID
    assert filename == "green_tripdata_2019-01.csv"
    assert pickup_text == "2019-01-01 00:10:16+00"  # BigQuery's text for a TIMESTAMP
    assert distance == "0.860000000"  # NUMERIC kept exact (DuckDB pads; BigQuery prints 0.86)


def test_local_database_is_one_project_catalog(tmp_path: Path):
    warehouse = DuckDBWarehouse(tmp_path / "bq.duckdb", tmp_path / "gcs", PROJECT)
    assert warehouse.ensure_dataset(DATASET, "US").created is True
    assert warehouse.ensure_dataset(DATASET, "US").created is False
    with duckdb.connect(str(tmp_path / "bq.duckdb")) as connection:
        schemas = {
            row[0]
            for row in connection.execute("select schema_name from duckdb_schemas()").fetchall()
        }
    assert DATASET in schemas


def test_names_outside_googles_rules_never_reach_a_statement():
    with pytest.raises(ValueError, match="not a valid dataset id"):
        bq_sql.create_final_table(GREEN, PROJECT, "zoomcamp`; DROP TABLE x; --")
    with pytest.raises(ValueError, match="not a valid bucket name"):
        bq_sql.gcs_uri("Bad'Bucket", GREEN, JANUARY)
