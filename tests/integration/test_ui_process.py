"""`python -m mtlsearch` as a real process runs the same dispatcher as the console script (the
dispatcher's own tests: tests/unit/test_ui.py)."""

import subprocess
import sys

from helpers import ROOT


def test_python_m_mtlsearch_runs_the_dispatcher():
    proc = subprocess.run([sys.executable, "-m", "mtlsearch", "ui", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "--no-browser" in proc.stdout and "--tracking-uri" in proc.stdout
