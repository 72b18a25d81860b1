"""The getting_started group, run offline against a local HTTP server with fixture JSON."""

import json
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import mean
from typing import Any

import dagster as dg
import pytest

from taxi_platform.defs.getting_started import getting_started_definitions
from taxi_platform.defs.getting_started.dockerhub import (
    DOCKERHUB_REPOSITORY_URL,
    docker_image_pulls,
)
from taxi_platform.defs.getting_started.hello_world import GENERATED_OUTPUT, hello_world
from taxi_platform.defs.getting_started.products import (
    PRODUCTS_URL,
    ProductsFilterConfig,
    brand_price_summary,
    products_filtered,
    products_raw,
)
from taxi_platform.resources.http_json_api import HttpJsonApi

FIXTURES = Path(__file__).parent / "fixtures"
PRODUCTS_PAYLOAD = json.loads((FIXTURES / "products.json").read_text())
DOCKERHUB_PAYLOAD = json.loads((FIXTURES / "dockerhub_kestra.json").read_text())

DOCKERHUB_PATH = "/v2/repositories/kestra/kestra/"
PRODUCTS_ASSETS = [products_raw, products_filtered, brand_price_summary]
SUMMARY_KEY = dg.AssetKey(["getting_started", "brand_price_summary"])
FILTERED_KEY = dg.AssetKey(["getting_started", "products_filtered"])


@pytest.fixture(scope="module")
def api_root() -> Iterator[str]:
    """A local server with the fixture payloads, an error page, HTML, and a stalled route."""
    routes = {
        DOCKERHUB_PATH: (
            200,
            "application/json",
            (FIXTURES / "dockerhub_kestra.json").read_bytes(),
        ),
        "/products": (200, "application/json", (FIXTURES / "products.json").read_bytes()),
        "/unavailable": (503, "text/plain", b"upstream is down for maintenance"),
        "/html": (200, "text/html", b"<html><body>Just a moment...</body></html>"),
    }
    release_stalled = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/stall":
                # Holds the request open until the module's tests are done; the client
                # under test gives up on its own timeout long before.
                release_stalled.wait(timeout=60)
                return
            status, content_type, body = routes.get(self.path, (404, "text/plain", b"no route"))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    release_stalled.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A port that is bound but never listens: connecting is refused, and stays so."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{placeholder.getsockname()[1]}/products"


def expected_summary(products: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """The tutorial's query, recomputed in plain Python from the fixture."""
    prices_by_brand: dict[str, list[float]] = defaultdict(list)
    for product in products:
        prices_by_brand[product.get("brand", "N/A")].append(product["price"])
    averages = [(brand, round(mean(prices), 2)) for brand, prices in prices_by_brand.items()]
    return sorted(averages, key=lambda brand_average: (-brand_average[1], brand_average[0]))


def materialize_products(
    api_root: str, run_config: dg.RunConfig | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        PRODUCTS_ASSETS,
        resources={"products_api": HttpJsonApi(url=f"{api_root}/products")},
        run_config=run_config,
        raise_on_error=False,
    )


def keep_columns(columns: list[str]) -> dg.RunConfig:
    return dg.RunConfig(
        ops={"getting_started__products_filtered": ProductsFilterConfig(columns_to_keep=columns)}
    )


def materialize_pulls(url: str, timeout_seconds: float = 5.0) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [docker_image_pulls],
        resources={"dockerhub_api": HttpJsonApi(url=url, timeout_seconds=timeout_seconds)},
        raise_on_error=False,
    )


def pulls_failure(url: str, timeout_seconds: float = 5.0) -> str:
    """Why ``docker_image_pulls`` failed when its API was at ``url``."""
    result = materialize_pulls(url, timeout_seconds)
    return failure_message(result, "getting_started__docker_image_pulls")


def failure_message(result: dg.ExecuteInProcessResult, node: str) -> str:
    assert not result.success
    return result.failure_data_for_node(node).user_failure_data.description


def materialization_metadata(
    result: dg.ExecuteInProcessResult, node: str
) -> dict[str, dg.MetadataValue]:
    (materialization,) = result.asset_materializations_for_node(node)
    return materialization.metadata


# --- products pipeline -------------------------------------------------------------------


def test_summary_averages_price_per_brand_most_expensive_first(api_root: str) -> None:
    result = materialize_products(api_root)

    assert result.success
    summary = result.asset_value(SUMMARY_KEY)
    assert [(row["brand"], row["avg_price"]) for row in summary] == expected_summary(
        PRODUCTS_PAYLOAD["products"]
    )
    assert [row["brand"] for row in summary][:3] == ["Annibale Colombo", "Chanel", "Calvin Klein"]
    assert summary[0]["avg_price"] == 2199.99


def test_summary_rounds_averages_to_cents(api_root: str) -> None:
    averages = {
        row["brand"]: row["avg_price"]
        for row in materialize_products(api_root).asset_value(SUMMARY_KEY)
    }

    # (14.99 + 10.49 + 9.49) / 3 = 11.6566... rounds up; (1.99 + 12.99 + 2.49) / 3 =
    # 5.8233... rounds down.
    assert averages["Velvet Touch"] == 11.66
    assert averages["N/A"] == 5.82
    assert all(round(average, 2) == average for average in averages.values())


def test_products_without_brand_are_averaged_under_na(api_root: str) -> None:
    result = materialize_products(api_root)

    unbranded = [product for product in PRODUCTS_PAYLOAD["products"] if "brand" not in product]
    assert len(unbranded) == 3
    filtered = result.asset_value(FILTERED_KEY)
    assert [row for row in filtered if row["brand"] == "N/A"] == [
        {"brand": "N/A", "price": product["price"]} for product in unbranded
    ]
    assert {"brand": "N/A", "avg_price": round(mean(p["price"] for p in unbranded), 2)} in (
        result.asset_value(SUMMARY_KEY)
    )
    assert materialization_metadata(result, "getting_started__products_filtered")[
        "missing_values"
    ].value == {"brand": 3, "price": 0}


def test_summary_table_is_shown_as_metadata(api_root: str) -> None:
    result = materialize_products(api_root)

    metadata = materialization_metadata(result, "getting_started__brand_price_summary")
    table = metadata["summary"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [(record.data["brand"], record.data["avg_price"]) for record in table.records] == (
        expected_summary(PRODUCTS_PAYLOAD["products"])
    )
    assert [column.name for column in table.schema.columns] == ["brand", "avg_price"]
    assert metadata["dagster/row_count"].value == 9
    raw_metadata = materialization_metadata(result, "getting_started__products_raw")
    assert raw_metadata["dagster/row_count"].value == len(PRODUCTS_PAYLOAD["products"])
    assert raw_metadata["total"].value == 194


def test_filter_keeps_brand_and_price_by_default(api_root: str) -> None:
    filtered = materialize_products(api_root).asset_value(FILTERED_KEY)

    assert len(filtered) == len(PRODUCTS_PAYLOAD["products"])
    assert {tuple(row) for row in filtered} == {("brand", "price")}


def test_filter_keeps_the_configured_columns(api_root: str) -> None:
    columns = ["title", "brand", "price", "warrantyInformation", "colour"]
    result = materialize_products(
        api_root,
        run_config=keep_columns(columns),
    )

    assert result.success
    filtered = result.asset_value(FILTERED_KEY)
    assert [list(row) for row in filtered] == [columns] * len(PRODUCTS_PAYLOAD["products"])
    assert filtered[0] == {
        "title": "Essence Mascara Lash Princess",
        "brand": "Essence",
        "price": 9.99,
        "warrantyInformation": "1 year warranty",
        "colour": "N/A",
    }
    # Extra columns do not change the summary.
    assert [(row["brand"], row["avg_price"]) for row in result.asset_value(SUMMARY_KEY)] == (
        expected_summary(PRODUCTS_PAYLOAD["products"])
    )


def test_summary_without_brand_or_price_fails_naming_the_config(api_root: str) -> None:
    result = materialize_products(
        api_root,
        run_config=keep_columns(["title"]),
    )

    message = failure_message(result, "getting_started__brand_price_summary")
    assert "needs the columns brand and price" in message
    assert "['title']" in message
    assert "columns_to_keep" in message


def test_products_from_unreachable_api_fail_naming_the_url(refused_url: str) -> None:
    result = dg.materialize(
        [products_raw],
        resources={"products_api": HttpJsonApi(url=refused_url)},
        raise_on_error=False,
    )

    message = failure_message(result, "getting_started__products_raw")
    assert f"GET {refused_url} failed: could not connect" in message
    assert "Connection refused" in message


# --- docker image pulls ------------------------------------------------------------------


def test_pull_count_and_duration_are_recorded_as_metadata(api_root: str) -> None:
    result = materialize_pulls(f"{api_root}{DOCKERHUB_PATH}")

    assert result.success
    metadata = materialization_metadata(result, "getting_started__docker_image_pulls")
    assert metadata["pull_count"].value == DOCKERHUB_PAYLOAD["pull_count"] == 12345678
    assert isinstance(metadata["pull_count"], dg.IntMetadataValue)
    duration = metadata["duration_seconds"]
    assert isinstance(duration, dg.FloatMetadataValue)
    assert 0 <= duration.value < 5
    assert metadata["url"].value == f"{api_root}{DOCKERHUB_PATH}"


def test_refused_connection_fails_naming_url_and_problem(refused_url: str) -> None:
    message = pulls_failure(refused_url)

    assert message.startswith(f"GET {refused_url} failed: could not connect")
    assert "Connection refused" in message


def test_error_status_fails_with_status_and_body(api_root: str) -> None:
    url = f"{api_root}/unavailable"
    message = pulls_failure(url)

    assert message == (
        f"GET {url} answered HTTP 503 Service Unavailable: upstream is down for maintenance"
    )


def test_silent_api_times_out_after_the_configured_seconds(api_root: str) -> None:
    url = f"{api_root}/stall"
    message = pulls_failure(url, timeout_seconds=0.2)

    assert message == f"GET {url} timed out: no answer within 0.2 seconds"


def test_html_instead_of_json_fails_clearly(api_root: str) -> None:
    url = f"{api_root}/html"
    message = pulls_failure(url)

    assert message.startswith(f"GET {url} answered HTTP 200 but the body is not JSON")
    assert "text/html" in message


def test_json_without_pull_count_fails_clearly(api_root: str) -> None:
    url = f"{api_root}/products"
    message = pulls_failure(url)

    assert message.startswith(f"GET {url} answered JSON without an integer 'pull_count'")


# --- hello world -------------------------------------------------------------------------


def run_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What the run's ops logged, in order (Dagster's own events left out)."""
    return [entry.user_message for entry in instance.all_logs(run_id) if not entry.is_dagster_event]


def test_hello_world_greets_hands_on_its_output_and_says_goodbye() -> None:
    with dg.instance_for_test() as instance:
        result = hello_world.execute_in_process(
            instance=instance, run_config={"name": "Ada", "sleep_seconds": 0}
        )

        assert result.success
        assert result.output_for_node("generate_output") == GENERATED_OUTPUT
        messages = run_messages(instance, result.run_id)
    assert messages.index("Hello, Ada!") < messages.index("Goodbye, Ada!")
    assert f"This is an output: {GENERATED_OUTPUT}" in messages
    assert "Sleeping for 0 seconds" in messages
    assert messages[-1] == "Goodbye, Ada!"


def test_hello_world_defaults_to_will_and_a_15_second_sleep() -> None:
    with dg.instance_for_test() as instance:
        result = hello_world.execute_in_process(instance=instance, run_config={"sleep_seconds": 0})
        messages = run_messages(instance, result.run_id)
    assert "Hello, Will!" in messages
    assert "Goodbye, Will!" in messages

    resolved = dg.validate_run_config(hello_world, {})
    assert resolved["ops"]["sleep"]["config"] == {"seconds": 15.0}
    assert resolved["ops"]["hello_message"]["config"] == {"name": "Will"}


# Runs one hello_world to its sleep on the instance in argv[1]; killed by the test.
SLEEPING_RUN = """
import sys
import dagster as dg
from taxi_platform.defs.getting_started.hello_world import hello_world
instance = dg.DagsterInstance.from_config(sys.argv[1])
hello_world.execute_in_process(instance=instance, run_config={"sleep_seconds": 600})
"""


@contextmanager
def sleeping_runs(instance_dir: Path, count: int) -> Iterator[tuple[dg.DagsterInstance, list[str]]]:
    """``count`` hello_world runs, each in its own process and inside its sleep step.

    Yields the shared instance and the runs' ids; the processes are killed on exit (their
    runs stay STARTED, which is all the throwaway instance needs to show).
    """
    instance_dir.mkdir()
    logs = [instance_dir / f"sleeping_run_{index}.log" for index in range(count)]
    processes = []
    try:
        for log in logs:
            with log.open("w") as log_file:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", SLEEPING_RUN, str(instance_dir)],
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                    )
                )
        with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
            yield instance, wait_for_sleeping_runs(instance, processes, logs)
    finally:
        for process in processes:
            process.kill()
            process.wait()


def wait_for_sleeping_runs(
    instance: dg.DagsterInstance, processes: list[subprocess.Popen], logs: list[Path]
) -> list[str]:
    """The ids of the hello_world runs once each process's run is inside its sleep step."""
    deadline = time.monotonic() + 120
    while True:
        runs = instance.get_runs(dg.RunsFilter(job_name="hello_world"))
        sleeping = [
            run.run_id
            for run in runs
            if any(
                entry.step_key == "sleep"
                for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            )
        ]
        if len(sleeping) == len(processes):
            return sleeping
        for process, log in zip(processes, logs, strict=True):
            # Waiting on the children paces the polling and notices one that died.
            try:
                process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"a sleeping run exited early:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{len(sleeping)} of {len(processes)} runs reached their sleep in 120 s")


def test_third_concurrent_hello_world_fails_to_start(tmp_path: Path) -> None:
    with sleeping_runs(tmp_path / "dagster_home", count=2) as (instance, sleeping):
        third = hello_world.execute_in_process(
            instance=instance, run_config={"sleep_seconds": 0}, raise_on_error=False
        )

        message = failure_message(third, "hello_message")
        assert message.startswith(
            "hello_world allows at most 2 concurrent runs and 2 are already running"
        )
        assert all(run_id in message for run_id in sleeping)
        assert "Launch it again once one of them has finished." in message
        assert third.get_failed_step_keys() == {"hello_message"}
        assert not any("Hello" in line for line in run_messages(instance, third.run_id))


def test_one_run_in_progress_leaves_room_for_a_second(tmp_path: Path) -> None:
    with sleeping_runs(tmp_path / "dagster_home", count=1) as (instance, _):
        second = hello_world.execute_in_process(instance=instance, run_config={"sleep_seconds": 0})

        assert second.success


def test_schedule_runs_hello_world_daily_at_ten_and_starts_stopped() -> None:
    (schedule,) = getting_started_definitions().schedules

    assert schedule.name == "hello_world_daily"
    assert schedule.job_name == "hello_world"
    assert schedule.cron_schedule == "0 10 * * *"
    assert schedule.execution_timezone == "America/New_York"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_schedule_timezone_is_configurable() -> None:
    (schedule,) = getting_started_definitions(schedule_timezone="Europe/Berlin").schedules

    assert schedule.execution_timezone == "Europe/Berlin"


# --- the definitions ---------------------------------------------------------------------


def test_definitions_group_the_assets_and_point_at_the_public_apis() -> None:
    defs = getting_started_definitions()
    dg.Definitions.validate_loadable(defs)

    asset_graph = defs.resolve_asset_graph()
    keys = {key for key in asset_graph.get_all_asset_keys()}
    assert keys == {
        dg.AssetKey(["getting_started", name])
        for name in (
            "docker_image_pulls",
            "products_raw",
            "products_filtered",
            "brand_price_summary",
        )
    }
    assert {asset_graph.get(key).group_name for key in keys} == {"getting_started"}
    assert defs.resolve_job_def("hello_world").name == "hello_world"
    assert defs.resources["dockerhub_api"].url == DOCKERHUB_REPOSITORY_URL
    assert defs.resources["products_api"].url == PRODUCTS_URL
