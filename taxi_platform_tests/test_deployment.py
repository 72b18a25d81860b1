"""The Compose stack's processes, run for real on this machine (no Docker engine needed).

Embedded Postgres stands in for `dagster_postgres` and `pgdatabase`; a plain HTTP server
for the GitHub releases. The code server, webserver and daemon are the compose file's own
commands with the repository's `dagster.yaml` and `deploy/workspace.yaml`, so the test
proves that configuration: the webserver finds the code location over gRPC, the
QueuedRunCoordinator queues a launched run, the daemon dequeues it, the run (a process of
the code server) loads a month, and a failing run leaves the webserver and daemon serving.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
import requests

from taxi_platform.lib.catalog import TAXIS
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.generate import write_month
from taxi_platform_tests.support.stack import (
    BIN_DIR,
    LOCATION_NAME,
    DagsterStack,
    platform_stack,
    wait_until,
)

GREEN = TAXIS["green"]
LOADED_MONTH = date(2019, 1, 1)
UNPUBLISHED_MONTH = date(2019, 2, 1)
ROWS = 300
GREEN_ASSETS = [
    ["raw", "green_tripdata_csv"],
    ["postgres", "green_tripdata_staging"],
    ["postgres", "green_tripdata"],
]

ASSETS_QUERY = """
query Assets {
  assetNodes {
    assetKey { path }
    isPartitioned
  }
}
"""

LAUNCH_MUTATION = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      tags { key value }
      eventConnection {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey error { message } }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@pytest.fixture
def stack(
    scratch_root: Path, postgres_server: EmbeddedPostgres, database_url: str
) -> Iterator[DagsterStack]:
    """Mirror, code server, webserver and daemon, configured as docker-compose.yaml does."""
    root = scratch_root / f"deployment_{free_port()}"
    root.mkdir()
    mirror_folder = root / "mirror"
    write_month(GREEN, LOADED_MONTH, ROWS, mirror_folder, seed=5)
    with platform_stack(root, postgres_server, database_url, mirror_folder) as running:
        yield running
    assert_stopped(running)


def assert_stopped(stack: DagsterStack) -> None:
    """Stopping leaves no process of the stack and nothing answering on its ports."""
    for process in stack.processes:
        assert process.popen.returncode is not None, f"{process.name} still running"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.webserver_url}/server_info", timeout=5)
    port = stack.env["DAGSTER_CODE_SERVER_PORT"]
    probe = stack.run_cli([str(BIN_DIR / "dagster"), "api", "grpc-health-check", "--port", port])
    assert probe.returncode != 0, "the code server's port still answers"


def launch_month(stack: DagsterStack, month_start: date) -> str:
    params = {
        "selector": {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": path} for path in GREEN_ASSETS],
        },
        "executionMetadata": {
            "tags": [{"key": "dagster/partition", "value": month_start.isoformat()}]
        },
    }
    result = stack.graphql(LAUNCH_MUTATION, {"executionParams": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    # The QueuedRunCoordinator of dagster.yaml: launching only queues; the daemon starts it.
    assert result["run"]["status"] == "QUEUED"
    return result["run"]["runId"]


def run_state(stack: DagsterStack, run_id: str) -> dict:
    return stack.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]


def failures(run: dict) -> list:
    """What went wrong in a run, as the UI would show it."""
    return [
        event
        for event in run["eventConnection"]["events"]
        if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
    ]


def test_stack_lists_assets_and_loads_a_month_through_the_daemon(
    stack: DagsterStack, database_url: str
) -> None:
    nodes = stack.graphql(ASSETS_QUERY)["assetNodes"]
    listed = {"/".join(node["assetKey"]["path"]): node["isPartitioned"] for node in nodes}
    for taxi in ("green", "yellow"):
        for key in (
            f"raw/{taxi}_tripdata_csv",
            f"postgres/{taxi}_tripdata_staging",
            f"postgres/{taxi}_tripdata",
        ):
            assert listed.get(key) is True, f"{key} missing or not partitioned: {listed}"

    loaded_run = launch_month(stack, LOADED_MONTH)
    failing_run = launch_month(stack, UNPUBLISHED_MONTH)

    finished = wait_until(
        lambda: (
            all(run_state(stack, run)["status"] in FINISHED for run in (loaded_run, failing_run))
            and {run: run_state(stack, run) for run in (loaded_run, failing_run)}
        ),
        timeout=120,
        what="both runs to finish",
        watch=stack.processes,
        interval=0.5,
    )

    loaded = finished[loaded_run]
    assert loaded["status"] == "SUCCESS", failures(loaded)
    assert {"key": "dagster/partition", "value": "2019-01-01"} in loaded["tags"]
    event_types = [event["__typename"] for event in loaded["eventConnection"]["events"]]
    # Queued by the webserver, dequeued and launched by the daemon (Dagster 1.13 records no
    # dequeue event: the daemon's own log says it launched the queued runs).
    assert event_types.index("RunEnqueuedEvent") < event_types.index("RunStartingEvent")
    daemon = next(process for process in stack.processes if process.name == "daemon")
    assert re.search(
        r"QueuedRunCoordinatorDaemon\S* - \S*INFO\S* - Launched [12] run", daemon.log_tail(200_000)
    )

    with psycopg.connect(database_url) as connection:
        rows, files = connection.execute(
            "select count(*), count(distinct filename) from public.green_tripdata"
        ).fetchone()
    assert (rows, files) == (ROWS, 1)

    # A month that is not published fails its run; the run was a process of the code
    # server, so the webserver and the daemon carry on.
    assert finished[failing_run]["status"] == "FAILURE"
    for process in stack.processes:
        process.check_alive()
    stack.wait_for_location_loaded(timeout=10)

    # The database passwords travel in the environment, never into the processes' logs.
    for url in (stack.env["DAGSTER_POSTGRES_URL"], database_url):
        password = psycopg.conninfo.conninfo_to_dict(url.replace("+psycopg2", ""))["password"]
        assert password not in stack.all_logs()
    assert stack.run_cli([str(BIN_DIR / "dagster-daemon"), "liveness-check"]).returncode == 0
