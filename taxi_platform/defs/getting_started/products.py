"""The tutorial's products pipeline: download, keep a few columns, average price per brand.

Values pass between the three assets through the default IO manager (pickled lists and
dicts), so the pipeline runs unchanged on ``dagster dev`` and on the deployed instance.
"""

from typing import Any

import dagster as dg
import duckdb
from pydantic import Field

from taxi_platform.resources.http_json_api import HttpJsonApi, JsonApiError

PRODUCTS_URL = "https://dummyjson.com/products"

# The tutorial's placeholder for a field a product does not have. It is kept as a value,
# so products without a brand are averaged together under the brand "N/A", as there.
MISSING = "N/A"

# Prices arrive as JSON numbers, or as MISSING when a product has none; the table holds
# text so both fit, and TRY_CAST turns MISSING into NULL, which AVG leaves out.
CREATE_PRODUCTS_TABLE = "create table products (brand varchar, price varchar)"
INSERT_PRODUCT = "insert into products (brand, price) values (?, ?)"
AVERAGE_PRICE_PER_BRAND = """
    select brand, round(avg(try_cast(price as double)), 2) as avg_price
    from products
    group by brand
    order by avg_price desc nulls last, brand
"""

SUMMARY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("brand", "string", description=f"{MISSING} for products without one"),
        dg.TableColumn("avg_price", "float", description="Mean price, rounded to cents"),
    ]
)


class ProductsFilterConfig(dg.Config):
    columns_to_keep: list[str] = Field(
        default=["brand", "price"],
        description=f"Product fields to keep; a product without one gets '{MISSING}'.",
    )


@dg.asset(key_prefix="getting_started", group_name="getting_started", kinds={"json"})
def products_raw(products_api: HttpJsonApi) -> dg.MaterializeResult:
    """The products API's answer as it came: ``{"products": [...], "total", "skip", "limit"}``.

    dummyjson pages its catalogue (30 products unless the URL asks for more with
    ``?limit=``); the page is kept whole so ``total`` shows what was left out.
    """
    try:
        payload = products_api.get_json()
    except JsonApiError as error:
        raise dg.Failure(description=str(error)) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("products"), list):
        raise dg.Failure(
            description=f"GET {products_api.url} answered JSON without a 'products' list"
        )
    return dg.MaterializeResult(
        value=payload,
        metadata={
            "url": dg.MetadataValue.url(products_api.url),
            "dagster/row_count": len(payload["products"]),
            "total": payload.get("total"),
        },
    )


@dg.asset(
    key_prefix="getting_started",
    group_name="getting_started",
    kinds={"python"},
    ins={"products_raw": dg.AssetIn(key_prefix="getting_started")},
)
def products_filtered(
    config: ProductsFilterConfig, products_raw: dict[str, Any]
) -> dg.MaterializeResult:
    """Every product reduced to ``columns_to_keep``, ``"N/A"`` where a product lacks one."""
    rows = [
        {column: product.get(column, MISSING) for column in config.columns_to_keep}
        for product in products_raw["products"]
    ]
    missing_by_column = {
        column: sum(1 for row in rows if row[column] == MISSING)
        for column in config.columns_to_keep
    }
    return dg.MaterializeResult(
        value=rows,
        metadata={
            "dagster/row_count": len(rows),
            "columns": dg.MetadataValue.json(config.columns_to_keep),
            "missing_values": dg.MetadataValue.json(missing_by_column),
        },
    )


@dg.asset(
    key_prefix="getting_started",
    group_name="getting_started",
    kinds={"duckdb"},
    ins={"products_filtered": dg.AssetIn(key_prefix="getting_started")},
)
def brand_price_summary(products_filtered: list[dict[str, Any]]) -> dg.MaterializeResult:
    """Average price per brand, rounded to cents, most expensive brand first.

    Computed by DuckDB as in the tutorial; the result is both the asset's value and a
    table in its materialization metadata, so the UI shows it without opening a file.
    """
    kept_columns = set(products_filtered[0]) if products_filtered else {"brand", "price"}
    if not {"brand", "price"} <= kept_columns:
        raise dg.Failure(
            description=(
                "brand_price_summary needs the columns brand and price, but products_filtered "
                f"kept only {sorted(kept_columns)}: add them to its columns_to_keep."
            ),
            allow_retries=False,
        )
    with duckdb.connect() as connection:
        connection.execute(CREATE_PRODUCTS_TABLE)
        if products_filtered:
            connection.executemany(
                INSERT_PRODUCT,
                [(_as_text(row["brand"]), _as_text(row["price"])) for row in products_filtered],
            )
        summary = [
            {"brand": brand, "avg_price": avg_price}
            for brand, avg_price in connection.execute(AVERAGE_PRICE_PER_BRAND).fetchall()
        ]
    return dg.MaterializeResult(
        value=summary,
        metadata={
            "summary": dg.MetadataValue.table(
                records=[dg.TableRecord(row) for row in summary], schema=SUMMARY_SCHEMA
            ),
            "dagster/column_schema": SUMMARY_SCHEMA,
            "dagster/row_count": len(summary),
        },
    )


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)
