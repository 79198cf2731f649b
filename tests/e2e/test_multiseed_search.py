"""A real search with two seeds per trial (the seeds' unit tests: tests/unit/test_multiseed.py)."""

import math
import textwrap

import pytest

from mtlsearch import tracking

from helpers.spaces import SEEDS_SPACE as SPACE


def test_a_search_with_two_seeds_per_trial_logs_each_seed_and_their_mean(tmp_path, ray_session, capfd):
    from mlflow.tracking import MlflowClient

    from mtlsearch.launch import main

    path = tmp_path / "seeds.yaml"
    path.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["--space", str(path), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--set", "budget.seeds=2"])
    out = "".join(capfd.readouterr())
    assert code == 0, out
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("seeds_e2e")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(tracking.TAG_KIND) == "trial"]
    assert len(trials) == 2
    for run in trials:
        m = run.data.metrics
        assert run.data.params["seeds"] == "2" and run.data.params["seed"] == "5"
        assert {"seed5/val/delta_m", "seed6/val/delta_m", "std/val/delta_m", "sem/val/delta_m", "seed6/test/delta_m"} <= set(m)
        assert m["seed5/val/delta_m"] != m["seed6/val/delta_m"]
        assert m["val/delta_m"] == pytest.approx((m["seed5/val/delta_m"] + m["seed6/val/delta_m"]) / 2, rel=1e-12)
        assert m["std/val/delta_m"] == pytest.approx(abs(m["seed5/val/delta_m"] - m["seed6/val/delta_m"]) / math.sqrt(2), rel=1e-9)
        history = client.get_metric_history(run.info.run_id, "seed6/val/delta_m")
        assert sorted(h.step for h in history) == [1, 2]
