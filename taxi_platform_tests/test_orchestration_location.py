"""A code location for the real-instance tests: the platform with its orchestration.

``definitions.py`` gains ``orchestration_definitions()`` when its owner merges it; until
then this module adds it, so the code server of ``test_backfill.py`` serves the jobs,
checks and sensors. It holds no tests.

Runs execute in-process: the default executor starts a process per step (8 per month
with the checks), each importing the code location, which on a 2-core machine costs more
than the test's small months take to load.
"""

import dagster as dg

import taxi_platform.definitions as platform
from taxi_platform.orchestration import orchestration_definitions


def _platform_with_orchestration() -> dg.Definitions:
    # One Definitions object at module scope: the platform's is reached through its module.
    parts = [platform.defs]
    if not any(job.name == "green_postgres" for job in platform.defs.jobs or []):
        parts.append(orchestration_definitions())
    if platform.defs.executor is None:
        parts.append(dg.Definitions(executor=dg.in_process_executor))
    return dg.Definitions.merge(*parts)


defs = _platform_with_orchestration()
