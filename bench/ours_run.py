"""One Dagster run of one month, in a process of its own, as the platform runs it.

The benchmark starts this module as a child process so that it can sample the run's peak
memory (RSS) from outside and time the process as a whole. The run materializes
``raw/{taxi}_tripdata_csv``, ``postgres/{taxi}_tripdata_staging`` and
``postgres/{taxi}_tripdata`` for one partition, with the tags a scheduled run carries, and
writes what happened (step timings from the event log, the assets' metadata) as JSON to
``--out``. The database URL comes from ``BENCH_DATABASE_URL`` so the password never shows
in a process list.

    python -m bench.ours_run --taxi yellow --month 2019-01 --base-url URL \
        --landing DIR --out result.json [--landing-retention keep|delete] \
        [--tlc-url URL --sources tlc]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# The process's birth, taken before the heavy imports: they are part of a run's cost.
PROCESS_STARTED = time.time()

import dagster as dg  # noqa: E402

# The code location, as a run's process loads it: its imports are part of a run's cost,
# and importing it sets how the process collects garbage
# (``definitions.leave_long_lived_objects_to_exit``).
import taxi_platform.definitions  # noqa: E402, F401
from taxi_platform.defs.trips.postgres import (  # noqa: E402
    etl_assets,  # noqa: E402
    postgres_table_key,
    staging_asset_key,
)
from taxi_platform.defs.trips.raw import raw_asset_key  # noqa: E402
from taxi_platform.lib.catalog import taxi_type  # noqa: E402
from taxi_platform.lib.months import parse_month, partition_key  # noqa: E402
from taxi_platform.resources import LandingArea, PostgresResource, TripFileSource  # noqa: E402

taxi_assets = etl_assets()

DATABASE_URL_VARIABLE = "BENCH_DATABASE_URL"


def step_timings(instance: dg.DagsterInstance, run_id: str) -> dict:
    """Run and step start/end times from the run's event log (epoch seconds)."""
    run: dict[str, float] = {}
    steps: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind in ("RUN_START", "RUN_SUCCESS", "RUN_FAILURE"):
            run[kind] = entry.timestamp
        elif kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE") and event.step_key:
            steps.setdefault(event.step_key, {})[kind] = entry.timestamp
    return {"run": run, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxi", required=True)
    parser.add_argument("--month", required=True, help="YYYY-MM")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--tlc-url", default=None, help="TAXI_TLC_URL (default: the TLC's)")
    parser.add_argument("--sources", default=None, help="TAXI_SOURCES (default: course,tlc)")
    parser.add_argument("--landing", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--landing-retention", default="keep", choices=("keep", "delete"))
    args = parser.parse_args(argv)

    taxi = taxi_type(args.taxi)
    month = parse_month(args.month)
    # Exactly the Postgres path's three assets: the code location holds others (Google
    # Cloud) that read the same landed file and are not part of this benchmark.
    wanted = {raw_asset_key(taxi), staging_asset_key(taxi), postgres_table_key(taxi)}
    assets = [asset for asset in taxi_assets if asset.key in wanted]
    resources = {
        "trip_source": TripFileSource(
            base_url=args.base_url,
            **({"tlc_url": args.tlc_url} if args.tlc_url else {}),
            **({"sources": args.sources} if args.sources else {}),
        ),
        "landing": LandingArea(root=args.landing, retention=args.landing_retention),
        "postgres": PostgresResource(url=os.environ[DATABASE_URL_VARIABLE]),
    }
    instance = dg.DagsterInstance.ephemeral()
    materialize_started = time.time()
    result = dg.materialize(
        assets,
        partition_key=partition_key(month),
        resources=resources,
        instance=instance,
        tags={"taxi": taxi.name, "file": taxi.csv_name(month)},
        raise_on_error=False,
    )
    materialize_ended = time.time()

    timings = step_timings(instance, result.run_id)
    assets_report = {}
    for event in result.get_asset_materialization_events():
        assets_report[event.asset_key.to_user_string()] = {
            "step_key": event.step_key,
            "metadata": {
                name: value.value
                for name, value in event.materialization.metadata.items()
                if isinstance(value.value, (int, float, str, bool))
            },
        }
    report = {
        "success": result.success,
        "process_started": PROCESS_STARTED,
        "materialize_started": materialize_started,
        "materialize_ended": materialize_ended,
        "run": timings["run"],
        "steps": timings["steps"],
        "assets": assets_report,
        "failures": [
            str(
                event.step_failure_data.user_failure_data.description
                if event.step_failure_data.user_failure_data
                else event.step_failure_data.error.message
            )
            for event in result.all_events
            if event.is_step_failure
        ],
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
