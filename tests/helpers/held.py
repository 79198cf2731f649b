"""Holding a trial at a known point, the way a user's method file would (tests/e2e/test_faults.py,
tests/e2e/test_faults_running.py): no switch in mtlsearch exists for it."""

from pathlib import Path

#: The source of a user's method file (``path/file.py:Class``) that lets a test hold trials at a known point: GeMTL,
#: whose first step in each trial attempt, while ``HOLD/armed`` exists, writes ``HOLD/<pid>.held`` and
#: waits until ``HOLD/release`` exists.  Only inside a Ray actor (a trial), never in the launcher's own
#: checks of the method.  The test creates and removes the files: an event, not a guess of how long a
#: start takes, and nothing in mtlsearch exists for it.
HELD_METHOD = """
import os
import time

import ray

from mtlsearch.balancing.gemtl import GeMTL

HOLD = {hold!r}


class HeldGeMTL(GeMTL):
    waited = False

    def forward(self, losses):
        if not self.waited:
            self.waited = True
            in_trial = ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
            if in_trial and os.path.exists(os.path.join(HOLD, "armed")):
                open(os.path.join(HOLD, f"{{os.getpid()}}.held"), "w").close()
                while not os.path.exists(os.path.join(HOLD, "release")):
                    time.sleep(0.05)
        return super().forward(losses)
"""


def held_method(folder: Path, hold: Path) -> str:
    """Write :data:`HELD_METHOD` into ``folder`` holding on ``hold`` (created); its ``method:`` value."""
    hold.mkdir(exist_ok=True)
    path = folder / "held.py"
    path.write_text(HELD_METHOD.format(hold=str(hold)))
    return f"{path}:HeldGeMTL"
