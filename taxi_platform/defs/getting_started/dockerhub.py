"""``getting_started/docker_image_pulls``: the tutorial's "Python with outputs and metrics"."""

import time

import dagster as dg

from taxi_platform.resources.http_json_api import HttpJsonApi, JsonApiError

DOCKERHUB_REPOSITORY_URL = "https://hub.docker.com/v2/repositories/kestra/kestra/"


@dg.asset(
    key_prefix="getting_started",
    group_name="getting_started",
    kinds={"python"},
)
def docker_image_pulls(dockerhub_api: HttpJsonApi) -> dg.MaterializeResult:
    """How many times a Docker image has been pulled, read from the Docker Hub repository API.

    The tutorial's script emits the count as an *output* and the call's duration as a
    *metric*. Dagster has no separate metric store: both are materialization metadata,
    and because they are numbers the UI plots them across materializations, which is what
    the metric view is for. Nothing is stored as the asset's value.
    """
    started = time.perf_counter()
    try:
        repository = dockerhub_api.get_json()
    except JsonApiError as error:
        raise dg.Failure(description=str(error)) from None
    duration_seconds = time.perf_counter() - started

    pull_count = repository.get("pull_count") if isinstance(repository, dict) else None
    # bool is an int in Python; a boolean pull count would mean a different payload.
    if not isinstance(pull_count, int) or isinstance(pull_count, bool):
        raise dg.Failure(
            description=(
                f"GET {dockerhub_api.url} answered JSON without an integer 'pull_count' "
                "(is it a Docker Hub repository endpoint, /v2/repositories/{namespace}/{name}/?)"
            )
        )
    return dg.MaterializeResult(
        metadata={
            "pull_count": dg.MetadataValue.int(pull_count),
            "duration_seconds": dg.MetadataValue.float(round(duration_seconds, 3)),
            "url": dg.MetadataValue.url(dockerhub_api.url),
        }
    )
