# The project image: one image for the code server, the webserver and the daemon
# (docker-compose.yaml picks the process with `command:`). The code location is installed
# as a package, so the same `taxi_platform.definitions` module loads here and locally.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    TAXI_HOME=/var/lib/taxi_platform

WORKDIR /opt/dagster/app

# Dependencies first, from the lock file, so that a code change does not reinstall them.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md ./
COPY taxi_platform ./taxi_platform
# Installed in place (editable): the definitions find the dg project (pyproject.toml) above
# the package, as they do in a checkout.
RUN pip install --no-deps -e .

# The instance (storage in dagster_postgres via DAGSTER_POSTGRES_URL, run queue and
# concurrency limits, telemetry off) is the repository's dagster.yaml, unchanged; the
# workspace points at the code server by gRPC.
COPY dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/workspace.yaml ./deploy/workspace.yaml

# Dagster does not need root. The folders that named volumes mount over are created here,
# owned by that user, so that a fresh volume starts out writable for it.
RUN useradd --system --uid 10001 --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
    && mkdir -p ${DAGSTER_HOME}/storage ${TAXI_HOME} \
    && chown -R dagster:dagster ${DAGSTER_HOME} ${TAXI_HOME}
USER dagster

EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "4000", \
     "--module-name", "taxi_platform.definitions", "--location-name", "taxi_platform"]
