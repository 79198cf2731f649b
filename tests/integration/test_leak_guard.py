"""The unit tier's guard (tests/helpers/guard.py) fails a test that leaves Ray initialised or a child
process running, and refuses the suite's Ray and server fixtures: pytest run for real, in a child
process, on tiny tests under a copy of tests/unit/conftest.py."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from helpers import ROOT
from helpers.shared_search import processes_with_env

TINY = {
    "test_ray.py": """
        import ray

        def test_leaves_ray_initialised():
            ray.init(num_cpus=1, include_dashboard=False)

        def test_asks_for_the_suites_ray(request):
            request.getfixturevalue("ray_session")
        """,
    "test_processes.py": """
        import subprocess

        def test_leaves_a_child_running():
            subprocess.Popen(["sleep", "301.7"])

        def test_ends_its_child():
            child = subprocess.Popen(["sleep", "300"])
            child.kill()
            child.wait()

        def test_runs_a_child_to_its_end():
            assert subprocess.run(["true"]).returncode == 0
        """,
}


def test_the_unit_guard_fails_what_leaks_and_passes_what_does_not(tmp_path):
    unit = tmp_path / "unit"
    unit.mkdir()
    shutil.copy(ROOT / "tests" / "unit" / "conftest.py", unit / "conftest.py")
    for name, text in TINY.items():
        (unit / name).write_text(textwrap.dedent(text))
    ray_tmp = tempfile.mkdtemp(prefix="mtlguard", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # COLUMNS: the summary lines whole (pytest cuts them to the terminal's width).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "RAY_TMPDIR": ray_tmp, "COLUMNS": "1000"}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(unit)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        left = processes_with_env(f"RAY_TMPDIR={ray_tmp}")
    finally:
        for pid in processes_with_env(f"RAY_TMPDIR={ray_tmp}"):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    outcome: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith(("PASSED ", "FAILED ", "ERROR ")):
            outcome.setdefault(line.split()[1].split("::")[1], []).append(line)
    errors = {name: [line for line in lines if line.startswith("ERROR ")] for name, lines in outcome.items()}
    # A leak is reported against the test that left it (at its teardown), with what was left and what to do.
    (ray_error,) = errors["test_leaves_ray_initialised"]
    assert "Ray is still initialised" in ray_error and "tests/integration" in ray_error, out[-3000:]
    # A fixture asked for by name inside the test fails the test itself.
    (fixture_failure,) = outcome["test_asks_for_the_suites_ray"]
    assert fixture_failure.startswith("FAILED ") and "`ray_session` asked for in tests/unit" in fixture_failure, out[-3000:]
    (child_error,) = errors["test_leaves_a_child_running"]
    assert "child process" in child_error and "sleep 301.7" in child_error, out[-3000:]
    # What leaks nothing passes, and nothing is blamed on the tests after a leak.
    for name in ("test_ends_its_child", "test_runs_a_child_to_its_end"):
        assert [line.split()[0] for line in outcome[name]] == ["PASSED"], out[-3000:]
    # The guard ended what leaked: Ray's processes and the sleeping child.
    assert left == [], "Ray processes left running"
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid) == "sleep 301.7"]


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
