"""The embedded default: its own folder, its own user, loopback only, nothing opened up."""

import os
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest

from taxi_platform.local.embedded_postgres import (
    SERVER_SYSTEM_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
)
from taxi_platform.local.ports import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_keeps_its_data_private_and_listens_on_loopback_only(
    postgres_server: EmbeddedPostgres,
) -> None:
    assert mode(postgres_server.data_dir) == 0o700
    assert mode(postgres_server.password_file) == 0o600
    if os.geteuid() == 0:
        import pwd

        assert pwd.getpwuid(postgres_server.data_dir.stat().st_uid).pw_name == SERVER_SYSTEM_USER
    with psycopg.connect(postgres_server.url("postgres")) as connection:
        settings = dict(
            connection.execute(
                "select name, setting from pg_settings where name in "
                "('listen_addresses', 'server_version_num', 'password_encryption')"
            ).fetchall()
        )
        users = [row[0] for row in connection.execute("select usename from pg_user")]
    assert settings["listen_addresses"] == "127.0.0.1"
    assert int(settings["server_version_num"]) >= 180000
    assert settings["password_encryption"] == "scram-sha-256"
    assert users == ["postgres"]


def test_a_wrong_password_is_refused(postgres_server: EmbeddedPostgres) -> None:
    url = postgres_server.url("postgres")
    password = postgres_server.password_file.read_text().strip()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(password, "not-the-password"), connect_timeout=5)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server's own user exists only as root")
def test_a_folder_behind_a_closed_parent_fails_clearly_and_opens_nothing() -> None:
    closed_parent = Path(tempfile.mkdtemp(prefix="taxi_closed-"))  # mode 700, like /root
    try:
        before = mode(closed_parent)
        server = EmbeddedPostgres(server_dir=closed_parent / "postgres", port=free_port())
        with pytest.raises(EmbeddedPostgresError, match="cannot reach") as error:
            server.start()
        assert "TAXI_POSTGRES_DIR" in str(error.value)
        assert mode(closed_parent) == before == 0o700
    finally:
        import shutil

        shutil.rmtree(closed_parent, ignore_errors=True)
