"""Each month's run as Dagster recorded it, read back through the webserver's GraphQL.

Per run: its start and end, each step's time, the rows the staging and final steps
reported, and the pid of its process (to match the sampled memory). The rows the final
table held before a month are the rows inserted by the merges of that table that
committed before it: merges of one table are serialized (``table_lock``), so ordering
them by the end of their merge step orders their commits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from taxi_platform.lib.asset_keys import PARTITION_ROW_COUNT
from taxi_platform.lib.catalog import TaxiType
from taxi_platform.tools.backfill import WebserverClient

RUN_DETAILS_QUERY = """
query HistoryRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId
      status
      creationTime
      startTime
      endTime
      tags { key value }
      stepStats { stepKey status startTime endTime }
      assetMaterializations {
        assetKey { path }
        metadataEntries {
          label
          ... on IntMetadataEntry { intRepr }
        }
      }
      eventConnection(limit: 200) {
        events { __typename ... on EngineEvent { message } }
      }
    }
    ... on Error { message }
  }
}
"""

_PID_MESSAGE = re.compile(r"Started process for run \(pid: (\d+)\)")


@dataclass
class MonthRun:
    """One month of one taxi type, loaded by one run of a backfill."""

    taxi: str
    month: str  # YYYY-MM
    run_id: str
    status: str
    queued_seconds: float
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    rows: int = 0  # the file's rows, as staged
    rows_inserted: int = 0
    merge_ended: float = 0.0
    created_at: float = 0.0  # epoch seconds, as Dagster stores them
    ended_at: float = 0.0
    pid: int | None = None
    peak_rss_bytes: int | None = None
    peak_rss_helpers_bytes: int | None = None  # the part of the peak its helpers held
    table_rows_before: int = 0

    def per_million(self, seconds: float) -> float | None:
        return seconds / self.rows * 1e6 if self.rows else None

    def as_json(self) -> dict:
        return {
            "taxi": self.taxi,
            "month": self.month,
            "run_id": self.run_id,
            "status": self.status,
            "rows": self.rows,
            "rows_inserted": self.rows_inserted,
            "table_rows_before": self.table_rows_before,
            "seconds": round(self.seconds, 3),
            "queued_seconds": round(self.queued_seconds, 3),
            "steps": {name: round(seconds, 3) for name, seconds in self.steps.items()},
            "seconds_per_million_rows": _rounded(self.per_million(self.seconds)),
            "merge_seconds_per_million_rows": _rounded(
                self.per_million(self.steps.get("final", 0.0))
            ),
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_rss_helpers_bytes": self.peak_rss_helpers_bytes,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _step_names(taxi: TaxiType) -> dict[str, str]:
    """Step keys of the three assets, by the short names the report uses."""
    return {
        f"raw__{taxi.table}_csv": "raw",
        f"postgres__{taxi.table}_staging": "staging",
        f"postgres__{taxi.table}": "final",
    }


def _metadata_int(materializations: list[dict], asset_path: list[str], label: str) -> int:
    for materialization in materializations:
        if materialization["assetKey"]["path"] == asset_path:
            for entry in materialization["metadataEntries"]:
                if entry["label"] == label and entry.get("intRepr") is not None:
                    return int(entry["intRepr"])
    return 0


def month_run(client: WebserverClient, taxi: TaxiType, run_id: str) -> MonthRun:
    """The run's times, steps, rows and pid, from what Dagster stored."""
    run = client.execute(RUN_DETAILS_QUERY, {"runId": run_id})["runOrError"]
    if run["__typename"] != "Run":
        raise RuntimeError(f"run {run_id}: {run.get('message', run['__typename'])}")
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    started = run["startTime"] or run["creationTime"]
    ended = run["endTime"] or started
    names = _step_names(taxi)
    steps: dict[str, float] = {}
    merge_ended = 0.0
    other_steps: dict[str, float] = {}
    for step in run["stepStats"]:
        if not (step["startTime"] and step["endTime"]):
            continue
        seconds = step["endTime"] - step["startTime"]
        short = names.get(step["stepKey"])
        if short is None:  # the month's asset checks and its summary report
            other_steps[step["stepKey"]] = seconds
            continue
        steps[short] = seconds
        if short == "final":
            merge_ended = step["endTime"]
    if other_steps:
        steps["other_steps"] = sum(other_steps.values())
    steps["dagster_overhead"] = max(0.0, (ended - started) - sum(steps.values()))
    pid = None
    for event in run["eventConnection"]["events"]:
        found = _PID_MESSAGE.search(event.get("message") or "")
        if found:
            pid = int(found.group(1))
    materializations = run["assetMaterializations"]
    return MonthRun(
        taxi=taxi.name,
        month=tags.get("dagster/partition", "")[:7],
        run_id=run_id,
        status=run["status"],
        queued_seconds=started - run["creationTime"],
        seconds=ended - started,
        steps=steps,
        rows=_metadata_int(
            materializations, ["postgres", f"{taxi.table}_staging"], PARTITION_ROW_COUNT
        ),
        rows_inserted=_metadata_int(materializations, ["postgres", taxi.table], "rows_inserted"),
        merge_ended=merge_ended,
        created_at=run["creationTime"],
        ended_at=ended,
        pid=pid,
    )


def fill_rows_before(runs: list[MonthRun]) -> None:
    """Rows of the final table before each month: the inserts committed before its own."""
    runs.sort(key=lambda run: (run.merge_ended or float("inf"), run.month))
    rows_in_table = 0
    for run in runs:
        run.table_rows_before = rows_in_table
        rows_in_table += run.rows_inserted
