"""``bench.history_queue``: how many runs were active at once, and the wait between two.

Runs as ``bench.history`` reads them back from Dagster (created, queued for, ended), two
per taxi type, laid out so that every interval and handoff is known.
"""

from __future__ import annotations

import pytest

from bench.history_queue import handoff_seconds, run_queue, runs_active_seconds

LAUNCHED_AT = 1_000.0


def run(taxi: str, started: float, ended: float) -> dict:
    """A run created right after the launch, started and ended at these offsets."""
    created = LAUNCHED_AT + 1
    return {
        "taxi": taxi,
        "created_at": created,
        "queued_seconds": LAUNCHED_AT + started - created,
        "ended_at": LAUNCHED_AT + ended,
    }


# green runs 10-20 then 25-30 (handoff 5 s); yellow 15-40 then 42-50 (handoff 2 s).
MONTHS = [
    run("green", 10, 20),
    run("green", 25, 30),
    run("yellow", 15, 40),
    run("yellow", 42, 50),
]


def test_seconds_with_each_number_of_runs_active_cover_the_backfill() -> None:
    active = runs_active_seconds(MONTHS, LAUNCHED_AT)

    # 0-10 none, 10-15 one, 15-20 two, 20-25 one, 25-30 two, 30-40 one, 40-42 none, 42-50 one.
    assert active == {"0": 12.0, "1": 28.0, "2": 10.0}
    assert sum(active.values()) == 50.0


def test_a_handoff_is_counted_only_for_a_run_that_waited_for_one_of_its_type() -> None:
    # The first run of each type started before any run of its type ended: no handoff.
    assert handoff_seconds(MONTHS) == {"handoffs": 2, "mean": 3.5, "median": 3.5}


def test_a_run_that_ended_before_the_next_was_created_hands_nothing_off() -> None:
    later = {**run("green", 60, 70), "created_at": LAUNCHED_AT + 55}
    later["queued_seconds"] = LAUNCHED_AT + 60 - later["created_at"]

    # Green's runs ended at 20 and 30, before the month was queued at 55: nothing waited.
    assert handoff_seconds([*MONTHS, later])["handoffs"] == 2


@pytest.mark.parametrize("months", [[], MONTHS])
def test_the_summary_names_the_first_start(months: list[dict]) -> None:
    queue = run_queue(months, LAUNCHED_AT)

    if not months:
        assert queue == {}
    else:
        assert queue["first_run_started_seconds"] == 10.0
        assert queue["handoff_seconds"]["handoffs"] == 2
