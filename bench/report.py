"""Ratios, targets and the printed tables of a benchmark run.

``python -m bench.report RESULT.json [RESULT.json ...]`` prints saved results again, and
with several files a line per file of the Dagster run's peak RSS against the month's size,
which is how the "memory stays flat as the month grows" target is shown (1M vs 7.7M).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The targets, for the benchmark (not unit tests).
NEW_MONTH_VS_FLOOR_MAX = 1.5
NEW_MONTH_VS_ZOOMCAMP_MAX = 0.5
# Against the flow as its users run it (no index of ours) and the least a durable, indexed
# load writes (issue 16).
NEW_MONTH_VS_ZOOMCAMP_AS_RUN_MAX = 0.7
NEW_MONTH_VS_DURABLE_FLOOR_MAX = 1.25
RERUN_VS_FIRST_LOAD_MAX = 0.25
PEAK_RSS_MAX_BYTES = 400 * 1024 * 1024

LABELS = {
    "floor": "floor: bare COPY, unlogged, no index",
    "durable_floor": "durable floor: COPY, logged, pickup btree",
    "zoomcamp_as_run": "zoomcamp as run: flow's SQL and DDL",
    "zoomcamp": "zoomcamp + our indexes",
    "ours_sql": "ours, SQL only: stage+merge",
    "ours_dagster_run": "ours, Dagster run (materialize)",
    "ours_dagster_process": "ours, Dagster process (wall)",
}
CASE_TITLES = {
    "new_month": "new month into an empty final table",
    "rerun": "re-run of the loaded month (nothing new)",
    "next_month": "next month into a table holding one",
}


def _seconds(case: dict, contender: str) -> float | None:
    """A contender's median seconds in a case; the Dagster run has two figures."""
    if contender == "ours_dagster_run":
        summary = case.get("ours_dagster")
        return summary["materialize_seconds"] if summary else None
    if contender == "ours_dagster_process":
        summary = case.get("ours_dagster")
        return summary["process_seconds"] if summary else None
    summary = case.get(contender)
    return summary["seconds"] if summary else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(results: dict) -> dict:
    cases = results["cases"]
    new, rerun, following = cases["new_month"], cases["rerun"], cases["next_month"]
    ours = ("ours_sql", "ours_dagster_run", "ours_dagster_process")
    out: dict[str, dict[str, float | None]] = {
        "new_month": {},
        "rerun_vs_new": {},
        "next_month": {},
    }
    for contender in ours:
        out["new_month"][f"{contender}/floor"] = _ratio(
            _seconds(new, contender), _seconds(new, "floor")
        )
        for reference in ("durable_floor", "zoomcamp", "zoomcamp_as_run"):
            out["new_month"][f"{contender}/{reference}"] = _ratio(
                _seconds(new, contender), _seconds(new, reference)
            )
        out["next_month"][f"{contender}/zoomcamp_as_run"] = _ratio(
            _seconds(following, contender), _seconds(following, "zoomcamp_as_run")
        )
        out["next_month"][f"{contender}/zoomcamp"] = _ratio(
            _seconds(following, contender), _seconds(following, "zoomcamp")
        )
    for contender in (*ours, "zoomcamp", "zoomcamp_as_run"):
        out["rerun_vs_new"][contender] = _ratio(
            _seconds(rerun, contender), _seconds(new, contender)
        )
    return out


def targets(results: dict) -> dict:
    """Each target: the figure it is judged on, the limit and whether it is met."""
    figures = results["ratios"]
    peak = max(
        summary["peak_rss_bytes"]
        for case in results["cases"].values()
        for name, summary in case.items()
        if name == "ours_dagster"
    )

    def judged(value: float | None, limit: float, strict: bool = False) -> dict:
        met = None if value is None else (value < limit if strict else value <= limit)
        return {"value": value, "limit": limit, "met": met}

    return {
        "new_month_vs_floor (ours SQL)": judged(
            figures["new_month"]["ours_sql/floor"], NEW_MONTH_VS_FLOOR_MAX
        ),
        "new_month_vs_floor (ours Dagster run)": judged(
            figures["new_month"]["ours_dagster_run/floor"], NEW_MONTH_VS_FLOOR_MAX
        ),
        "new_month_vs_zoomcamp (ours SQL)": judged(
            figures["new_month"]["ours_sql/zoomcamp"], NEW_MONTH_VS_ZOOMCAMP_MAX
        ),
        "new_month_vs_zoomcamp (ours Dagster run)": judged(
            figures["new_month"]["ours_dagster_run/zoomcamp"], NEW_MONTH_VS_ZOOMCAMP_MAX
        ),
        "new_month_vs_zoomcamp_as_run (ours SQL)": judged(
            figures["new_month"]["ours_sql/zoomcamp_as_run"], NEW_MONTH_VS_ZOOMCAMP_AS_RUN_MAX
        ),
        "new_month_vs_zoomcamp_as_run (ours Dagster run)": judged(
            figures["new_month"]["ours_dagster_run/zoomcamp_as_run"],
            NEW_MONTH_VS_ZOOMCAMP_AS_RUN_MAX,
        ),
        "new_month_vs_durable_floor (ours SQL)": judged(
            figures["new_month"]["ours_sql/durable_floor"], NEW_MONTH_VS_DURABLE_FLOOR_MAX
        ),
        "new_month_vs_durable_floor (ours Dagster run)": judged(
            figures["new_month"]["ours_dagster_run/durable_floor"],
            NEW_MONTH_VS_DURABLE_FLOOR_MAX,
        ),
        "rerun_vs_first_load (ours SQL)": judged(
            figures["rerun_vs_new"]["ours_sql"], RERUN_VS_FIRST_LOAD_MAX, strict=True
        ),
        "rerun_vs_first_load (ours Dagster run)": judged(
            figures["rerun_vs_new"]["ours_dagster_run"], RERUN_VS_FIRST_LOAD_MAX, strict=True
        ),
        "rerun_vs_first_load (ours Dagster process)": judged(
            figures["rerun_vs_new"]["ours_dagster_process"], RERUN_VS_FIRST_LOAD_MAX, strict=True
        ),
        "peak_rss_bytes (Dagster run process)": judged(peak, PEAK_RSS_MAX_BYTES, strict=True),
    }


def _mb(value: float) -> str:
    return f"{value / 1024 / 1024:,.0f} MB"


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def format_results(results: dict) -> str:
    parameters = results["parameters"]
    lines = [
        f"$ {results['command']}" if results.get("command") else "",
        f"{parameters['taxi']} {parameters['month']} (then {parameters['next_month']}), "
        f"{parameters['rows']:,} rows per month, median of {parameters['repeat']}; "
        f"PostgreSQL {results['machine']['postgres']}, {results['machine']['cpus']} CPUs",
    ]
    for case_name, title in CASE_TITLES.items():
        case = results["cases"][case_name]
        floor = _seconds(case, "floor") or _seconds(results["cases"]["new_month"], "floor")
        durable = _seconds(case, "durable_floor") or _seconds(
            results["cases"]["new_month"], "durable_floor"
        )
        as_run = _seconds(case, "zoomcamp_as_run")
        zoomcamp = _seconds(case, "zoomcamp")
        lines += [
            "",
            f"## {title}",
            f"{'contender':<42}{'seconds':>9}{'rows/s':>12}{'x floor':>9}{'x durable':>10}"
            f"{'x zc run':>10}{'x zc+idx':>10}{'peak RSS':>11}",
        ]
        for contender, label in LABELS.items():
            seconds = _seconds(case, contender)
            if seconds is None:
                continue
            rss = ""
            if contender.startswith("ours_dagster"):
                rss = _mb(case["ours_dagster"]["peak_rss_bytes"])
            lines.append(
                f"{label:<42}{seconds:>9.2f}{parameters['rows'] / seconds:>12,.0f}"
                f"{_fmt(_ratio(seconds, floor)):>9}{_fmt(_ratio(seconds, durable)):>10}"
                f"{_fmt(_ratio(seconds, as_run)):>10}{_fmt(_ratio(seconds, zoomcamp)):>10}"
                f"{rss:>11}"
            )
    lines += ["", "## where the time goes (median seconds per step)"]
    for case_name in CASE_TITLES:
        for contender, summary in results["cases"][case_name].items():
            steps = "  ".join(f"{name} {seconds:.2f}" for name, seconds in summary["steps"].items())
            lines.append(f"{case_name:<11}{contender:<16}{steps}")
    dagster = results["cases"]["new_month"]["ours_dagster"]
    lines.append(
        "ours_dagster: process_startup = interpreter + imports + definitions; dagster_overhead "
        "= materialize minus its three steps; raw includes the HTTP download and gunzip"
        f" (downloaded={dagster.get('downloaded')})"
    )
    backfill = results.get("backfill")
    if backfill:
        lines += [
            "",
            f"## backfill: {len(backfill['months'])} {backfill['taxi']} months x "
            f"{backfill['rows_per_month']:,} rows, one Dagster run (process) per month",
            f"one at a time:   {backfill['sequential']['wall_seconds']:7.1f} s",
            f"{backfill['concurrent']['workers']} at a time:      "
            f"{backfill['concurrent']['wall_seconds']:7.1f} s  "
            f"(speed-up x{backfill['speedup']:.2f})",
        ]
    lines += ["", "## targets"]
    for name, target in results["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        if "rss" in name:
            shown = f"{_mb(target['value'])} (limit {_mb(target['limit'])})"
        else:
            shown = f"{_fmt(target['value'])} (limit {target['limit']})"
        lines.append(f"{name:<45}{shown:<30}{verdict}")
    return "\n".join(line for line in lines if line is not None)


def format_memory_growth(all_results: list[dict]) -> str:
    """Peak RSS of the Dagster run per month size: flat means it does not follow rows."""
    lines = [
        "## Dagster run peak RSS by month size",
        f"{'rows':>12}{'csv bytes':>16}{'peak RSS':>12}",
    ]
    for results in sorted(all_results, key=lambda r: r["parameters"]["rows"]):
        peak = results["targets"]["peak_rss_bytes (Dagster run process)"]["value"]
        lines.append(
            f"{results['parameters']['rows']:>12,}"
            f"{results['files'][0]['csv_bytes']:>16,}{_mb(peak):>12}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(arg) for arg in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print("usage: python -m bench.report RESULT.json [RESULT.json ...]", file=sys.stderr)
        return 2
    all_results = [json.loads(path.read_text()) for path in paths]
    for path, results in zip(paths, all_results, strict=True):
        print(f"# {path}")
        print(format_results(results))
        print()
    if len(all_results) > 1:
        print(format_memory_growth(all_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
