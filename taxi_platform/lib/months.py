"""The calendar: one partition per month of trips, keyed by the month's first day."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from taxi_platform.lib.catalog import FIRST_PUBLISHED_MONTH


def monthly_partitions(last_month: date | None = None) -> dg.MonthlyPartitionsDefinition:
    """One partition per month from 2019-01, to ``last_month`` or, when None, open-ended:
    the TLC publishes new months, and the schedules and the release sensor ask for them
    as they come (a month not published yet fails with a clear 404 message)."""
    return dg.MonthlyPartitionsDefinition(
        start_date=FIRST_PUBLISHED_MONTH.isoformat(),
        end_date=next_month(last_month).isoformat() if last_month else None,
        fmt="%Y-%m-%d",
    )


def month_start(partition_key: str) -> date:
    """The first day of the month a partition key (``2019-01-01``) stands for."""
    try:
        parsed = datetime.strptime(partition_key, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(
            f"partition key {partition_key!r} is not a month's first day (YYYY-MM-01)"
        ) from None
    if parsed.day != 1:
        raise ValueError(f"partition key {partition_key!r} is not a month's first day")
    return parsed


def partition_key(month: date) -> str:
    return month.replace(day=1).isoformat()


def parse_month(text: str) -> date:
    """A month as users type it: ``2019-01`` or ``2019-01-01``."""
    for pattern in ("%Y-%m", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).date().replace(day=1)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a month (expected YYYY-MM)")


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def previous_month(month: date) -> date:
    """The first of the month before ``month``'s (December of the year before January)."""
    first = month.replace(day=1)
    return date(first.year - 1, 12, 1) if first.month == 1 else first.replace(month=first.month - 1)


def months_between(first: date, last: date) -> list[date]:
    """Every month from ``first`` to ``last``, both included."""
    months, current = [], first.replace(day=1)
    while current <= last:
        months.append(current)
        current = next_month(current)
    return months


def months_before(month: date, count: int) -> date:
    """The month ``count`` months before ``month``."""
    index = month.year * 12 + month.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)
