"""The README's path through the Dagster UI, clicked by Playwright in Debian's Chromium.

GraphQL answering is not the same as the UI working: the page is a JavaScript app that
must load its bundle, reach GraphQL from the browser and lay out the graph. The walk
follows the README's *From the UI* steps click by click, on the platform's processes (code
server, webserver, daemon) and a release mirror: open the lineage, load one month from the
job's page, launch a two-month backfill, see its runs with their `taxi` and `file` tags,
see the summary report land, open a failed run's message. Each step leaves a screenshot
in the folder the test prints, for a reader to look at.

No browser is downloaded: Playwright drives ``/usr/bin/chromium`` (deploy/ci-packages.txt).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from taxi_platform.lib.catalog import GREEN
from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform.tools.generate import write_month, write_zone_lookup
from taxi_platform_tests.support.stack import DagsterStack, fresh_database, platform_stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (apt-get install chromium; see deploy/ci-packages.txt)",
)

PUBLISHED_MONTHS = [date(2019, 1, 1), date(2019, 2, 1), date(2019, 3, 1)]
UNPUBLISHED_MONTH = "2019-05-01"  # not in the mirror: its run fails with a 404
ROWS = 400
UI_TIMEOUT_MS = 90_000  # a busy 2-core machine renders slowly

RUNS_QUERY = """
{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }
"""
SUMMARY_QUERY = """
{ assetNodeOrError(assetKey: {path: ["reports", "green_monthly_summary"]}) {
    ... on AssetNode { assetMaterializations { partition } } } }
"""
PUBLISHED_KEYS = [month.isoformat() for month in PUBLISHED_MONTHS]


@pytest.fixture(scope="module")
def stack(scratch_root: Path, postgres_server: EmbeddedPostgres) -> Iterator[DagsterStack]:
    root = scratch_root / f"ui_browser_{free_port()}"
    mirror_folder = root / "mirror"
    for month in PUBLISHED_MONTHS:
        write_month(GREEN, month, ROWS, mirror_folder, seed=month.month)
    write_zone_lookup(mirror_folder)  # the monthly summary joins the zones' boroughs
    with (
        fresh_database(postgres_server, "taxi") as taxi_database_url,
        platform_stack(root, postgres_server, taxi_database_url, mirror_folder) as running,
    ):
        yield running


@dataclass
class Walk:
    """A browser page on the stack, and the folder its screenshots go to."""

    page: object
    stack: DagsterStack
    shots: Path
    step: int = 0

    def shot(self, name: str) -> Path:
        self.step += 1
        path = self.shots / f"{self.step:02d}_{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def runs(self) -> list[dict]:
        results = self.stack.graphql(RUNS_QUERY)["runsOrError"]["results"]
        for run in results:
            run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
        return results

    def wait_for(self, condition, what: str, timeout: float = 300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            time.sleep(1)  # polling the daemon's progress, bounded by the deadline
        raise AssertionError(f"timed out waiting for {what}: {self.runs()}")

    def nav(self, name: str) -> None:
        """A link of the left bar (**Lineage**, **Jobs**, **Runs**, **Catalog**)."""
        self.page.get_by_role("link").filter(has_text=re.compile(rf"^\s*{name}\s*$")).first.click()

    def open_job(self, name: str) -> None:
        """README: **Jobs** → the job's name."""
        self.nav("Jobs")
        self.page.get_by_text(name, exact=True).first.click()

    def materialize_partitions(
        self, partitions: str, launch: str, lookup_never_loaded: bool = False
    ) -> None:
        """README: **Materialize all…**, (the first time, **Confirm** that the zone lookup
        was never materialized), *Show all partitions*, type the months, launch."""
        self.page.get_by_role("button", name="Materialize all").first.click()
        dialog = self.page.get_by_role("dialog")
        # The job's four assets: raw, staging, final table, summary report.
        launch_dialog = dialog.get_by_text("Launch runs to materialize 4 assets")
        never_loaded = dialog.get_by_text("have not been materialized yet")
        playwright_api.expect(launch_dialog.or_(never_loaded)).to_be_visible()
        if lookup_never_loaded:
            playwright_api.expect(never_loaded).to_be_visible()
        if never_loaded.is_visible():
            playwright_api.expect(dialog.get_by_text("raw / taxi_zone_lookup")).to_be_visible()
            self.shot("confirm_lookup_never_loaded")
            dialog.get_by_role("button", name="Confirm").click()
        playwright_api.expect(launch_dialog).to_be_visible()
        dialog.get_by_text("Show all partitions").click()
        box = dialog.get_by_role("textbox").first
        box.fill(partitions)
        box.press("Enter")
        button = dialog.get_by_role("button", name=launch)
        playwright_api.expect(button).to_be_enabled()
        self.shot(f"dialog_{launch.replace(' ', '_').lower()}")
        button.click()
        playwright_api.expect(dialog).to_be_hidden()


@pytest.fixture
def walk(stack: DagsterStack, scratch_root: Path) -> Iterator[Walk]:
    shots = scratch_root / f"ui_walk_screenshots_{free_port()}"
    shots.mkdir()
    print(f"\nscreenshots of the UI walk: {shots}")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        playwright_api.expect.set_options(timeout=UI_TIMEOUT_MS)
        try:
            yield Walk(page, stack, shots)
        finally:
            browser.close()
            print(f"screenshots of the UI walk: {shots}")


def test_readme_ui_path_lineage_one_month_backfill_tags_summary_and_a_failure(
    walk: Walk,
) -> None:
    walk_the_readme(walk)


def walk_the_readme(walk: Walk) -> None:
    """The README's *The UI, click by click*, step by step."""
    page = walk.page
    # A new instance greets with "Join the Dagster community", whenever the app is ready:
    # README, *Skip*.
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
    # 1. The lineage: each layer a box named after it, inside the taxi type's box.
    page.goto(walk.stack.webserver_url)
    walk.nav("Lineage")
    search = page.get_by_role("textbox", name="Search and filter assets")
    playwright_api.expect(page.get_by_text("green_trips", exact=True).last).to_be_visible()
    page.get_by_text("green_trips", exact=True).last.dblclick()  # open the taxi type's box
    # Each taxi type's box holds one box per layer (what lies outside the view is not
    # drawn; the screenshot shows what is).
    for group in ("green_trips", "yellow_trips", "bigquery"):
        playwright_api.expect(page.get_by_text(group, exact=True).first).to_be_attached()
    walk.shot("lineage")

    # 2. One month from the job's page: a run of green_postgres with the Kestra labels.
    walk.open_job("green_postgres")
    walk.shot("job_page")
    walk.materialize_partitions("2019-01-01", "Launch 1 run", lookup_never_loaded=True)
    first = walk.wait_for(
        lambda: [r for r in walk.runs() if r["tags"].get("dagster/partition") == "2019-01-01"],
        "the 2019-01 run",
    )[0]
    assert first["jobName"] == "green_postgres"
    assert first["tags"]["taxi"] == "green"
    assert first["tags"]["file"] == "green_tripdata_2019-01.csv"

    # 3. A two-month backfill, same dialog; Runs → Backfills has one row for it.
    walk.materialize_partitions("[2019-02-01...2019-03-01]", "Launch backfill")
    walk.nav("Runs")
    page.get_by_role("tab", name="Backfills").click()
    page.get_by_text("2 partitions").first.wait_for()
    walk.shot("runs_backfills")
    backfill_runs = walk.wait_for(
        lambda: [r for r in walk.runs() if "dagster/backfill" in r["tags"]] or None,
        "the backfill's runs",
    )
    backfill_id = backfill_runs[0]["tags"]["dagster/backfill"]
    page.get_by_role("link", name=backfill_id).first.click()
    for tab in ("Overview", "Runs", "Timeline"):
        playwright_api.expect(page.get_by_role("tab", name=tab)).to_be_visible()
    walk.shot("backfill_page")

    # 4. The runs with their tags: the backfill's appear once "Show runs within backfills".
    def both_succeeded() -> list[dict] | None:
        runs = [r for r in walk.runs() if r["tags"].get("dagster/backfill") == backfill_id]
        return runs if [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"] else None

    done = walk.wait_for(both_succeeded, "both backfill runs to succeed", timeout=420)
    assert {r["jobName"] for r in done} == {"green_postgres"}
    assert {r["tags"]["file"] for r in done} == {
        "green_tripdata_2019-02.csv",
        "green_tripdata_2019-03.csv",
    }
    walk.nav("Runs")
    page.get_by_role("tab", name="All").click()
    page.get_by_text("Show runs within backfills").click()
    playwright_api.expect(page.get_by_text("green_tripdata_2019-02.csv").first).to_be_visible()
    playwright_api.expect(page.get_by_text("taxi").first).to_be_visible()
    walk.shot("runs_with_tags")

    # 5. The summary report of every loaded month lands (in the months' runs). Which month
    # the page names as the latest depends on which summary finished last, so the walk
    # waits for all three and reads each on the Events tab.
    def summarized_months() -> set[str]:
        node = walk.stack.graphql(SUMMARY_QUERY)["assetNodeOrError"]
        return {event["partition"] for event in node["assetMaterializations"]}

    walk.wait_for(
        lambda: summarized_months() >= set(PUBLISHED_KEYS),
        f"reports/green_monthly_summary {PUBLISHED_KEYS}",
        timeout=420,
    )
    walk.nav("Catalog")
    search = page.get_by_role("textbox", name="Search and filter assets")
    search.fill("green_monthly_summary")
    search.press("Enter")
    search.press("Escape")  # the suggestions would cover the row
    page.locator("a[href*='/assets/reports/green_monthly_summary']").first.click()
    playwright_api.expect(page.get_by_text("Latest materialization")).to_be_visible()
    walk.shot("summary_report")
    page.get_by_role("tab", name="Events").click()
    for key in PUBLISHED_KEYS:
        playwright_api.expect(page.get_by_text(key, exact=True).first).to_be_visible()
    walk.shot("summary_events")

    # 6. A month no source has: the run fails, and its page says why in one sentence.
    walk.open_job("green_postgres")
    walk.materialize_partitions(UNPUBLISHED_MONTH, "Launch 1 run")
    failed = walk.wait_for(
        lambda: [
            r
            for r in walk.runs()
            if r["tags"].get("dagster/partition") == UNPUBLISHED_MONTH and r["status"] == "FAILURE"
        ],
        "the failed run",
    )[0]
    walk.nav("Runs")
    page.get_by_role("tab", name="Failed").click()
    page.get_by_role("link", name=failed["runId"][:8]).first.click()
    message = page.get_by_text("not published by the course source").first
    playwright_api.expect(message).to_be_visible()
    walk.shot("failed_run_message")
