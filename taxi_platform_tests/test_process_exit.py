"""A process that loads the code location leaves its long-lived objects to exit.

``taxi_platform.definitions.leave_long_lived_objects_to_exit`` freezes the garbage
collector's view of them (every run is a process of its own); these tests run a real
interpreter to the end and look at what happened there.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_the_collector_has_nothing_left_to_walk_when_the_interpreter_shuts_down():
    # Registered before the code location's import, so it runs after the code
    # location's own exit handler (atexit runs last-in, first-out).
    result = run_python(
        """
        import atexit, gc, sys

        def report():
            sys.stdout.write(f"{len(gc.get_objects())} {gc.get_freeze_count()}\\n")

        atexit.register(report)
        import taxi_platform.definitions as location
        location.defs()
        """
    )
    walked, frozen = map(int, result.stdout.split())
    assert frozen > 100_000, result.stdout
    assert walked < 1_000, result.stdout


def test_a_file_written_and_never_closed_still_reaches_the_disk(tmp_path: Path):
    written = tmp_path / "left_open.txt"
    run_python(
        f"""
        import taxi_platform.definitions as location
        location.defs()
        left_open = open({str(written)!r}, "w")
        left_open.write("every byte")
        """
    )
    assert written.read_text() == "every byte"
