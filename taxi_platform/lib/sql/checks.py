"""The statements behind the monthly asset checks on the final Postgres tables.

A month's rows are found by ``filename`` (the zoomcamp column), because the staged file
is deleted once the month is merged. Every statement takes the file name as a parameter
(``%(filename)s``); identifiers come from the catalogue.
"""

from __future__ import annotations

from psycopg import sql

from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.sql.postgres import final_table, pickup_identifier, relation_exists


def table_exists(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    return relation_exists(f"{final_schema}.{taxi.table}")


def month_summary(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """What three of the month's checks need, in one pass over its rows.

    The rows, those without a ``unique_row_id``, the distinct ids (their difference from
    the rows is the file's own duplicates), those picked up outside
    ``[%(month_start)s, %(month_end)s)``, and the earliest and latest pickup (to show how
    far off they are). With a statement each, the checks read a yellow month's 7M rows
    three times (``bench.history``: the checks cost about as much as the merge).
    """
    pickup = pickup_identifier(taxi)
    return sql.SQL(
        "select count(*), count(*) filter (where unique_row_id is null), "
        "count(distinct unique_row_id), count(*) filter (where {pickup} < %(month_start)s "
        "or {pickup} >= %(month_end)s or {pickup} is null), min({pickup}), max({pickup}) "
        "from {final} where filename = %(filename)s"
    ).format(pickup=pickup, final=final_table(taxi, final_schema))


def ids_shared_with_other_files(taxi: TaxiType, final_schema: str = "public") -> sql.Composable:
    """Distinct ids of the month that the final table also holds under another file name.

    The merge inserts only ids the table does not hold yet, so a correct load leaves none;
    an id found under two names means two merges inserted it (e.g. two concurrent merges
    of overlapping months, each blind to the other).

    Equal ids have equal pickups, so only the other files' rows at the month's pickups can
    share one, as in the merge (``postgres.collect_rows_at_month_pickups``): those inside
    the month, those at the exact pickups of the month's few out-of-month rows, and those
    without a pickup. Each of them, usually a handful, is looked up among the month's rows
    through the pickup index. Probing the index once per row of the month instead cost
    28-45 s for a 7M-row month (``bench.history``), and finding the month's rows without
    the BRIN read the whole table.

    The month's pages are read once (``one_pass``): the pickup btree's range of the month
    and the ``filename`` BRIN's pages of the file, OR-ed into one bitmap, give both the
    other files' rows inside the month and the file's own out-of-month pickups. Read
    separately, the two passes cost 2.8 s for a yellow month of 7.9M rows, against 1.6 s.

    The lookups are ``lateral`` with ``offset 0`` so that the plan does not depend on
    statistics: without the fence the planner may turn the lookups at the edge pickups
    into a join against the whole table, and did once the table had statistics (10.9 s
    for that month). The merges keep autovacuum from finishing an ``analyze`` of a growing
    table (each merge's BRIN summary cancels it), so that plan came and went with luck.
    Parameters: ``filename``, ``month_start``, ``month_end``.
    """
    pickup = pickup_identifier(taxi)
    final = final_table(taxi, final_schema)
    return sql.SQL(
        "with one_pass as materialized (select unique_row_id, {pickup} as pickup, "
        "filename is not distinct from %(filename)s as in_file from {final} "
        "where ({pickup} >= %(month_start)s and {pickup} < %(month_end)s "
        "and filename is distinct from %(filename)s) or (filename = %(filename)s "
        "and ({pickup} < %(month_start)s or {pickup} >= %(month_end)s))) "
        "select count(distinct other.unique_row_id) from ("
        "select unique_row_id, pickup from one_pass where not in_file "
        "union all select at_edge.unique_row_id, at_edge.{pickup} from ("
        "select distinct pickup from one_pass where in_file) as edge "
        "cross join lateral (select unique_row_id, {pickup} from {final} "
        "where {pickup} = edge.pickup and filename is distinct from %(filename)s offset 0) "
        "as at_edge "
        "union all select unique_row_id, null from {final} "
        "where {pickup} is null and filename is distinct from %(filename)s"
        ") as other cross join lateral (select 1 from {final} as month "
        "where month.filename = %(filename)s and month.unique_row_id = other.unique_row_id "
        "and (month.{pickup} = other.pickup "
        "or (month.{pickup} is null and other.pickup is null)) limit 1) as in_month"
    ).format(final=final, pickup=pickup)
