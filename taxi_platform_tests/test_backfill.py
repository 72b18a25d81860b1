"""``taxi-platform backfill`` against a real instance: webserver, daemon, code server, queue.

The stack is the Compose file's three processes on the repository's ``dagster.yaml``
(with the per-taxi run limit lowered to 1, so that any overlap of two green runs breaks
the limit), embedded Postgres for Dagster's storage and the taxi data, and a release
mirror missing one of the months asked for.
"""

import argparse
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
import yaml

from taxi_platform.lib.catalog import GREEN
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.backfill import (
    WebserverClient,
    add_backfill_command,
    backfill_state,
    command_backfill,
    find_job,
)
from taxi_platform.tools.generate import write_month, write_zone_lookup
from taxi_platform_tests.support.stack import (
    DagsterStack,
    platform_stack,
    wait_until,
)

PUBLISHED = [date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)]
UNPUBLISHED = date(2019, 4, 1)
ROWS = 200
TAXI_RUN_LIMIT = 1

RUNS_QUERY = """
query BackfillRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results {
        runId status startTime endTime
        tags { key value }
        stepStats { stepKey }
        assetCheckSelection { name }
      }
    }
  }
}
"""


@pytest.fixture
def stack(
    scratch_root: Path, postgres_server: EmbeddedPostgres, database_url: str
) -> Iterator[DagsterStack]:
    root = scratch_root / f"backfill_{free_port()}"
    root.mkdir()
    mirror_folder = root / "mirror"
    for month in PUBLISHED:
        write_month(GREEN, month, ROWS, mirror_folder, seed=month.month)
    write_zone_lookup(mirror_folder)
    with platform_stack(
        root, postgres_server, database_url, mirror_folder, configure=lower_taxi_run_limit
    ) as running:
        yield running


def lower_taxi_run_limit(stack: DagsterStack) -> None:
    """The instance's own dagster.yaml, with the per-taxi run limit set to TAXI_RUN_LIMIT."""
    instance_yaml = stack.home / "dagster.yaml"
    settings = yaml.safe_load(instance_yaml.read_text())
    for limit in settings["concurrency"]["runs"]["tag_concurrency_limits"]:
        if limit["key"] == "taxi":
            limit["limit"] = TAXI_RUN_LIMIT
    instance_yaml.write_text(yaml.safe_dump(settings))


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taxi-platform")
    add_backfill_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["backfill", *argv])


SUMMARY_TRIGGER = "green_monthly_summary_sensor"
SUMMARY_STEP = "reports__green_monthly_summary"
SENSOR_TICKS_QUERY = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 1) { timestamp status } } }
  }
}
"""


def summary_sensor_ticked_after(stack: DagsterStack, moment: float) -> bool:
    """Whether the summary sensor's latest tick ended (skipped or requesting) after ``moment``."""
    job = find_job(WebserverClient(stack.webserver_url), "green_postgres")
    selector = {
        "repositoryName": job.repository_name,
        "repositoryLocationName": job.location_name,
        "sensorName": SUMMARY_TRIGGER,
    }
    ticks = stack.graphql(SENSOR_TICKS_QUERY, {"selector": selector})["sensorOrError"]
    return any(
        tick["timestamp"] > moment and tick["status"] in ("SKIPPED", "SUCCESS")
        for tick in ticks["sensorState"]["ticks"]
    )


def backfill_runs(stack: DagsterStack, backfill_id: str) -> list[dict]:
    variables = {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}}
    return stack.graphql(RUNS_QUERY, variables)["runsOrError"]["results"]


def tags_of(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def most_at_once(runs: list[dict]) -> int:
    """The largest number of runs in progress at one instant, from their start/end times."""
    edges = sorted(
        [(run["startTime"], 1) for run in runs] + [(run["endTime"], -1) for run in runs],
        key=lambda edge: (edge[0], edge[1]),  # an end at the same instant counts first
    )
    current = peak = 0
    for _, change in edges:
        current += change
        peak = max(peak, current)
    return peak


def test_cli_backfill_loads_each_month_in_its_own_tagged_run_within_the_limits(
    stack: DagsterStack, database_url: str
) -> None:
    lines: list[str] = []
    args = cli_args(
        "--taxi", "green", "--from", "2019-01", "--to", "2019-04",
        "--url", stack.webserver_url, "--wait", "--poll-seconds", "1", "--timeout", "400",
    )  # fmt: skip

    exit_code = command_backfill(args, echo=lines.append)

    output = "\n".join(lines)
    backfill_id = output.split("launched backfill ", 1)[1].split(":", 1)[0]
    runs = backfill_runs(stack, backfill_id)
    by_month = {tags_of(run)["dagster/partition"]: run for run in runs}
    # The unpublished month fails alone, listed with the source's answer; the others load.
    assert exit_code == 1, output
    assert {month: run["status"] for month, run in by_month.items()} == {
        "2019-01-01": "SUCCESS",
        "2019-02-01": "SUCCESS",
        "2019-03-01": "SUCCESS",
        "2019-04-01": "FAILURE",
    }, output
    assert "3 of 4 months succeeded, 1 failed" in output
    assert "2019-04  FAILURE" in output
    assert "not published by the course source" in output
    assert f"--retry-failed {backfill_id}" in output
    for month in ("2019-01", "2019-02", "2019-03"):
        assert f"{month}  SUCCESS" in output  # progress, month by month
    for run in runs:
        tags = tags_of(run)
        assert tags["taxi"] == "green"
        assert tags["backfill"] == "true"
    for run in (by_month[f"{month:%Y-%m-%d}"] for month in PUBLISHED):
        # The month's checks and its summary report ran in the month's own run.
        steps = [step["stepKey"] for step in run["stepStats"]]
        assert any("header_matches_catalogue" in step for step in steps), (steps, run)
        assert SUMMARY_STEP in steps, (steps, run)
    # dagster.yaml's queue: never two green runs at once.
    assert len(runs) == 4
    assert most_at_once(runs) == TAXI_RUN_LIMIT
    with psycopg.connect(database_url) as connection:
        loaded = dict(
            connection.execute(
                "select filename, count(*) from green_tripdata group by filename"
            ).fetchall()
        )
    assert loaded == {GREEN.csv_name(month): ROWS for month in PUBLISHED}

    # Asset-backfill runs get `file` from the backfill_run_tags sensor once started.
    wait_until(
        lambda: all("file" in tags_of(run) for run in backfill_runs(stack, backfill_id)),
        timeout=60,
        what="the file tags on the backfill's runs",
        watch=stack.processes,
    )
    files = {
        tags_of(run)["dagster/partition"]: tags_of(run)["file"]
        for run in backfill_runs(stack, backfill_id)
    }
    assert files["2019-02-01"] == "green_tripdata_2019-02.csv"

    with psycopg.connect(database_url) as connection:
        summarized = dict(
            connection.execute(
                "select month, sum(trips) from reports.green_monthly_summary group by month"
            ).fetchall()
        )
    assert set(summarized) == set(PUBLISHED) and all(summarized.values()), summarized
    # The summary sensor, which summarizes a final table materialized alone, reads the
    # backfill's materializations at its next tick and leaves them: their runs built the
    # summary.
    finished = max(run["endTime"] for run in runs)
    wait_until(
        lambda: summary_sensor_ticked_after(stack, finished),
        timeout=120,
        what="a tick of the summary sensor after the backfill",
        watch=stack.processes,
    )
    sensor_runs = stack.graphql(
        RUNS_QUERY, {"filter": {"tags": [{"key": "trigger", "value": SUMMARY_TRIGGER}]}}
    )["runsOrError"]["results"]
    assert sensor_runs == []

    # The failed month is retried alone, as a new backfill of Dagster's own lineage.
    retry_lines: list[str] = []
    assert (
        command_backfill(
            cli_args("--retry-failed", backfill_id, "--url", stack.webserver_url),
            echo=retry_lines.append,
        )
        == 0
    )
    retry_id = retry_lines[0].rsplit(" ", 1)[1]
    retry = backfill_state(WebserverClient(stack.webserver_url), retry_id)
    assert list(retry.months) == ["2019-04-01"]
    assert retry.tags["taxi"] == "green"
    assert retry.tags["dagster/parent_backfill_id"] == backfill_id
