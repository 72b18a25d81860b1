"""How full the run queue kept the machine: runs at once, and the wait between two runs.

The cores sit idle when fewer runs are active than the queue allows. Two numbers say
where that comes from: for how long 0, 1, 2, ... runs were active at once (from the
launch of the backfills to the end of the last run), and the *handoff*: how long after a
run of a taxi type ended the next run of that type, already queued, started (the
daemon's look at the queue, the run's process start and its imports). Both come from the
runs' own times as Dagster recorded them (``months``: ``created_at``, ``queued_seconds``,
``ended_at``), so a reprint of an old JSON computes them too.
"""

from __future__ import annotations

import statistics


def _started(month: dict) -> float:
    return month["created_at"] + month["queued_seconds"]


def runs_active_seconds(months: list[dict], launched_at: float) -> dict[str, float]:
    """Seconds during which exactly N runs were active, N as a string (a JSON key), from
    the launch to the last run's end; a run is active from its start to its end."""
    events = sorted(
        [(_started(month), 1) for month in months] + [(month["ended_at"], -1) for month in months]
    )
    spent: dict[str, float] = {}
    active, moment = 0, launched_at
    for time, change in events:
        if time > moment:
            spent[str(active)] = spent.get(str(active), 0.0) + (time - moment)
            moment = time
        active += change
    return {count: round(seconds, 1) for count, seconds in sorted(spent.items())}


def handoff_seconds(months: list[dict]) -> dict[str, float | int]:
    """From the end of a run to the start of the next run of its taxi type that was queued
    by then: the mean, the median and how many such handoffs there were."""
    gaps = []
    for taxi in {month["taxi"] for month in months}:
        runs = [month for month in months if month["taxi"] == taxi]
        ends = sorted(month["ended_at"] for month in runs)
        for month in runs:
            start = _started(month)
            freed = [end for end in ends if month["created_at"] <= end <= start]
            if freed:
                gaps.append(start - max(freed))
    if not gaps:
        return {"handoffs": 0, "mean": 0.0, "median": 0.0}
    return {
        "handoffs": len(gaps),
        "mean": round(statistics.mean(gaps), 2),
        "median": round(statistics.median(gaps), 2),
    }


def run_queue(months: list[dict], launched_at: float) -> dict:
    """``runs_active_seconds``, ``handoff_seconds`` and when the first run started."""
    if not months:
        return {}
    return {
        "first_run_started_seconds": round(min(map(_started, months)) - launched_at, 1),
        "runs_active_seconds": runs_active_seconds(months, launched_at),
        "handoff_seconds": handoff_seconds(months),
    }


def format_run_queue(queue: dict) -> str:
    active = ", ".join(
        f"{count}: {seconds:,.1f} s" for count, seconds in queue["runs_active_seconds"].items()
    )
    handoff = queue["handoff_seconds"]
    return (
        f"Run queue: first run started {queue['first_run_started_seconds']:,.1f} s after the "
        f"launch; runs active at once {active}; a queued run started {handoff['mean']:,.2f} s "
        f"(median {handoff['median']:,.2f} s) after a run of its taxi type ended "
        f"({handoff['handoffs']} handoffs)"
    )
