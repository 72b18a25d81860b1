"""Totals, targets, the printed table and the plot of a history benchmark's results.

``python -m bench.history_report RESULT.json`` prints saved (or partial) results again and
redraws their plot beside them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.history_postgres import format_activity
from bench.history_postgres_cpu import format_postgres_cpu
from bench.history_queue import format_run_queue, run_queue
from bench.report import PEAK_RSS_MAX_BYTES

# The targets for the history (judged here, never in a timed test).
FLAT_MONTHS = 6
FLAT_RATIO_MAX = 1.25
ROWS_PER_SECOND_MIN = 250_000


def _cost(months: list[dict]) -> float | None:
    """Seconds per million rows over a set of months (weighted by their rows)."""
    rows = sum(month["rows"] for month in months)
    return sum(month["seconds"] for month in months) / rows * 1e6 if rows else None


def flatness(months: list[dict], taxi: str) -> dict:
    """Cost per million rows of the last six months of a taxi type over the first six."""
    ordered = sorted((m for m in months if m["taxi"] == taxi), key=lambda m: m["month"])
    if len(ordered) < 2 * FLAT_MONTHS:
        return {"first": None, "last": None, "ratio": None, "months": len(ordered)}
    first, last = _cost(ordered[:FLAT_MONTHS]), _cost(ordered[-FLAT_MONTHS:])
    return {
        "first_six_seconds_per_million": first,
        "last_six_seconds_per_million": last,
        "ratio": last / first if first else None,
        "months": len(ordered),
    }


def summarize(results: dict) -> None:
    """Fill in the totals and the targets from the months and the measured sizes."""
    # A failed month inserted nothing (its merge rolled back): it counts for no total.
    months = [month for month in results["months"] if month["status"] == "SUCCESS"]
    results["failed_months"] = [
        f"{month['taxi']} {month['month']}"
        for month in results["months"]
        if month["status"] != "SUCCESS"
    ]
    total_rows = sum(month["rows"] for month in months)
    # From the launch of the backfills to the end of the last run: what a user waits for.
    ends = [month["ended_at"] for month in months if month.get("ended_at")]
    wall = max(ends) - results["launched_at"] if ends and results.get("launched_at") else 0.0
    results["wall_seconds"] = round(wall, 3)
    peaks = [month["peak_rss_bytes"] for month in months if month.get("peak_rss_bytes")]
    results["total_rows"] = total_rows
    results["rows_per_second"] = total_rows / wall if wall else None
    results["peak_rss_bytes"] = max(peaks) if peaks else None
    if results.get("launched_at"):
        # Every run, a failed one too: it held its place in the queue while it ran.
        results["run_queue"] = run_queue(results["months"], results["launched_at"])
    results["flatness"] = {
        taxi: flatness(months, taxi) for taxi in sorted({month["taxi"] for month in months})
    }
    yellow = results["flatness"].get("yellow", {}).get("ratio")

    def judged(value: float | None, limit: float, at_most: bool) -> dict:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        return {"value": value, "limit": limit, "met": met}

    results["targets"] = {
        "flat (yellow last six / first six, cost per million rows)": judged(
            yellow, FLAT_RATIO_MAX, True
        ),
        "rows_per_second (whole history through the run queue)": judged(
            results["rows_per_second"], ROWS_PER_SECOND_MIN, False
        ),
        "peak_rss_bytes (a run's process)": judged(
            results["peak_rss_bytes"], PEAK_RSS_MAX_BYTES, True
        ),
    }


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024 / 1024:,.0f} MB"


def format_history(results: dict) -> str:
    lines = [f"$ {results.get('command', '')}", ""]
    lines.append(
        f"{'taxi':<7}{'month':<8}{'rows':>11}{'before':>13}{'run s':>8}{'s/M rows':>9}"
        f"{'raw':>7}{'stage':>7}{'merge':>7}{'queued':>8}{'RSS':>8}"
    )
    for month in sorted(results["months"], key=lambda m: (m["taxi"], m["month"])):
        steps = month["steps"]
        lines.append(
            f"{month['taxi']:<7}{month['month']:<8}{month['rows']:>11,}"
            f"{month['table_rows_before']:>13,}{month['seconds']:>8.1f}"
            f"{month['seconds_per_million_rows'] or 0:>9.2f}{steps.get('raw', 0):>7.1f}"
            f"{steps.get('staging', 0):>7.1f}{steps.get('final', 0):>7.1f}"
            f"{month['queued_seconds']:>8.1f}{_mb(month.get('peak_rss_bytes')):>8}"
        )
    lines += [
        "",
        f"total rows {results.get('total_rows', 0):,} in {results.get('wall_seconds', 0):,.1f} s "
        f"of backfill: {results.get('rows_per_second') or 0:,.0f} rows/s "
        f"(generation {results.get('generation_seconds', 0):,.1f} s, not counted)",
    ]
    for taxi, size in (results.get("table_bytes") or {}).items():
        rows = (results.get("table_rows") or {}).get(taxi, 0)
        lines.append(f"public.{taxi}_tripdata: {rows:,} rows, {size / 1e9:,.2f} GB with indexes")
    lines.append(
        f"Dagster storage {(results.get('dagster_storage_bytes') or 0) / 1e6:,.1f} MB; "
        f"landing area peak {_mb(results.get('landing_peak_bytes'))}; "
        f"peak RSS of a run {_mb(results.get('peak_rss_bytes'))}"
    )
    if results.get("cpu_seconds"):
        lines.append(format_cpu(results["cpu_seconds"]))
    if results.get("postgres_cpu_by_activity"):
        lines.append(format_postgres_cpu(results["postgres_cpu_by_activity"]))
    if results.get("postgres_activity"):
        lines.append(format_activity(results["postgres_activity"]))
    if results.get("run_queue"):
        lines.append(format_run_queue(results["run_queue"]))
    zoomcamp = results.get("zoomcamp")
    if zoomcamp:
        lines.append(
            f"zoomcamp as run (scale {zoomcamp['scale']:g}): {zoomcamp['wall_seconds']:,.1f} s "
            f"for {len(zoomcamp['months'])} months"
        )
    if results.get("failed_months"):
        lines.append(f"failed months (not counted): {', '.join(results['failed_months'])}")
    lines += ["", "## targets"]
    for name, target in (results.get("targets") or {}).items():
        verdict = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        value = target["value"]
        shown = _mb(value) if "rss" in name else ("-" if value is None else f"{value:,.2f}")
        lines.append(f"{name:<58}{shown:>14}  (limit {target['limit']:,})  {verdict}")
    return "\n".join(lines)


def format_cpu(spent: dict) -> str:
    """Who spent the cores during the backfill command (``bench.history_cpu``)."""
    machine = ("machine_busy", "machine_idle", "machine_steal")
    parts = ", ".join(
        f"{name.replace('_', ' ')} {seconds:,.0f}"
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1])
        if name not in machine
    )
    return (
        f"CPU over the backfill command, core-seconds: busy {spent['machine_busy']:,.0f} "
        f"({parts}), idle {spent['machine_idle']:,.0f}, stolen "
        f"{spent.get('machine_steal', 0):,.0f}"
    )


def format_markdown(results: dict) -> str:
    """The months as a Markdown table, for the README."""
    lines = [
        "| taxi | month | rows | table rows before | run s | s per M rows | raw | staging "
        "| final (merge) | checks, summary | other | peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for month in sorted(results["months"], key=lambda m: (m["taxi"], m["month"])):
        steps = month["steps"]
        cost = month["seconds_per_million_rows"]
        lines.append(
            f"| {month['taxi']} | {month['month']} | {month['rows']:,} "
            f"| {month['table_rows_before']:,} | {month['seconds']:.1f} "
            f"| {'-' if cost is None else f'{cost:.1f}'} | {steps.get('raw', 0):.1f} "
            f"| {steps.get('staging', 0):.1f} | {steps.get('final', 0):.1f} "
            f"| {steps.get('other_steps', 0):.1f} | {steps.get('dagster_overhead', 0):.1f} "
            f"| {_mb(month.get('peak_rss_bytes'))} |"
            + ("" if month["status"] == "SUCCESS" else f" {month['status']}")
        )
    return "\n".join(lines)


def plot(results: dict, png_path: Path) -> Path:
    """Cost per million rows against the table's rows before the month, per taxi type.

    Left: the run's wall time (what a user waits for, queueing for the database pool
    included); right: the merge step alone (the part that could grow with the table).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (runs_axes, merge_axes) = pyplot.subplots(1, 2, figsize=(12, 5), dpi=110)
    succeeded = [month for month in results["months"] if month["status"] == "SUCCESS"]
    series = [("ours", succeeded, "o-")]
    if results.get("zoomcamp"):
        label = f"zoomcamp as run (x{results['zoomcamp']['scale']:g})"
        series.append((label, results["zoomcamp"]["months"], "s--"))
    for label, months, style in series:
        for taxi in sorted({month["taxi"] for month in months}):
            mine = sorted(
                (m for m in months if m["taxi"] == taxi), key=lambda m: m["table_rows_before"]
            )
            _curve(runs_axes, mine, "seconds_per_million_rows", style, f"{label}: {taxi}")
            merge_key = "merge_seconds_per_million_rows" if label == "ours" else None
            _curve(merge_axes, mine, merge_key, style, f"{label}: {taxi}")
    parameters = results["parameters"]
    figure.suptitle(
        f"cost of a month vs table size: {parameters['taxi']} {parameters['from']}.."
        f"{parameters['to']}, scale {parameters['scale']:g}"
    )
    runs_axes.set_ylabel("seconds per million rows")
    runs_axes.set_title("whole run (wall time)")
    merge_axes.set_title("merge step (ours) / MERGE (zoomcamp)")
    for axes in (runs_axes, merge_axes):
        axes.set_xlabel("rows in the final table before the month (millions)")
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    pyplot.close(figure)
    return png_path


def _curve(axes, months: list[dict], key: str | None, style: str, label: str) -> None:
    """One taxi type's points; the zoomcamp's merge cost is its MERGE step per million."""
    points = []
    for month in months:
        if key is None:
            merge = month.get("steps", {}).get("merge")
            value = merge / month["rows"] * 1e6 if merge is not None and month["rows"] else None
        else:
            value = month.get(key)
        if value:
            points.append((month["table_rows_before"] / 1e6, value))
    if points:
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, style, markersize=3, label=label)


def main(argv: list[str] | None = None) -> int:
    arguments = list(argv if argv is not None else sys.argv[1:])
    markdown = "--markdown" in arguments
    paths = [Path(arg) for arg in arguments if arg != "--markdown"]
    if not paths:
        print("usage: python -m bench.history_report [--markdown] RESULT.json", file=sys.stderr)
        return 2
    for path in paths:
        results = json.loads(path.read_text())
        summarize(results)
        print(format_markdown(results) if markdown else format_history(results))
        print(f"plot: {plot(results, path.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
