"""docker-compose.yaml, checked without a Docker engine.

No engine runs here, so what `docker compose config` would say is checked by hand: the file
against the Compose specification's JSON schema (the current one, as vendored and pinned by
`check-jsonschema`), before and after `.env.example` is interpolated into it; every
variable that `dagster.yaml`, `deploy/workspace.yaml`, the nginx files and the code read is
given to the service that reads it; every `${VAR}` is documented in `.env.example`; and no
secret, or default for one, is written in any committed file.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
INSTANCE_YAML = PROJECT_ROOT / "dagster.yaml"
STACK_WORKSPACE_YAML = PROJECT_ROOT / "deploy" / "workspace.yaml"
NGINX_TEMPLATE = PROJECT_ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
HTPASSWD_SCRIPT = PROJECT_ROOT / "deploy" / "nginx" / "40-htpasswd.sh"
SERVERS_JSON = PROJECT_ROOT / "deploy" / "pgadmin" / "servers.json"
PACKAGE = PROJECT_ROOT / "taxi_platform"

DAGSTER_SERVICES = ("taxi_code", "dagster_webserver", "dagster_daemon")
PASSWORD_HASH = re.compile(r"\$(?:1|5|6|apr1|2[aby])\$[./A-Za-z0-9$]{20,}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|HASH|CREDS|KEY", re.IGNORECASE)

# Variables the code reads that the Compose stack deliberately leaves unset, and why.
LOCAL_RUN_ONLY = {
    "DAGSTER_WEBSERVER_URL": "the `taxi-platform backfill` client's target, run on the host",
    "TAXI_POSTGRES_DIR": "the embedded Postgres; the stack sets TAXI_DATABASE_URL instead",
    "TAXI_POSTGRES_PORT": "the embedded Postgres; the stack sets TAXI_DATABASE_URL instead",
    "STORAGE_EMULATOR_HOST": "local GCS stand-in of `taxi-platform up --local-gcp`",
    "BIGQUERY_EMULATOR_HOST": "local BigQuery stand-in of `taxi-platform up --local-gcp`",
    "TAXI_LOCAL_BIGQUERY_DATABASE": "local BigQuery stand-in of `taxi-platform up --local-gcp`",
    "TAXI_LOCAL_GCS_ROOT": "local GCS stand-in of `taxi-platform up --local-gcp`",
    "DAGSTER_GRPC_TIMEOUT_SECONDS": "set by `taxi-platform up` for the processes that launch "
    "runs; the compose file gives it to the webserver and the daemon",
}

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(ValueError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise MissingVariable(f"{name}: {arg}")
        return ""

    return _VARIABLE.sub(replace, value)


def variables_in(value: Any) -> dict[str, set[str]]:
    """Every ${VAR} in the raw file, with the operators it is used with ('' for none)."""
    found: dict[str, set[str]] = {}
    for match in _VARIABLE.finditer(json.dumps(value)):
        if match.group("name"):
            found.setdefault(match.group("name"), set()).add(match.group("op") or "")
    return found


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip().strip("'\"")
    return values


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def example_env_with_secrets() -> dict[str, str]:
    """.env.example as a user fills it in: every empty secret set to a placeholder."""
    env = read_env_file(ENV_EXAMPLE)
    for name, value in env.items():
        if SECRET_NAME.search(name) and not value:
            env[name] = "$6$salt$hash" if name.endswith("HASH") else "placeholder-not-a-secret"
    return env


def compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def dockerfile_env() -> set[str]:
    names: set[str] = set()
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            names.update(re.findall(r"([A-Z_][A-Z0-9_]*)=", line))
    return names


def env_names_in_config(value: Any) -> set[str]:
    """Dagster config's `{env: NAME}` sources."""
    if isinstance(value, dict):
        names = {value["env"]} if isinstance(value.get("env"), str) else set()
        for item in value.values():
            names |= env_names_in_config(item)
        return names
    if isinstance(value, list):
        return set().union(*(env_names_in_config(item) for item in value)) if value else set()
    return set()


def env_names_read_by_code() -> dict[str, set[str]]:
    """Names the package reads from the environment: os.environ[...], os.environ.get,
    os.getenv, dg.EnvVar and helpers with `env` in their name, module constants resolved."""
    found: dict[str, set[str]] = {}
    trees = {
        path: ast.parse(path.read_text(), filename=str(path)) for path in PACKAGE.rglob("*.py")
    }
    # Constants of every module: a name may be defined in one module and read in another.
    package_constants = {
        name: value for tree in trees.values() for name, value in _module_constants(tree).items()
    }
    for path, tree in trees.items():
        constants = {**package_constants, **_module_constants(tree)}
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call) and node.args and "env" in ast.unparse(node.func).lower():
                name = _env_name(node.args[0], constants)
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
                name = _env_name(node.slice, constants)
            if name:
                found.setdefault(name, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


def _module_constants(tree: ast.Module) -> dict[str, str]:
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _env_name(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        value = node.value
    elif isinstance(node, ast.Name) and node.id in constants:
        value = constants[node.id]
    else:
        return None
    return value if re.fullmatch(r"[A-Z][A-Z0-9_]*", value) else None


def template_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text))


def test_compose_file_follows_the_compose_specification() -> None:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    raw = load_compose()
    for document in (raw, interpolate(raw, example_env_with_secrets())):
        errors = sorted(
            validator_class(schema, format_checker=validator_class.FORMAT_CHECKER).iter_errors(
                document
            ),
            key=str,
        )
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_catches_a_mistake() -> None:
    """The validation above is not vacuous: a misspelt key is rejected."""
    broken = load_compose()
    broken["services"]["pgdatabase"]["healthchek"] = broken["services"]["pgdatabase"].pop(
        "healthcheck"
    )
    schema = compose_schema()
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def test_every_variable_is_documented_in_env_example_and_used() -> None:
    used = variables_in(load_compose())
    documented = read_env_file(ENV_EXAMPLE)
    assert sorted(set(used) - set(documented)) == [], "used in compose, missing in .env.example"
    assert sorted(set(documented) - set(used)) == [], "in .env.example, never used by compose"


def test_secrets_have_no_default_and_stop_compose_when_unset() -> None:
    used = variables_in(load_compose())
    example = read_env_file(ENV_EXAMPLE)
    secrets = {name for name in used if SECRET_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "DAGSTER_POSTGRES_PASSWORD", "PGADMIN_DEFAULT_PASSWORD"} <= secrets
    assert "UI_PASSWORD_HASH" in secrets
    for name in secrets:
        assert example[name] == "", f".env.example ships a value for {name}"
        # `:?` for required secrets; an empty `:-` only for optional ones (GCP_CREDS).
        for op in used[name]:
            assert op == ":?" or (op == ":-" and _default_of(name) == ""), (name, op)
    # As shipped, .env.example does not start the stack: no default login exists.
    with pytest.raises(MissingVariable):
        interpolate(load_compose(), example)


def _default_of(name: str) -> str:
    text = COMPOSE_FILE.read_text()
    defaults = re.findall(r"\$\{" + name + r":-([^}]*)\}", text)
    return "".join(defaults)


def test_no_secret_is_written_in_any_committed_deployment_file() -> None:
    compose = load_compose()
    for service_name, service in compose["services"].items():
        for name, value in service_environment(service).items():
            if SECRET_NAME.search(name):
                assert re.fullmatch(r"\$\{[A-Z_]+:[?-][^}]*\}", value), (service_name, name)
            # URLs carry passwords only from .env.
            references_only = re.sub(r"\$\{[^}]*\}", "VAR", value)
            for password in re.findall(r"://[^:/@]+:([^@]+)@", references_only):
                assert password == "VAR", (service_name, name)
        assert "env_file" not in service, f"{service_name} would get every secret in .env"
    for path in (DOCKERFILE, SERVERS_JSON, NGINX_TEMPLATE, HTPASSWD_SCRIPT, STACK_WORKSPACE_YAML):
        text = path.read_text()
        assert not re.search(r"(?i)password\s*[=:]\s*\S", text.replace("PASSWORD_HASH", "")), path
        assert not PASSWORD_HASH.search(text), f"a password hash is written in {path}"
    for path in (COMPOSE_FILE, ENV_EXAMPLE):
        assert not PASSWORD_HASH.search(path.read_text()), f"a password hash is written in {path}"
    ignored = DOCKERIGNORE.read_text().split()
    assert ".env" in ignored, ".env must never be sent to the image build"
    tracked = subprocess.run(
        ["git", "ls-files", ".env"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout
    assert tracked.strip() == "", ".env is committed"


def test_only_the_proxy_pgadmin_and_taxi_database_are_published_on_loopback() -> None:
    services = load_compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"ui_proxy", "pgadmin", "pgdatabase"}
    for name in published:
        for port in services[name]["ports"]:
            assert port.startswith("${PUBLISH_ADDRESS:-127.0.0.1}:"), (name, port)
    assert read_env_file(ENV_EXAMPLE)["PUBLISH_ADDRESS"] == "127.0.0.1"
    interpolated = interpolate(services, example_env_with_secrets())
    assert interpolated["ui_proxy"]["ports"] == ["127.0.0.1:3000:80"]
    assert interpolated["pgadmin"]["ports"] == ["127.0.0.1:8085:80"]
    assert interpolated["pgdatabase"]["ports"] == ["127.0.0.1:5432:5432"]


def test_every_service_is_health_checked_and_waited_for() -> None:
    compose = load_compose()
    services = compose["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
    assert set(services["dagster_webserver"]["depends_on"]) == {"dagster_postgres", "taxi_code"}
    assert set(services["dagster_daemon"]["depends_on"]) == {"dagster_postgres", "taxi_code"}
    assert set(services["taxi_code"]["depends_on"]) == {"dagster_postgres", "pgdatabase"}
    assert set(services["ui_proxy"]["depends_on"]) == {"dagster_webserver"}


def test_stateful_services_keep_state_in_named_volumes() -> None:
    compose = load_compose()
    declared = set(compose["volumes"])
    expected = {
        "pgdatabase": "/var/lib/postgresql",  # postgres:18 keeps PGDATA in 18/docker below it
        "dagster_postgres": "/var/lib/postgresql",
        "pgadmin": "/var/lib/pgadmin",
        "taxi_code": "/var/lib/taxi_platform",
        "dagster_webserver": "/opt/dagster/home/storage",
        "dagster_daemon": "/opt/dagster/home/storage",
    }
    for service, target in expected.items():
        mounts = dict(
            reversed(volume.split(":")[:2]) for volume in compose["services"][service]["volumes"]
        )
        assert target in mounts, (service, mounts)
        assert mounts[target] in declared, (service, mounts[target])
    assert declared == {
        source
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        for source in [volume.split(":")[0]]
        if not source.startswith(".")
    }


def instance_env_names() -> set[str]:
    """What the instance reads: dagster.yaml's `env:` sources, and the variables read by
    our own classes it names (storage that finds its URL itself). Without them, those
    classes would quietly start an embedded Postgres inside each container."""
    config = yaml.safe_load(INSTANCE_YAML.read_text())
    modules = set(re.findall(r"module:\s*(taxi_platform[\w.]*)", INSTANCE_YAML.read_text()))
    files = {module.replace(".", "/") + ".py" for module in modules}
    read_by_classes = {
        name for name, readers in env_names_read_by_code().items() if readers & files
    }
    return (env_names_in_config(config) | read_by_classes) - set(LOCAL_RUN_ONLY)


def test_dagster_services_get_what_dagster_yaml_and_the_workspace_read() -> None:
    services = load_compose()["services"]
    image_env = dockerfile_env()
    instance_vars = instance_env_names()
    workspace_vars = env_names_in_config(yaml.safe_load(STACK_WORKSPACE_YAML.read_text()))
    assert "DAGSTER_POSTGRES_URL" in instance_vars
    assert workspace_vars == {"DAGSTER_CODE_SERVER_HOST", "DAGSTER_CODE_SERVER_PORT"}
    for name in DAGSTER_SERVICES:
        provided = set(service_environment(services[name])) | image_env
        assert instance_vars <= provided, name
    for name in ("dagster_webserver", "dagster_daemon"):
        environment = service_environment(services[name])
        assert workspace_vars <= set(environment), name
        # and they hold no secret they do not need
        assert not {"TAXI_DATABASE_URL", "GCP_CREDS"} & set(environment), name
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which breaks launchRun.
    for name in DAGSTER_SERVICES:
        url = service_environment(services[name])["DAGSTER_POSTGRES_URL"]
        assert url.startswith("postgresql+psycopg2://"), name


def test_run_launches_may_take_as_long_as_taxi_platform_up_allows() -> None:
    """A run's launch waits for its process to start; on a busy 2-core machine that took over
    Dagster's default 60 s and the daemon failed the runs unrun (bench.history)."""
    from taxi_platform.tools.cli import LAUNCH_TIMEOUT_SECONDS

    services = load_compose()["services"]
    for name in ("dagster_webserver", "dagster_daemon"):
        environment = service_environment(services[name])
        assert environment["DAGSTER_GRPC_TIMEOUT_SECONDS"] == LAUNCH_TIMEOUT_SECONDS, name


def test_the_code_server_gets_every_variable_the_code_reads() -> None:
    """A variable read by the code but not given to the code server would silently fall
    back to a local default (the embedded Postgres, ~/.taxi_platform) inside the container."""
    read = env_names_read_by_code()
    assert {"TAXI_DATABASE_URL", "TAXI_SOURCE_URL"} <= set(read)  # the scan works
    provided = set(service_environment(load_compose()["services"]["taxi_code"])) | dockerfile_env()
    missing = {
        name: sorted(files)
        for name, files in read.items()
        if name not in provided and name not in LOCAL_RUN_ONLY
    }
    assert missing == {}, "read by the code, not set for taxi_code in docker-compose.yaml"
    given_to_code = set(service_environment(load_compose()["services"]["taxi_code"]))
    unread = given_to_code - set(read) - {"DAGSTER_POSTGRES_URL"}
    assert unread == set(), "set for taxi_code, read by nothing"


def test_code_server_workspace_and_image_agree() -> None:
    services = load_compose()["services"]
    command = services["taxi_code"]["command"]
    port = command[command.index("--port") + 1]
    location = command[command.index("--location-name") + 1]
    module = command[command.index("--module-name") + 1]
    workspace = yaml.safe_load(STACK_WORKSPACE_YAML.read_text())["load_from"][0]["grpc_server"]
    assert workspace["location_name"] == location == "taxi_platform"
    assert module == "taxi_platform.definitions"
    for name in ("dagster_webserver", "dagster_daemon"):
        environment = service_environment(services[name])
        assert environment["DAGSTER_CODE_SERVER_HOST"] == "taxi_code"
        assert environment["DAGSTER_CODE_SERVER_PORT"] == port
        workspace_arg = services[name]["command"][
            services[name]["command"].index("--workspace") + 1
        ]
        assert workspace_arg == "/opt/dagster/app/deploy/workspace.yaml"
    assert port in services["taxi_code"]["healthcheck"]["test"]
    dockerfile = DOCKERFILE.read_text()
    assert "COPY dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile
    assert "COPY deploy/workspace.yaml ./deploy/workspace.yaml" in dockerfile
    assert "WORKDIR /opt/dagster/app" in dockerfile
    # The three services share one image, and each can build it (no pull of a local tag).
    for name in DAGSTER_SERVICES:
        assert services[name]["build"] == "." and services[name]["image"] == "taxi_platform:latest"


def test_the_proxy_gets_every_variable_its_files_read() -> None:
    proxy = load_compose()["services"]["ui_proxy"]
    environment = service_environment(proxy)
    needed = template_variables(NGINX_TEMPLATE.read_text()) | {
        "UI_USER",
        "UI_PASSWORD_HASH",
        "UI_HTPASSWD_FILE",
    }
    assert needed == set(environment)
    assert environment["DAGSTER_WEBSERVER_UPSTREAM"] == "dagster_webserver:3000"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in proxy["volumes"]}
    assert mounts["/etc/nginx/templates"] == "./deploy/nginx/templates"
    assert mounts["/docker-entrypoint.d/40-htpasswd.sh"] == "./deploy/nginx/40-htpasswd.sh"
    # The image's entrypoint runs only executable scripts.
    assert os.access(HTPASSWD_SCRIPT, os.X_OK)
    git_mode = subprocess.run(
        ["git", "ls-files", "-s", str(HTPASSWD_SCRIPT)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    if git_mode:  # once committed, git must keep the executable bit
        assert git_mode[0] == "100755"


def test_pgadmin_opens_with_pgdatabase_registered() -> None:
    compose = load_compose()
    pgadmin = compose["services"]["pgadmin"]
    environment = service_environment(pgadmin)
    target = environment["PGADMIN_SERVER_JSON_FILE"]
    assert f"./deploy/pgadmin/servers.json:{target}:ro" in pgadmin["volumes"]
    servers = json.loads(SERVERS_JSON.read_text())["Servers"]
    assert len(servers) == 1
    (server,) = servers.values()
    example = read_env_file(ENV_EXAMPLE)
    assert server["Host"] == "pgdatabase"
    assert server["Port"] == 5432
    assert server["MaintenanceDB"] == example["POSTGRES_DB"] == "ny_taxi"
    assert server["Username"] == example["POSTGRES_USER"] == "root"
    assert not any("pass" in key.lower() for key in server), "pgAdmin asks; nothing stored"


def test_compose_reads_the_seed_defaults() -> None:
    """The zoomcamp's names and ports, so its users' habits and clients keep working."""
    services = interpolate(load_compose()["services"], example_env_with_secrets())
    pgdatabase = service_environment(services["pgdatabase"])
    assert (pgdatabase["POSTGRES_USER"], pgdatabase["POSTGRES_DB"]) == ("root", "ny_taxi")
    assert services["pgdatabase"]["image"] == "postgres:18"
    assert services["dagster_postgres"]["image"] == "postgres:18"
    assert services["pgadmin"]["image"].startswith("dpage/pgadmin4")
    assert service_environment(services["pgadmin"])["PGADMIN_DEFAULT_EMAIL"] == "admin@admin.com"
    assert services["ui_proxy"]["image"].startswith("nginx:")


@pytest.mark.parametrize(
    "hash_value",
    ["", "correct-horse-battery-staple", "{PLAIN}correct-horse-battery-staple"],
    ids=["empty", "a-password-not-a-hash", "nginx-plain-text"],
)
def test_the_proxy_refuses_to_start_without_a_real_hash(tmp_path: Path, hash_value: str) -> None:
    """No working default login: the entrypoint script stops the container instead of
    writing an htpasswd file that an empty or plain-text value would make guessable."""
    htpasswd = tmp_path / "htpasswd"
    started = subprocess.run(
        ["sh", str(HTPASSWD_SCRIPT)],
        env={
            "PATH": os.environ["PATH"],
            "UI_USER": "admin",
            "UI_PASSWORD_HASH": hash_value,
            "UI_HTPASSWD_FILE": str(htpasswd),
        },
        capture_output=True,
        text=True,
    )
    assert started.returncode != 0
    assert not htpasswd.exists()
    assert hash_value == "" or hash_value not in started.stderr + started.stdout
