"""``taxi-platform``: start the platform, serve and generate offline data, operate loads.

Each sub-command calls the same functions the assets and tests use; nothing here knows
how a month is loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from taxi_platform.lib.catalog import TAXIS
from taxi_platform.lib.months import months_between, parse_month
from taxi_platform.local.embedded_postgres import DAGSTER_DATABASE, embedded_server, taxi_home
from taxi_platform.tools.backfill import add_backfill_command

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _dagster_home() -> Path:
    """The instance folder: ``$DAGSTER_HOME``, or one under ``$TAXI_HOME`` with our yaml."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = taxi_home() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def prepare_environment() -> dict[str, str]:
    """The variables every Dagster process of a local platform needs.

    Starts the embedded Postgres unless both the taxi database and Dagster's storage
    are configured elsewhere. The URLs with their passwords stay in the environment of
    the child processes; they are never printed.
    """
    env = dict(os.environ)
    if not (env.get("TAXI_DATABASE_URL") and env.get("DAGSTER_POSTGRES_URL")):
        server = embedded_server().start()
        for note in server.notes:
            print(f"embedded Postgres: {note}")
        print(f"embedded Postgres 18 running on 127.0.0.1:{server.port}, data in {server.data_dir}")
        env.setdefault("DAGSTER_POSTGRES_URL", server.url(DAGSTER_DATABASE))
    env["DAGSTER_HOME"] = str(_dagster_home())
    return env


def command_up(args: argparse.Namespace) -> int:
    env = prepare_environment()
    if not env.get("GCP_PROJECT_ID") and not args.no_local_gcp:
        from taxi_platform.local.gcp_standins import start_local_gcp

        env.update(start_local_gcp(taxi_home() / "local_gcp"))
        print(
            "no GCP_PROJECT_ID: the Google Cloud assets use local stand-ins "
            f"(fake-gcs-server at {env.get('STORAGE_EMULATOR_HOST')}, BigQuery SQL on DuckDB)"
        )
    print(
        f"Dagster UI and daemon starting; the UI listens on {args.host} only: "
        f"http://{args.host}:{args.port}"
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: the Dagster UI has no login; keep it behind the proxy (see README)")
    # `dg dev` finds the project (pyproject.toml's [tool.dg]) from the working directory
    # and runs the webserver and the daemon in this virtual environment.
    command = [
        str(Path(sys.executable).with_name("dg")),
        "dev",
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    env["VIRTUAL_ENV"] = sys.prefix
    os.chdir(PROJECT_ROOT)
    os.execve(command[0], command, env)
    return 0


def command_db(args: argparse.Namespace) -> int:
    server = embedded_server()
    if args.action == "start":
        server.start()
        for note in server.notes:
            print(f"embedded Postgres: {note}")
        print(f"embedded Postgres running on 127.0.0.1:{server.port} ({server.data_dir})")
    elif args.action == "stop":
        server.stop()
        print("embedded Postgres stopped")
    elif args.action == "url":
        server.start()
        url = server.url()
        if not args.show_password:
            password = server.password_file.read_text().strip()
            url = url.replace(password, "********")
        print(url)
    return 0


def command_mirror(args: argparse.Namespace) -> int:
    from taxi_platform.tools.mirror import serve_forever

    serve_forever(Path(args.folder), args.host, args.port)
    return 0


def command_generate(args: argparse.Namespace) -> int:
    from taxi_platform.tools.generate import write_zone_lookup
    from taxi_platform.tools.generate_tlc import writers_for

    out_dir = Path(args.out)
    taxis = list(TAXIS.values()) if args.taxi == "all" else [TAXIS[args.taxi]]
    months = months_between(parse_month(args.from_month), parse_month(args.to_month))
    for taxi in taxis:
        for month in months:
            for write in writers_for(args.layout, month):
                path = write(taxi, month, args.rows, out_dir, seed=args.seed)
                print(f"wrote {path} ({args.rows:,} rows)")
    print(f"wrote {write_zone_lookup(out_dir)}")
    return 0


def command_purge(args: argparse.Namespace) -> int:
    from taxi_platform.defs.resources import default_resources

    landing = default_resources()["landing"]
    taxis = list(TAXIS) if args.taxi == "all" else [args.taxi]
    before = parse_month(args.before) if args.before else None
    removed = landing.purge(taxis, before)
    for path, size in removed:
        print(f"removed {path} ({size:,} bytes)")
    total = sum(size for _, size in removed)
    print(f"freed {total:,} bytes in {len(removed)} files under {landing.root_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taxi-platform", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the Dagster UI and daemon (embedded default)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=3000)
    up.add_argument(
        "--no-local-gcp",
        action="store_true",
        help="without GCP_PROJECT_ID, do not start the local Google Cloud stand-ins",
    )
    up.set_defaults(handler=command_up)

    db = commands.add_parser("db", help="manage the embedded Postgres")
    db.add_argument("action", choices=["start", "stop", "url"])
    db.add_argument("--show-password", action="store_true")
    db.set_defaults(handler=command_db)

    mirror = commands.add_parser("mirror", help="serve a folder in the release URL layout")
    mirror.add_argument("--folder", default=str(taxi_home() / "mirror"))
    mirror.add_argument("--host", default="127.0.0.1")
    mirror.add_argument("--port", type=int, default=8765)
    mirror.set_defaults(handler=command_mirror)

    generate = commands.add_parser("generate", help="write realistic months into a mirror folder")
    generate.add_argument("--taxi", choices=[*TAXIS, "all"], default="all")
    generate.add_argument("--from", dest="from_month", default="2019-01")
    generate.add_argument("--to", dest="to_month", default="2019-03")
    generate.add_argument("--rows", type=int, default=10_000)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", default=str(taxi_home() / "mirror"))
    generate.add_argument(
        "--layout",
        choices=["auto", "course", "tlc", "both"],
        default="auto",
        help="course: .csv.gz in the course releases' layout; tlc: .parquet under trip-data/ "
        "as the TLC serves it; auto (default): course for 2019-01..2021-07, tlc after, as "
        "TAXI_SOURCES=course,tlc asks; both: each month in both layouts",
    )
    generate.set_defaults(handler=command_generate)

    purge = commands.add_parser("purge", help="delete landed month files to free disk")
    purge.add_argument("--taxi", choices=[*TAXIS, "all"], default="all")
    purge.add_argument("--before", help="only months before YYYY-MM")
    purge.set_defaults(handler=command_purge)

    add_backfill_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
