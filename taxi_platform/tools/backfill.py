"""``taxi-platform backfill``: a real Dagster asset backfill of a range of months.

Dagster 1.13 has no command for an asset backfill (``dagster job backfill`` makes a job
backfill; ``dagster asset materialize --partition-range`` runs in-process as one run). The
webserver's GraphQL mutation ``launchPartitionBackfill`` with an ``assetSelection`` is what
the UI's own "Launch backfill" sends: the backfill is stored on the instance, shows in the
UI, and the daemon submits one run per month through the run queue, so ``dagster.yaml``'s
limits apply and a failed month does not stop the others.

Tags. The backfill's ``tags`` go on every run it creates: ``taxi`` (which the queue's
per-taxi limit needs at launch), ``backfill`` (the label zoomcamp users add by hand) and
``target``. An asset backfill's runs get no per-month tags from our jobs (Dagster builds
them from the assets, not from a job's ``PartitionedConfig``), so the ``file`` tag cannot
be set at launch; each run has ``dagster/partition`` from the start, and the
``backfill_run_tags`` sensor adds ``file`` once the run starts.

The selection is read from the code location (the assets of the ``{taxi}_{target}`` job),
so the command never disagrees with what the definitions say a target loads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import requests

from taxi_platform.lib.catalog import TAXIS
from taxi_platform.lib.months import months_between, parse_month, partition_key

DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"
TARGET_CHOICES = ("postgres", "gcp", "all")
PARTITION_TAG = "dagster/partition"
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


class BackfillError(Exception):
    """The webserver refused or could not be reached; the message says what to do."""


# -- GraphQL ---------------------------------------------------------------------------------

REPOSITORIES_QUERY = """
query TaxiRepositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } pipelines { name } }
    }
    ... on PythonError { message }
  }
}
"""

JOB_ASSETS_QUERY = """
query TaxiJobAssets($pipeline: PipelineSelector!) {
  assetNodes(pipeline: $pipeline) { assetKey { path } }
}
"""

LAUNCH_MUTATION = """
mutation TaxiLaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""

REEXECUTE_MUTATION = """
mutation TaxiRetryBackfill($params: ReexecutionParams!) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query TaxiBackfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      title
      partitionNames
      tags { key value }
      error { message }
      runs(limit: 10000) { runId status creationTime tags { key value } }
    }
    ... on Error { message }
  }
}
"""

RUN_FAILURE_QUERY = """
query TaxiRunFailure($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      eventConnection(limit: 10000) {
        events {
          __typename
          ... on ExecutionStepFailureEvent {
            stepKey
            message
            error { message }
            failureMetadata { description }
          }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""


class WebserverClient:
    """The few GraphQL calls the command needs, against ``{url}/graphql``."""

    def __init__(self, url: str, timeout_seconds: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = requests.post(
                f"{self.url}/graphql",
                json={"query": query, "variables": variables or {}},
                timeout=self.timeout_seconds,
            )
        except requests.ConnectionError:
            raise BackfillError(
                f"no Dagster webserver answers at {self.url}; start the platform "
                "(`taxi-platform up`) or pass --url / set DAGSTER_WEBSERVER_URL"
            ) from None
        try:
            body = response.json()
        except ValueError:
            raise BackfillError(
                f"{self.url}/graphql answered HTTP {response.status_code}, not GraphQL"
            ) from None
        if body.get("errors"):
            messages = "; ".join(error.get("message", "?") for error in body["errors"])
            raise BackfillError(f"GraphQL error from {self.url}: {messages}")
        return body["data"]

    def ui_link(self, backfill_id: str) -> str:
        return f"{self.url}/runs/b/{backfill_id}"  # the Overview tab (Overview/Runs/Timeline)


@dataclass(frozen=True)
class JobLocation:
    job_name: str
    repository_name: str
    location_name: str

    def selector(self) -> dict[str, str]:
        return {
            "pipelineName": self.job_name,
            "repositoryName": self.repository_name,
            "repositoryLocationName": self.location_name,
        }


def find_job(client: WebserverClient, job_name: str) -> JobLocation:
    result = client.execute(REPOSITORIES_QUERY)["repositoriesOrError"]
    if result["__typename"] != "RepositoryConnection":
        raise BackfillError(f"the webserver cannot list code locations: {result.get('message')}")
    for repository in result["nodes"]:
        if any(job["name"] == job_name for job in repository["pipelines"]):
            return JobLocation(job_name, repository["name"], repository["location"]["name"])
    raise BackfillError(
        f"no job {job_name!r} in the webserver's code locations; is taxi_platform loaded "
        "(Deployment page of the UI) and up to date?"
    )


def job_asset_keys(client: WebserverClient, job_name: str) -> list[list[str]]:
    """The asset keys (paths) the job materializes, as the code location defines them."""
    job = find_job(client, job_name)
    nodes = client.execute(JOB_ASSETS_QUERY, {"pipeline": job.selector()})["assetNodes"]
    return [node["assetKey"]["path"] for node in nodes]


def _launched_id(result: dict[str, Any], what: str) -> str:
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"{what} refused ({result['__typename']}): {result.get('message')}")
    return result["backfillId"]


def launch_backfill(
    client: WebserverClient,
    asset_keys: Iterable[list[str]],
    months: Iterable[date],
    tags: dict[str, str],
    title: str,
) -> str:
    """Launch an asset backfill of ``asset_keys`` for ``months``; the backfill id."""
    params = {
        "assetSelection": [{"path": path} for path in asset_keys],
        "partitionNames": [partition_key(month) for month in months],
        "tags": [{"key": key, "value": value} for key, value in tags.items()],
        "title": title,
    }
    result = client.execute(LAUNCH_MUTATION, {"params": params})["launchPartitionBackfill"]
    return _launched_id(result, "the backfill")


def retry_failed(client: WebserverClient, backfill_id: str) -> str:
    """Dagster's "re-execute from failure" of a finished backfill: a new backfill of the
    months not materialized (linked to its parent by ``dagster/parent_backfill_id``)."""
    params = {"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}
    result = client.execute(REEXECUTE_MUTATION, {"params": params})["reexecutePartitionBackfill"]
    return _launched_id(result, f"the retry of backfill {backfill_id}")


# -- progress --------------------------------------------------------------------------------


@dataclass
class MonthState:
    partition: str
    status: str = "WAITING"  # no run yet
    run_id: str | None = None
    runs: int = 0


@dataclass
class BackfillState:
    backfill_id: str
    status: str
    title: str | None
    tags: dict[str, str]
    months: dict[str, MonthState] = field(default_factory=dict)
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_BACKFILL and all(
            month.status in FINISHED_RUN | {"WAITING"} for month in self.months.values()
        )

    def count(self, status: str) -> int:
        return sum(1 for month in self.months.values() if month.status == status)

    @property
    def failed_months(self) -> list[MonthState]:
        return [m for m in self.months.values() if m.status in {"FAILURE", "CANCELED"}]


def backfill_state(client: WebserverClient, backfill_id: str) -> BackfillState:
    result = client.execute(BACKFILL_QUERY, {"backfillId": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise BackfillError(
            f"backfill {backfill_id}: {result.get('message', result['__typename'])}"
        )
    state = BackfillState(
        backfill_id=backfill_id,
        status=result["status"],
        title=result.get("title"),
        tags={tag["key"]: tag["value"] for tag in result["tags"]},
        error=(result.get("error") or {}).get("message"),
    )
    for name in result.get("partitionNames") or []:
        state.months[name] = MonthState(name)
    # Oldest first, so the newest run of a month (a retry) decides its status.
    for run in sorted(result["runs"], key=lambda run: run["creationTime"]):
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        name = tags.get(PARTITION_TAG)
        if name is None:
            continue
        month = state.months.setdefault(name, MonthState(name))
        month.status, month.run_id, month.runs = run["status"], run["runId"], month.runs + 1
    return state


def run_failure(client: WebserverClient, run_id: str) -> str:
    """The reason a run failed, in the words of the step that failed (our ``Failure``s)."""
    result = client.execute(RUN_FAILURE_QUERY, {"runId": run_id})["runOrError"]
    if result["__typename"] != "Run":
        return f"run {run_id} not found"
    reasons = []
    for event in result["eventConnection"]["events"]:
        if event["__typename"] == "ExecutionStepFailureEvent":
            description = (event.get("failureMetadata") or {}).get("description")
            error = (event.get("error") or {}).get("message") or event["message"]
            reasons.append(f"{event['stepKey']}: {(description or error).strip()}")
    if not reasons:
        reasons = [
            event["message"]
            for event in result["eventConnection"]["events"]
            if event["__typename"] == "RunFailureEvent"
        ]
    return "\n      ".join(reasons) or "no failure event recorded (canceled?)"


def wait_for_backfill(
    client: WebserverClient,
    backfill_id: str,
    poll_seconds: float = 5.0,
    timeout_seconds: float | None = None,
    echo: Callable[[str], None] = print,
) -> BackfillState:
    """Poll until the backfill and its runs are finished, echoing each month's changes."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    shown: dict[str, str] = {}
    while True:
        state = backfill_state(client, backfill_id)
        for name, month in sorted(state.months.items()):
            if shown.get(name) != month.status:
                shown[name] = month.status
                run = f"  run {month.run_id[:8]}" if month.run_id else ""
                echo(f"  {name[:7]}  {month.status:<9}{run}")
        if state.finished:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise BackfillError(
                f"backfill {backfill_id} still {state.status} after {timeout_seconds:.0f}s; "
                f"it goes on in Dagster: {client.ui_link(backfill_id)}"
            )
        time.sleep(poll_seconds)


def report(client: WebserverClient, state: BackfillState, echo: Callable[[str], None]) -> int:
    """The summary line, then each failed month with its error; exit code 1 on failures."""
    total = len(state.months)
    echo(
        f"backfill {state.backfill_id} {state.status}: {state.count('SUCCESS')} of {total} "
        f"months succeeded, {len(state.failed_months)} failed"
    )
    if state.error:
        echo(f"  backfill error: {state.error.strip()}")
    for month in state.failed_months:
        reason = run_failure(client, month.run_id) if month.run_id else "no run"
        echo(f"  {month.partition[:7]}  {month.status}  run {month.run_id}\n      {reason}")
    if state.failed_months:
        months = ",".join(m.partition[:7] for m in state.failed_months)
        echo(
            f"retry the failed months alone: taxi-platform backfill --retry-failed "
            f"{state.backfill_id}   (or: --months {months} with the same --taxi/--target)"
        )
        return 1
    return 0 if state.status in {"COMPLETED", "COMPLETED_SUCCESS"} else 1


# -- the command -------------------------------------------------------------------------------


def requested_months(args: argparse.Namespace) -> list[date]:
    if args.months:
        return sorted({parse_month(text.strip()) for text in args.months.split(",") if text})
    if not (args.from_month and args.to_month):
        raise BackfillError("give --from and --to (or --months, or --retry-failed)")
    months = months_between(parse_month(args.from_month), parse_month(args.to_month))
    if not months:
        raise BackfillError(f"--from {args.from_month} is after --to {args.to_month}")
    return months


def backfill_title(taxi_name: str, target: str, months: list[date]) -> str:
    span = f"{months[0]:%Y-%m}" if len(months) == 1 else f"{months[0]:%Y-%m}..{months[-1]:%Y-%m}"
    return f"{taxi_name} {span} ({target}, {len(months)} months)"


def launch_for_taxi(
    client: WebserverClient, taxi_name: str, target: str, months: list[date]
) -> str:
    """One asset backfill of one taxi type along a target: the selection of its job(s)."""
    targets = ("postgres", "gcp") if target == "all" else (target,)
    asset_keys: list[list[str]] = []
    for one_target in targets:
        for path in job_asset_keys(client, f"{taxi_name}_{one_target}"):
            if path not in asset_keys:
                asset_keys.append(path)
    tags = {"taxi": taxi_name, "backfill": "true", "target": target}
    return launch_backfill(
        client, asset_keys, months, tags, backfill_title(taxi_name, target, months)
    )


def command_backfill(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    client = WebserverClient(args.url)
    try:
        if args.retry_failed:
            backfill_ids = [retry_failed(client, args.retry_failed)]
            echo(f"retrying backfill {args.retry_failed} from failure as {backfill_ids[0]}")
        else:
            months = requested_months(args)
            taxis = list(TAXIS) if args.taxi == "all" else [args.taxi]
            backfill_ids = []
            for taxi_name in taxis:
                backfill_id = launch_for_taxi(client, taxi_name, args.target, months)
                backfill_ids.append(backfill_id)
                echo(
                    f"launched backfill {backfill_id}: "
                    f"{backfill_title(taxi_name, args.target, months)}"
                )
        for backfill_id in backfill_ids:
            echo(f"  follow it in the UI: {client.ui_link(backfill_id)}")
        if not args.wait:
            return 0
        exit_code = 0
        for backfill_id in backfill_ids:
            echo(f"waiting for backfill {backfill_id} (Ctrl-C stops waiting, not the backfill)")
            state = wait_for_backfill(
                client, backfill_id, args.poll_seconds, args.timeout, echo=echo
            )
            exit_code = max(exit_code, report(client, state, echo))
        return exit_code
    except BackfillError as error:
        print(f"taxi-platform backfill: {error}", file=sys.stderr)
        return 2


def add_backfill_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``taxi-platform backfill`` on the CLI's sub-command parsers."""
    parser = subparsers.add_parser(
        "backfill",
        help="launch a Dagster backfill of a range of months (shown in the UI, run by the daemon)",
        description=(
            "Launch an asset backfill on the running platform through its webserver; the "
            "daemon runs one run per month, within dagster.yaml's limits."
        ),
    )
    parser.add_argument("--taxi", choices=[*TAXIS, "all"], default="green")
    parser.add_argument("--from", dest="from_month", help="first month, YYYY-MM")
    parser.add_argument("--to", dest="to_month", help="last month, YYYY-MM (included)")
    parser.add_argument(
        "--months", help="only these months, comma-separated (e.g. to re-run 2019-03,2019-07)"
    )
    parser.add_argument(
        "--target",
        choices=TARGET_CHOICES,
        default="postgres",
        help="the path to load: postgres, gcp or both (default postgres)",
    )
    parser.add_argument(
        "--retry-failed",
        metavar="BACKFILL_ID",
        help="re-run only the months a finished backfill did not materialize",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("DAGSTER_WEBSERVER_URL") or DEFAULT_WEBSERVER_URL,
        help="the Dagster webserver (default $DAGSTER_WEBSERVER_URL or %(default)s)",
    )
    parser.add_argument("--wait", action="store_true", help="wait, printing each month's progress")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--timeout", type=float, default=None, help="stop waiting after this many seconds"
    )
    parser.set_defaults(handler=command_backfill)
