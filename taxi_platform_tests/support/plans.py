"""Reading ``explain (analyze, format json)`` plans: which nodes read how many rows.

The plan tests assert that a statement reads a month's rows once and looks the rest up,
whatever the planner prefers; these count what each node read.
"""

from __future__ import annotations

from collections.abc import Iterator


def plan_nodes(plan: dict) -> Iterator[dict]:
    """The plan's node and every node below it."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def rows_read(node: dict) -> float:
    """Rows a node read over all its loops: those it returned and those it threw away."""
    per_loop = (
        node["Actual Rows"]
        + node.get("Rows Removed by Filter", 0)
        + node.get("Rows Removed by Index Recheck", 0)
    )
    return per_loop * node["Actual Loops"]


def large_reads(plan: dict, relation: str, at_least: float) -> list[dict]:
    """The nodes that read at least ``at_least`` rows of ``relation``."""
    return [
        node
        for node in plan_nodes(plan)
        if node.get("Relation Name") == relation and rows_read(node) >= at_least
    ]
