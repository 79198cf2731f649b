"""Short trials on a local Ray run as many at a time as fit (``cluster.trials_queued_ahead``): before, the
Optuna searcher was asked for one pending trial at a time and Ray Tune's worker reuse kept a fourth worker
starting and dying, so 16 one-epoch trials at 0.5 CPU on 2 CPUs ran in 2 or 3 worker processes."""

import json
import os

from helpers.spaces import AHEAD_SPACE
from ray.tune import Callback

from mtlsearch import cluster
from mtlsearch.launch import main


class _QueueSeen(Callback):
    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.seen.append(os.environ.get(cluster.PENDING_ENV))


def test_short_trials_fill_every_slot_and_the_queue_is_the_searchs_only(tmp_path, ray_session, monkeypatch):
    monkeypatch.delenv(cluster.PENDING_ENV, raising=False)
    space = tmp_path / "ahead.yaml"
    space.write_text(AHEAD_SPACE.format(samples=16, cpus=0.5, gpus=0))
    seen = _QueueSeen()
    argv = ["--space", str(space), "--storage", str(tmp_path / "ray"), "--name", "ahead", "--quiet"]
    code = main([*argv, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], callbacks=[seen])
    assert code == 0
    assert seen.seen == ["4"] * 16  # 2 CPUs / 0.5 per trial, told to Ray Tune for this search
    assert cluster.PENDING_ENV not in os.environ
    pids = set()
    for result in (tmp_path / "ray" / "ahead").glob("*/result.json"):
        pids.update(json.loads(line)["pid"] for line in result.read_text().splitlines())
    assert len(pids) == 4, pids  # every slot ran trials, each worker reused
