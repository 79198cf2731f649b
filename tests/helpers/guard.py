"""The unit tier's leak guard: a unit test that leaves Ray initialised or a child process running fails.

``tests/unit/conftest.py`` imports :func:`leak_guard` (autouse), so it wraps every test of that folder;
tests/integration/test_leak_guard.py checks that it fails such tests.  Nothing is mocked: after the
test, ``ray.is_initialized()`` is asked only if the test imported Ray, and the process's descendants are
read from ``/proc`` (Linux, where the suite runs; psutil is not a dependency).  What a failing test left is ended, so the next test
starts clean and is not blamed for it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

#: How to fix a failure, in the failure's text.
WHERE = "the unit tier starts no Ray and leaves no process running; a test that needs them goes in tests/integration or tests/e2e"


def _state(pid: int) -> str:
    """A process's state letter ("Z": a zombie, which runs nothing); "" once it has ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]  # after the command, which may hold ')'
    except (OSError, IndexError):
        return ""


def _children(pid: int) -> set[int]:
    """The processes ``pid``'s threads started (/proc/PID/task/TID/children, Linux >= 3.5)."""
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out.update(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            continue
    return out


def descendants(pid: int | None = None) -> dict[int, str]:
    """The live (not zombie) processes below ``pid`` (default: this one), with their command lines."""
    found: set[int] = set()
    frontier = _children(os.getpid() if pid is None else pid)
    while frontier:
        found |= frontier
        frontier = set().union(*(_children(p) for p in frontier)) - found
    out = {}
    for p in sorted(found):
        if _state(p) not in ("", "Z"):
            try:
                out[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
    return out


def leaks(before: set[int]) -> list[str]:
    """What the test left: Ray initialised, or processes below this one that were not there before it."""
    found = []
    ray = sys.modules.get("ray")  # a test that never imported Ray cannot have started it
    if ray is not None and ray.is_initialized():
        found.append("Ray is still initialised (ray.init without ray.shutdown)")
        ray.shutdown()
    left = {pid: cmd for pid, cmd in descendants().items() if pid not in before}
    deadline = time.monotonic() + 2.0  # one that was killed, or returned, as the test ended: let it finish exiting
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid: cmd for pid, cmd in left.items() if _state(pid) not in ("", "Z")}
    for pid, cmd in left.items():
        found.append(f"child process {pid} is still running: {cmd[:200]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


@pytest.fixture(autouse=True)
def leak_guard():
    """Fail the test (at its teardown) if it left Ray initialised or a child process running."""
    before = set(descendants())
    yield
    found = leaks(before)
    if found:
        pytest.fail(f"{'; '.join(found)}: {WHERE}", pytrace=False)
