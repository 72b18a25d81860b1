"""The code location: every definition under ``taxi_platform/defs/``, found by ``dg``.

Each module of ``defs/`` returns its own ``Definitions`` from a ``@dg.definitions``
function (assets per layer, checks, jobs, schedules, sensors, resources, the executor);
``load_from_defs_folder`` merges them. The environment is read as it is when they load.
"""

from pathlib import Path

import dagster as dg


def build_definitions() -> dg.Definitions:
    """Everything the code location serves, loaded anew (tests change the environment)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
