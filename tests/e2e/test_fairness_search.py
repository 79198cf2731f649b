"""A real search with ASHA and a NaN method stores each trial's true state (the fairness checks' unit tests: tests/unit/test_fairness.py)."""

import re
import textwrap
from collections import Counter

import optuna
import pytest

from mtlsearch import optuna_search
from mtlsearch.tracking import STATUS_ERRORED

from helpers.spaces import FAIRNESS_SPACE as SPACE

NAN_METHOD = '''
import torch

from mtlsearch.balancing import LossBalancing


class NanAfterOneEpoch(LossBalancing):
    """Equal weights for one epoch, then NaN weights: the trial errors in its second epoch."""

    def __init__(self, num_tasks, **hparams):
        super().__init__(num_tasks, **hparams)
        self.epochs_done = 0

    def on_epoch_end(self, epoch, train_losses):
        self.epochs_done += 1

    def forward(self, losses):
        weight = float("nan") if self.epochs_done >= 1 else 1.0
        return (weight * losses).sum()
'''


def test_a_search_with_asha_stops_and_a_nan_method_stores_true_states(tmp_path, ray_session, capsys):
    """One real search: ew and a method that turns NaN in its second epoch, each at a good and a useless
    lr (so ASHA stops some trials at epoch 1; a NaN trial it lets through errors).  The study holds PRUNED trials at their last epoch, FAIL for every errored trial,
    COMPLETE for the rest, each with its MLflow run id; the objective is named."""
    from mlflow.tracking import MlflowClient

    from mtlsearch import studies
    from mtlsearch.launch import main
    from mtlsearch.tracking import TAG_KIND, TAG_STATUS, TAG_TRIAL

    (tmp_path / "nanmethod.py").write_text(NAN_METHOD)
    plugin = f"{tmp_path / 'nanmethod.py'}:NanAfterOneEpoch"
    space = tmp_path / "fair_states.yaml"
    space.write_text(
        textwrap.dedent(SPACE).format(
            samples=2,
            epochs=2,
            concurrency=", max_concurrent_trials: 2",
            scheduler="{type: asha, grace_period: 1, reduction_factor: 2}",
            searcher="{type: optuna, sampler: tpe, seed: 0}",
            params=f"  method: {{grid: [ew, '{plugin}']}}\n  lr: {{grid: [0.01, 0.00001]}}",
        )
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--name", "states"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    errored = int(re.search(r"8 trials \(\d+ completed, \d+ stopped early by ASHA, (\d+) errored\)", captured.out).group(1))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fair")
    runs = {r.data.tags[TAG_TRIAL]: r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TAG_KIND) == "trial"}

    url = studies.storage_url(uri, tmp_path / "ray")
    study = optuna.load_study(study_name="states", storage=studies.open_storage(url))
    assert study.metric_names == ["val/delta_m"]
    trials = study.get_trials()
    assert len(trials) == 8
    by_state = Counter(t.state.name for t in trials)
    assert by_state["FAIL"] == errored >= 1 and by_state["PRUNED"] >= 1 and by_state["COMPLETE"] >= 1, by_state
    for t in trials:
        run = runs[t.user_attrs[optuna_search.ATTR_TRIAL]]
        assert t.user_attrs[optuna_search.ATTR_RUN] == run.info.run_id
        assert t.user_attrs[optuna_search.ATTR_STATUS] == run.data.tags[TAG_STATUS]
        epochs = t.user_attrs[optuna_search.ATTR_EPOCHS]
        if t.state.name == "FAIL":
            assert run.data.params["method"] != "ew" and run.data.tags[TAG_STATUS] == STATUS_ERRORED
        elif t.state.name == "PRUNED":
            # stopped by ASHA before the full budget; its value is its last epoch's, kept as intermediate value
            assert epochs < 2 and max(t.intermediate_values) == epochs
            assert t.value == pytest.approx(run.data.metrics["val/delta_m"])
        else:
            assert epochs == 2 and t.value == pytest.approx(run.data.metrics["val/delta_m"]) == t.intermediate_values[2]
    # Each method got its 4 configurations (2 lr values x 2 samples); the NaN method has no full-budget trial.
    # (the plugin is stored by its name relative to the space file, not the absolute path the space gave)
    assert Counter(t.params["method"] for t in trials) == {"ew": 4, "nanmethod.py:NanAfterOneEpoch": 4}
    assert "warning: unequal budget per method: no trial trained the full budget" in captured.err
