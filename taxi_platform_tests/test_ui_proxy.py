"""The UI's login: deploy/nginx's configuration, run by a real nginx in front of a real webserver.

The compose file's `ui_proxy` renders `deploy/nginx/templates/default.conf.template` and runs
`deploy/nginx/40-htpasswd.sh` at start-up. This test does the same two steps with Debian's
nginx on 127.0.0.1, the hash made by the command the README gives, and the stack's code
server and webserver behind it. So it checks the files that ship, not a copy: without the
right login nothing reaches Dagster, with it the UI, its GraphQL and its websocket work, and
neither the password nor its hash turns up in a log.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from taxi_platform.local.embedded_postgres import EmbeddedPostgres
from taxi_platform.local.ports import free_port
from taxi_platform_tests.support.stack import (
    PROJECT_ROOT,
    DagsterStack,
    ManagedProcess,
    platform_stack,
    wait_until,
)

NGINX_DIR = PROJECT_ROOT / "deploy" / "nginx"
TEMPLATE = NGINX_DIR / "templates" / "default.conf.template"
HTPASSWD_SCRIPT = NGINX_DIR / "40-htpasswd.sh"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx not installed (apt-get install nginx; see deploy/ci-packages.txt)"
)

UI_USER = "taxi_admin"
UI_PASSWORD = "correct-horse-battery-staple-7d41"


def render_template(template: str, values: dict[str, str]) -> str:
    """What the official image's envsubst does: replace only the variables it is given."""
    rendered = template
    for name, value in values.items():
        rendered = rendered.replace(f"${{{name}}}", value)
    leftover = re.findall(r"\$\{[A-Z_][A-Z0-9_]*\}", rendered)
    assert not leftover, f"the template uses variables the proxy is not given: {leftover}"
    return rendered


def hash_password(password: str) -> str:
    """The README's command: `openssl passwd -6`, password on stdin (never on a command line)."""
    made = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


@dataclass
class Proxy:
    url: str
    folder: Path
    password_hash: str
    process: ManagedProcess
    stack: DagsterStack

    def logs(self) -> str:
        texts = [path.read_text(errors="replace") for path in self.folder.glob("*.log")]
        return "\n".join(texts) + self.stack.all_logs()


@pytest.fixture(scope="module")
def proxy(scratch_root: Path, postgres_server: EmbeddedPostgres) -> Iterator[Proxy]:
    # Under scratch_root, not pytest's tmp_path: nginx's workers (www-data) must reach the
    # htpasswd file and their temp folders.
    root = scratch_root / f"ui_proxy_{free_port()}"
    root.mkdir()
    with platform_stack(root, postgres_server, with_daemon=False) as stack:
        webserver_port = int(stack.webserver_url.rsplit(":", 1)[1])
        yield from _run_nginx(root / "nginx", stack, webserver_port)


def _run_nginx(folder: Path, stack: DagsterStack, webserver_port: int) -> Iterator[Proxy]:
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "conf.d").mkdir()
    listen_port = free_port()
    password_hash = hash_password(UI_PASSWORD)
    htpasswd = folder / "htpasswd"

    # Step 1 of the container's start: the entrypoint script writes the htpasswd file.
    script = subprocess.run(
        ["sh", str(HTPASSWD_SCRIPT)],
        env={
            "PATH": os.environ["PATH"],
            "UI_USER": UI_USER,
            "UI_PASSWORD_HASH": password_hash,
            "UI_HTPASSWD_FILE": str(htpasswd),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    (folder / "htpasswd_script.log").write_text(script.stdout + script.stderr)

    # Step 2: the template, rendered with what docker-compose.yaml gives the proxy, except
    # that it listens on loopback and the webserver is this test's.
    (folder / "conf.d" / "default.conf").write_text(
        render_template(
            TEMPLATE.read_text(),
            {
                "UI_PROXY_LISTEN": f"127.0.0.1:{listen_port}",
                "UI_HTPASSWD_FILE": str(htpasswd),
                "DAGSTER_WEBSERVER_UPSTREAM": f"127.0.0.1:{webserver_port}",
            },
        )
    )
    # The image's nginx.conf is the stock one around conf.d; this is its minimal equivalent.
    worker_user = "user www-data www-data;" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (folder / "nginx.conf").write_text(
        f"""{worker_user}
worker_processes 1;
daemon off;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 64; }}
http {{
    access_log {folder / "access.log"};
{temp_paths}
    include {folder / "conf.d" / "default.conf"};
}}
"""
    )
    log_path = folder / "nginx_stdout.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", "stderr"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = ManagedProcess("nginx", popen, log_path)
    url = f"http://127.0.0.1:{listen_port}"
    try:
        wait_until(
            lambda: requests.get(f"{url}/healthz", timeout=5).status_code == 200,
            timeout=30,
            what="nginx",
            watch=[process],
        )
        yield Proxy(url, folder, password_hash, process, stack)
    finally:
        process.stop()


VERSION_QUERY = {"query": "{ version }"}


def test_without_credentials_nothing_reaches_dagster(proxy: Proxy) -> None:
    page = requests.get(proxy.url + "/", timeout=10)
    assert page.status_code == 401
    assert 'Basic realm="taxi_platform"' in page.headers["WWW-Authenticate"]
    assert requests.post(proxy.url + "/graphql", json=VERSION_QUERY, timeout=10).status_code == 401
    assert requests.get(proxy.url + "/server_info", timeout=10).status_code == 401


@pytest.mark.parametrize(
    "credentials",
    [(UI_USER, "wrong-password"), ("admin", UI_PASSWORD), (UI_USER, "")],
    ids=["wrong-password", "wrong-user", "empty-password"],
)
def test_wrong_credentials_get_401(proxy: Proxy, credentials: tuple[str, str]) -> None:
    assert requests.get(proxy.url + "/", auth=credentials, timeout=10).status_code == 401
    graphql = requests.post(
        proxy.url + "/graphql", json=VERSION_QUERY, auth=credentials, timeout=10
    )
    assert graphql.status_code == 401


def test_the_login_reaches_the_ui_and_its_graphql(proxy: Proxy) -> None:
    login = (UI_USER, UI_PASSWORD)
    page = requests.get(proxy.url + "/", auth=login, timeout=30)
    assert page.status_code == 200
    assert '<div id="root"' in page.text and "/_next/static/" in page.text  # the UI's app shell
    info = requests.get(proxy.url + "/server_info", auth=login, timeout=30)
    assert info.json()["dagster_webserver_version"]

    answer = requests.post(proxy.url + "/graphql", json=VERSION_QUERY, auth=login, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["data"]["version"]

    assets = requests.post(
        proxy.url + "/graphql",
        json={"query": "{ assetNodes { assetKey { path } } }"},
        auth=login,
        timeout=30,
    )
    keys = {"/".join(node["assetKey"]["path"]) for node in assets.json()["data"]["assetNodes"]}
    assert "postgres/green_tripdata" in keys


def test_the_ui_websocket_upgrades_through_the_proxy(proxy: Proxy) -> None:
    """Live run updates use a websocket on /graphql; the proxy must pass the upgrade on."""
    port = int(proxy.url.rsplit(":", 1)[1])
    token = base64.b64encode(f"{UI_USER}:{UI_PASSWORD}".encode()).decode()
    handshake = (
        "GET /graphql HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: graphql-ws\r\n"
        f"Authorization: Basic {token}\r\n"
        "\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(handshake.encode())
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 101"), status_line


def test_no_secret_in_any_log(proxy: Proxy) -> None:
    # Make sure every kind of request has been logged before looking.
    requests.get(proxy.url + "/", auth=(UI_USER, UI_PASSWORD), timeout=30)
    requests.get(proxy.url + "/", auth=(UI_USER, "wrong-password"), timeout=30)
    logs = proxy.logs()
    assert UI_USER in logs  # the access log names the user: the logs were read
    assert UI_PASSWORD not in logs
    assert proxy.password_hash not in logs
    assert proxy.password_hash.split("$")[-1] not in logs
    assert base64.b64encode(f"{UI_USER}:{UI_PASSWORD}".encode()).decode() not in logs
