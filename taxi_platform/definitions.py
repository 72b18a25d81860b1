"""The code location: every definition under ``taxi_platform/defs/``, found by ``dg``.

Each module of ``defs/`` returns its own ``Definitions`` from a ``@dg.definitions``
function (assets per layer, checks, jobs, schedules, sensors, resources, the executor);
``load_from_defs_folder`` merges them. The environment is read as it is when they load.
"""

import atexit
import gc
from pathlib import Path

import dagster as dg


def leave_long_lived_objects_to_exit() -> None:
    """Keep the garbage collector off the objects that live as long as the process.

    Every process that serves or runs this code location imports this module once: the
    code server, and each run (the run launcher spawns a fresh interpreter per run, so
    per month of a backfill). Dagster, Google's clients and pandas leave some 250,000
    objects, and the collector's full passes walk all of them: while the definitions
    load, and again as the interpreter shuts down, when the memory is about to go back
    to the system anyway, at 0.5-0.9 s of CPU per process (``import dagster`` alone:
    1.15 s to run, 0.64 s when the process skips its teardown). ``gc.freeze`` moves what
    exists into the permanent generation, which no collection visits: once here, after
    Dagster's import and before ours, and once more at exit. Reference counting
    still frees and closes everything that is not in a cycle; what is left in one at exit
    is not finalized, which Python never promised (the data model's ``__del__``).
    Measured: ``import taxi_platform.definitions`` and ``defs()`` in a fresh interpreter,
    2.5-3.1 core-seconds before, 1.4-1.6 after; ``bench.history --scale 0.001`` (62 runs
    of tiny months), the code server with the runs 333-336 core-seconds before, 176-177
    after, and 228 s of backfill before, 149-152 after.
    """
    gc.freeze()
    atexit.register(gc.freeze)


leave_long_lived_objects_to_exit()


def build_definitions() -> dg.Definitions:
    """Everything the code location serves, loaded anew (tests change the environment)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
