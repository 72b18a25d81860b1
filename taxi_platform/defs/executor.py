"""How a run executes its steps: one after another in the run's own process.

On a small machine a process per step (eight with the checks) costs more than the steps
themselves, and the months of a backfill already run in parallel as separate runs. A step
waiting for a pool slot sleeps between its attempts (``sleep_while_claims_pend``): Dagster
1.13.27 spins a core there.
"""

import dagster as dg

from taxi_platform.lib.pool_wait import sleep_while_claims_pend


@dg.definitions
def defs() -> dg.Definitions:
    sleep_while_claims_pend()
    return dg.Definitions(executor=dg.in_process_executor)
