"""How many trials Ray Tune queues ahead of an Optuna searcher (``cluster.trials_queued_ahead``)."""

import os

import pytest
from helpers.spaces import AHEAD_SPACE

from mtlsearch import cluster, spaces


def _space(tmp_path, num=100, cpus=0.5, gpus=0):
    path = tmp_path / "ahead.yaml"
    path.write_text(AHEAD_SPACE.format(samples=num, cpus=cpus, gpus=gpus))
    return spaces.load_space(str(path))


def _node(cpu, gpu=0.0):
    return {"name": "n", "CPU": float(cpu), "GPU": float(gpu), "max": 1}


def test_trials_at_once_counts_each_node_on_its_own(tmp_path):
    space = _space(tmp_path, cpus=0.5)
    assert cluster.trials_at_once(space, [_node(2)]) == 4
    # A trial runs on one node: 1.5 CPUs left over on two nodes are not a third trial of 1 CPU.
    assert cluster.trials_at_once(_space(tmp_path, cpus=1), [_node(1.5), _node(1.5)]) == 2
    assert cluster.trials_at_once(_space(tmp_path, cpus=0.3), [_node(0.9)]) == 3  # 0.9 / 0.3 in floating point
    # GPUs bound too: 4 GPUs at 0.25 each are 16 trials, but 8 CPUs at 1 each are 8.
    assert cluster.trials_at_once(_space(tmp_path, cpus=1, gpus=0.25), [_node(8, 4)]) == 8
    assert cluster.trials_at_once(_space(tmp_path, cpus=1, gpus=0.25), [_node(64, 1)]) == 4
    # No node fits yet (an autoscaler adds them): Ray Tune's own default, one.
    assert cluster.trials_at_once(_space(tmp_path, cpus=1, gpus=1), [_node(8)]) == 1
    assert cluster.trials_at_once(space, []) == 1


def test_trials_at_once_is_bounded_by_the_budget(tmp_path):
    assert cluster.trials_at_once(_space(tmp_path, num=3), [_node(16)]) == 3
    capped = _space(tmp_path, num=100)
    path = tmp_path / "capped.yaml"
    path.write_text(capped.path.read_text().replace("max_epochs: 1}", "max_epochs: 1, max_concurrent_trials: 2}"))
    assert cluster.trials_at_once(spaces.load_space(str(path)), [_node(16)]) == 2


def test_the_queue_is_set_for_the_search_only_and_a_users_value_is_kept(tmp_path, monkeypatch):
    space = _space(tmp_path)
    monkeypatch.delenv(cluster.PENDING_ENV, raising=False)
    with cluster.trials_queued_ahead(space, [_node(2)]) as ahead:
        assert ahead == 4
        assert os.environ[cluster.PENDING_ENV] == "4"
    assert cluster.PENDING_ENV not in os.environ
    with pytest.raises(RuntimeError), cluster.trials_queued_ahead(space, [_node(2)]):
        raise RuntimeError("the search failed")
    assert cluster.PENDING_ENV not in os.environ
    monkeypatch.setenv(cluster.PENDING_ENV, "7")
    with cluster.trials_queued_ahead(space, [_node(2)]) as ahead:
        assert ahead == 7 and os.environ[cluster.PENDING_ENV] == "7"
    assert os.environ[cluster.PENDING_ENV] == "7"
