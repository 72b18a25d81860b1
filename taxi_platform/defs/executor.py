"""How a run executes its steps: one after another in the run's own process.

On a small machine a process per step (eight with the checks) costs more than the steps
themselves, and the months of a backfill already run in parallel as separate runs.
"""

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(executor=dg.in_process_executor)
