"""The commands the README gives a newcomer, run as they are written."""

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
import requests

from taxi_platform.lib.catalog import GREEN
from taxi_platform.local.ports import free_port
from taxi_platform.tools.generate import write_month
from taxi_platform.tools.mirror import ReleaseMirror

BIN = Path(sys.executable).parent


@pytest.fixture
def mirror(tmp_path: Path):
    write_month(GREEN, date(2019, 1, 1), 1200, tmp_path / "mirror", seed=4)
    with ReleaseMirror(tmp_path / "mirror") as server:
        yield server


@pytest.fixture
def platform_env(scratch_root: Path, tmp_path: Path, mirror: ReleaseMirror) -> dict[str, str]:
    """Only environment variables: the embedded default in a folder of the test's own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TAXI_", "DAGSTER_", "GCP_"))
    }
    server_dir = scratch_root / f"embedded-{tmp_path.name}"
    env.update(
        TAXI_HOME=str(tmp_path / "home"),
        TAXI_SOURCE_URL=mirror.base_url,
        TAXI_POSTGRES_DIR=str(server_dir),
        TAXI_POSTGRES_PORT=str(free_port()),
    )
    yield env
    subprocess.run(
        [str(BIN / "taxi-platform"), "db", "stop"], env=env, capture_output=True, check=False
    )


def materialize_from_the_command_line(env: dict[str, str]) -> str:
    completed = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "taxi_platform.definitions",
            "--select",
            "*postgres/green_tripdata",
            "--partition",
            "2019-01-01",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stderr + completed.stdout


def test_dagster_asset_materialize_with_only_env_vars_loads_then_inserts_nothing(
    platform_env: dict[str, str],
) -> None:
    first = materialize_from_the_command_line(platform_env)
    second = materialize_from_the_command_line(platform_env)

    assert "1,200 rows inserted, 0 already present" in first
    assert "0 rows inserted, 1,200 already present" in second
    # The embedded server's password never reaches the logs.
    password = (Path(platform_env["TAXI_POSTGRES_DIR"]) / "password").read_text().strip()
    assert password not in first + second


def _graphql(url: str, query: str) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]


def test_run_command_serves_the_ui_with_assets_and_partitions_on_127_0_0_1(
    platform_env: dict[str, str],
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "taxi-platform"), "up", "--port", str(port), "--no-local-gcp"],
        env=platform_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        assets = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                data = _graphql(url, "{ assetNodes { assetKey { path } isPartitioned } }")
                assets = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
                if assets:
                    break
            except (requests.ConnectionError, requests.HTTPError, KeyError, TypeError):
                pass
            time.sleep(0.5)  # polling the webserver's start-up, bounded by the deadline
        assert assets, "the UI did not come up"
        assert assets["postgres/green_tripdata"]["isPartitioned"] is True
        assert {"raw/yellow_tripdata_csv", "bigquery/green_tripdata"} <= set(assets)
        keys = _graphql(
            url,
            '{ assetNodeOrError(assetKey: {path: ["postgres", "green_tripdata"]}) '
            "{ ... on AssetNode { partitionKeys } } }",
        )["assetNodeOrError"]["partitionKeys"]
        assert keys[0] == "2019-01-01" and "2021-07-01" in keys
        # Dagster's storage is the embedded Postgres, not the default SQLite.
        home = Path(platform_env["TAXI_HOME"]) / "dagster_home"
        assert "TaxiRunStorage" in (home / "dagster.yaml").read_text()
        assert not list(home.rglob("*.db"))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert f"the UI listens on 127.0.0.1 only: http://127.0.0.1:{port}" in output


def test_generate_and_mirror_commands_serve_months_in_the_release_layout(tmp_path: Path) -> None:
    out = tmp_path / "mirror"
    generated = subprocess.run(
        [
            str(BIN / "taxi-platform"),
            "generate",
            "--taxi",
            "green",
            "--from",
            "2019-01",
            "--to",
            "2019-02",
            "--rows",
            "250",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "green_tripdata_2019-02.csv.gz (250 rows)" in generated.stdout
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "taxi-platform"), "mirror", "--folder", str(out), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/green/green_tripdata_2019-01.csv.gz"
        deadline = time.monotonic() + 60
        response = None
        while time.monotonic() < deadline:
            try:
                response = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)  # waiting for the mirror to bind, bounded by the deadline
        assert response is not None and response.status_code == 200
        assert response.content == (out / "green" / "green_tripdata_2019-01.csv.gz").read_bytes()
        zones = requests.get(f"http://127.0.0.1:{port}/misc/taxi_zone_lookup.csv", timeout=5)
        assert zones.status_code == 200 and b"LocationID" in zones.content
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
