"""A trial worker's exit, in a real child process (the rest of the console's tests: tests/unit/test_console.py)."""

import subprocess
import sys
import textwrap

from helpers import ROOT


def test_a_trial_worker_drops_only_the_unraisable_systemexit_of_a_stopped_trial():
    """What Python prints as "Exception ignored ... SystemExit: 1" when Ray ends a stopped trial's worker
    goes through sys.unraisablehook: quiet_trial_exit drops that one, and reports every other as before."""
    code = textwrap.dedent("""
        from mtlsearch.console import quiet_trial_exit
        quiet_trial_exit()
        class Stopped:
            def __del__(self):
                raise SystemExit(1)
        class Broken:
            def __del__(self):
                raise ValueError("a real error")
        Stopped(); Broken()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    assert "SystemExit" not in proc.stderr and "ValueError: a real error" in proc.stderr, proc.stderr
