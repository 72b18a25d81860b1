"""The Dagster UI as a person sees it: headless Chromium against the stack's webserver.

GraphQL answering is not the same as the UI working: the page is a JavaScript app that
must load its bundle, reach GraphQL from the browser and lay out the asset graph. Chromium
(Debian's package) renders the asset group's graph and a partitioned asset's page, and the
test reads the rendered DOM for the asset names and the monthly partitions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform_tests.support.stack import (
    LOCATION_NAME,
    DagsterStack,
    platform_stack,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (apt-get install chromium; see deploy/ci-packages.txt)",
)


@pytest.fixture(scope="module")
def stack(scratch_root: Path, postgres_server: EmbeddedPostgres) -> Iterator[DagsterStack]:
    root = scratch_root / f"ui_browser_{free_port()}"
    root.mkdir()
    with platform_stack(root, postgres_server, with_daemon=False) as running:
        yield running


def render(stack: DagsterStack, path: str) -> str:
    """The DOM after the page's scripts ran: Chromium's virtual time lets the app fetch and
    lay out before the dump, with no wall-clock sleep. The window is large enough for the
    graph to draw every node (it skips those outside the viewport)."""
    profile = stack.root / f"chromium_profile_{free_port()}"
    dumped = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1920,1200",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"{stack.webserver_url}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    return dumped.stdout


def rendered_texts(dom: str) -> set[str]:
    """Text nodes of the rendered page (enough for names; no HTML parser needed)."""
    return {text.strip() for text in re.findall(r">([^<>]+)<", dom) if text.strip()}


def test_asset_graph_shows_the_green_assets(stack: DagsterStack) -> None:
    group = stack.graphql(
        '{ assetNodeOrError(assetKey: {path: ["postgres", "green_tripdata"]}) '
        "{ ... on AssetNode { groupName } } }"
    )["assetNodeOrError"]["groupName"]
    dom = render(stack, f"/locations/{LOCATION_NAME}/asset-groups/{group}")
    texts = rendered_texts(dom)
    # The graph labels each node with the last part of its key.
    for name in ("green_tripdata_csv", "green_tripdata_staging", "green_tripdata"):
        assert name in texts, f"{name} not drawn in the {group} graph"
    assert "yellow_tripdata" not in texts  # the group's graph, not the whole catalogue


def test_partitioned_asset_page_lists_its_months(stack: DagsterStack) -> None:
    keys = stack.graphql(
        '{ assetNodeOrError(assetKey: {path: ["postgres", "green_tripdata"]}) '
        "{ ... on AssetNode { partitionKeys } } }"
    )["assetNodeOrError"]["partitionKeys"]
    assert keys[0] == "2019-01-01"
    dom = render(stack, "/assets/postgres/green_tripdata?view=partitions")
    texts = rendered_texts(dom)
    assert "green_tripdata" in texts and "Partitions" in texts
    # The range starts at the first month; the list (newest first, virtualised) shows the
    # latest months, each one a month start.
    assert keys[0] in texts and keys[-1] in texts
    listed_months = {text for text in texts if text in set(keys)}
    assert len(listed_months) >= 10, listed_months
