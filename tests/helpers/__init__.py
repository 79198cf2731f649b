"""Code the tests share (peer tables, the shared MLflow server and search, the local cluster, the leak
guard, small data writers).  No test lives here: tier folders (tests/unit, tests/integration, tests/e2e)
hold the tests and import from this package; conftest.py imports from it, never from a test module."""

from pathlib import Path

#: The checkout's root (the folder holding mtlsearch/ and tests/).
ROOT = Path(__file__).resolve().parents[2]
