"""What a run's process imports before its first step: only what every run needs.

Every run is a process of its own that loads the whole code location, so a module imported
with the definitions is paid for by every month of a backfill. The local BigQuery
stand-in's sqlglot (about 0.2 s of CPU and 8 MB a process) is imported by the steps that
use the stand-in, not with the definitions; the GCP tests run those steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

IMPORTED_WHERE_USED = ("sqlglot", "taxi_platform.lib.warehouse.duckdb_standin")


def modules_after_loading_the_definitions() -> set[str]:
    code = """
        import json, sys
        import taxi_platform.definitions as location
        location.defs()
        sys.stdout.write(json.dumps(sorted(sys.modules)))
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(result.stdout))


def test_loading_the_definitions_leaves_the_local_bigquery_stand_in_unimported():
    modules = modules_after_loading_the_definitions()
    assert "taxi_platform.resources.gcp" in modules  # the resources are there...
    assert "taxi_platform.lib.warehouse" in modules
    for name in IMPORTED_WHERE_USED:  # ...the stand-in's translator is not
        assert name not in modules, f"{name} is imported with the definitions"
