"""A fair comparison (issue 22): every method the same number of configurations under every searcher, the
same first ASHA rung, a warning when a method still ends with less, true Optuna states (PRUNED, FAIL), the
study's objective names and per-trial attributes, and the TPE settings chosen from the budget.

The searchers are exercised directly (Ray's OptunaSearch and variant generator, no training); one small
real search (Ray, MLflow, ASHA, a plugin method that turns NaN) checks the stored study."""

import math
import textwrap
from collections import Counter

import optuna
import pytest

from mtlsearch import console, fairness, optuna_search, spaces
from mtlsearch.balancing import METHODS
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED

from helpers.spaces import FAIRNESS_SPACE as SPACE


def make_space(params, *, samples=8, epochs=4, searcher="{type: optuna, sampler: tpe, seed: 0}", scheduler="{type: asha}", concurrency=""):
    text = textwrap.dedent(SPACE).format(
        samples=samples, epochs=epochs, searcher=searcher, scheduler=scheduler, params=params, concurrency=concurrency
    )
    import yaml

    return spaces.parse_space(yaml.safe_load(text), "fair.yaml", text)


def suggest_all(space):
    """Every trial's config as the launcher's Optuna searcher proposes it (in-memory study, nothing trained)."""
    searcher = optuna_search.ResumableOptunaSearch(
        space=space.define_by_run(),
        sampler=optuna_search.make_sampler(space),
        metric=space.metric,
        mode=space.mode,
        max_epochs=space.max_epochs,
        strata=fairness.strata(space),
        strata_seed=space.searcher["seed"],
    )
    return searcher, [searcher.suggest(f"t{i}") for i in range(console.total_trials(space))]


# A user's plugin is a name like any other on the method axis (the searcher never imports it).
THREE = "  method: {choice: [ew, imtl_h, mypkg.method:LossRatio]}\n  lr: {loguniform: [1.0e-4, 1.0e-1]}"


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_an_optuna_choice_of_three_methods_gives_each_its_share_of_8_trials(sampler):
    space = make_space(THREE, searcher=f"{{type: optuna, sampler: {sampler}, seed: 0}}")
    searcher, configs = suggest_all(space)
    counts = Counter(c["method"] for c in configs)
    assert len(configs) == 8 and sorted(counts.values()) == [2, 3, 3], counts
    assert set(counts) == {"ew", "imtl_h", "mypkg.method:LossRatio"}
    # The method is still a categorical parameter of the study (fixed per trial), lr is sampled.
    dists = searcher._ot_study.get_trials()[0].distributions
    assert isinstance(dists["method"], optuna.distributions.CategoricalDistribution)
    assert len(dists["method"].choices) == 3 and dists["lr"].log
    assert len({round(c["lr"], 12) for c in configs}) == 8
    for i, t in enumerate(searcher._ot_study.get_trials()):
        assert t.user_attrs[optuna_search.ATTR_TRIAL] == f"t{i}"


def test_grid_all_beside_optuna_gives_every_registered_method_the_same_trials():
    space = make_space("  method: {grid: all}\n  lr: {loguniform: [1.0e-4, 1.0e-1]}", samples=2)
    assert console.total_trials(space) == 2 * len(METHODS)
    _, configs = suggest_all(space)
    counts = Counter(c["method"] for c in configs)
    assert set(counts) == set(METHODS) and set(counts.values()) == {2}, counts


def test_grid_values_are_crossed_with_the_samples_and_a_method_choice_beside_them():
    space = make_space(THREE + "\n  optimizer: {grid: [adam, sgd]}", samples=6)
    _, configs = suggest_all(space)
    cells = Counter((c["optimizer"], c["method"]) for c in configs)
    assert len(configs) == 12 and set(cells.values()) == {2} and len(cells) == 6, cells


def test_the_random_searcher_deals_a_method_choice_in_turn():
    from ray.tune.search.variant_generator import generate_variants

    space = make_space(THREE + "\n  optimizer: {grid: [adam, sgd]}", samples=7, searcher="{type: random, seed: 3}")
    param_space = space.tune_param_space()
    configs = [cfg for _ in range(space.num_samples) for _, cfg in generate_variants(param_space)]
    assert len(configs) == 14
    for opt in ("adam", "sgd"):
        counts = Counter(c["method"] for c in configs if c["optimizer"] == opt)
        assert sorted(counts.values()) == [2, 2, 3], (opt, counts)


def test_several_asha_brackets_are_dealt_per_method():
    from types import SimpleNamespace

    space = make_space(THREE, samples=12, scheduler="{type: asha, grace_period: 1, reduction_factor: 2, brackets: 2}")
    asha = fairness.make_asha(space)
    assert type(asha).__name__ == "FairASHA"
    asha.set_search_properties("val/delta_m", "max")
    for i in range(12):
        asha.on_trial_add(None, SimpleNamespace(trial_id=f"t{i}", config={"method": ["ew", "imtl_h", "dwa"][i % 3]}))
    for method in range(3):
        firsts = Counter(asha._brackets.index(asha._trial_info[f"t{i}"]) for i in range(method, 12, 3))
        assert sorted(firsts.values()) == [2, 2], firsts  # half of each method's trials in each bracket


def test_a_starved_method_is_named_in_one_warning_line():
    budget = fairness.method_budget(
        [("ew", 4, False), ("ew", 2, False), ("ew", 4, False), ("imtl_h", 4, False), ("imtl_h", 2, False), ("imtl_h", 1, False)],
        max_epochs=4,
    )
    assert budget == {"ew": (3, 2), "imtl_h": (3, 1)}
    assert fairness.budget_warning(budget, ["ew", "imtl_h"]) is None
    # A method whose trials all errored before their first epoch: no configuration, no full-budget trial.
    line = fairness.budget_warning(budget, ["ew", "imtl_h", "mypkg.method:LossRatio"])
    assert line is not None and "\n" not in line
    assert "fewer configurations than the others (3): mypkg.method:LossRatio 0" in line
    assert "no trial trained the full budget: mypkg.method:LossRatio" in line
    # Uneven num_samples (3 and 2 configurations) is not a starved method; a method never finishing is.
    even = fairness.method_budget([("a", 4, False), ("a", 4, False), ("a", 1, False), ("b", 1, False), ("b", 1, False)], 4)
    line = fairness.budget_warning(even)
    assert line is not None and "fewer configurations" not in line and "no trial trained the full budget: b" in line


def test_tpe_settings_follow_the_budget_and_the_shape_of_the_space():
    small = make_space(THREE, samples=8)
    assert optuna_search.sampler_settings(small) == {"seed": 0, "n_startup_trials": 3, "constant_liar": True}
    big = make_space(THREE + "\n  p: {uniform: [0.0, 1.0], when: {method: ew}}", samples=100, concurrency=", max_concurrent_trials: 1")
    settings = optuna_search.sampler_settings(big)
    assert settings == {"seed": 0, "n_startup_trials": 10, "constant_liar": False, "multivariate": True, "group": True}
    sampler = optuna_search.make_sampler(big)
    assert sampler._n_startup_trials == 10 and sampler._multivariate and sampler._group
    assert optuna_search.sampler_settings(make_space(THREE, searcher="{type: optuna, sampler: random, seed: 4}")) == {"seed": 4}
    line = optuna_search.describe_settings(small)
    assert "n_startup_trials=3" in line and "3 methods, 2-3 trials each" in line


def test_states_of_stopped_errored_and_completed_trials_and_their_attributes():
    space = make_space(THREE, samples=3)
    searcher, _ = suggest_all(space)
    searcher.link_runs({"t0": "run0", "t1": "run1", "t2": "run2"})
    # t0: stopped by ASHA at epoch 2 (Ray passes the result it stops on only at completion)
    searcher.on_trial_result("t0", {"val/delta_m": -5.0, "training_iteration": 1})
    searcher.on_trial_complete("t0", {"val/delta_m": -3.0, "training_iteration": 2})
    searcher.on_trial_result("t1", {"val/delta_m": -1.0, "training_iteration": 1})
    searcher.on_trial_complete("t1", error=True)  # errored after its first epoch
    for epoch in (1, 2, 3, 4):
        searcher.on_trial_result("t2", {"val/delta_m": float(-epoch), "training_iteration": epoch})
    searcher.on_trial_complete("t2", {"val/delta_m": -4.0, "training_iteration": 4})
    # ASHA stops a trial at max_t itself: its last result then comes only with the completion.
    searcher.suggest("t3")
    searcher.on_trial_result("t3", {"val/delta_m": -2.0, "training_iteration": 3})
    searcher.on_trial_complete("t3", {"val/delta_m": -1.0, "training_iteration": 4})
    t0, t1, t2, t3 = searcher._ot_study.get_trials()
    assert (t3.state, t3.value, t3.intermediate_values) == (optuna.trial.TrialState.COMPLETE, -1.0, {3: -2.0, 4: -1.0})
    State = optuna.trial.TrialState
    assert (t0.state, t0.value, t0.intermediate_values) == (State.PRUNED, -3.0, {1: -5.0, 2: -3.0})
    assert t1.state == State.FAIL and t1.value is None
    assert (t2.state, t2.value, len(t2.intermediate_values)) == (State.COMPLETE, -4.0, 4)
    assert [t.user_attrs[optuna_search.ATTR_STATUS] for t in (t0, t1, t2)] == [STATUS_STOPPED, STATUS_ERRORED, STATUS_COMPLETED]
    assert [t.user_attrs[optuna_search.ATTR_EPOCHS] for t in (t0, t1, t2)] == [2, 1, 4]
    assert [t.user_attrs[optuna_search.ATTR_RUN] for t in (t0, t1, t2)] == ["run0", "run1", "run2"]
    assert searcher._ot_study.metric_names == ["val/delta_m"]
    assert not math.isnan(t0.value)


def test_importance_is_one_value_with_its_bootstrap_spread_on_one_named_set():
    from helpers.report_search import SPACE as REPORT_SPACE
    from helpers.report_search import _search

    from mtlsearch.report import importance, trials

    search = _search()
    result = importance.param_importance(search, trials.searched_params(search, REPORT_SPACE))
    assert result.ok and set(result.spread) == set(result.values) == {"fANOVA", "PED-ANOVA"}
    for label in result.values:
        assert set(result.spread[label]) == {"lr", "p"}
        assert all(0.0 < sd < 0.5 for sd in result.spread[label].values()), result.spread
    lines = importance.importance_lines(result)
    assert len(lines) == 4
    lr = result.values["fANOVA"]["lr"]
    assert f"lr: {lr:.2f} ± {result.spread['fANOVA']['lr']:.2f} (fANOVA, {result.trials} trials at epoch 3)" in lines
    assert all(line.endswith(f"{result.trials} trials at epoch 3)") for line in lines)
    text = importance.importance_text(result, "val/delta_m")
    assert "one set for both evaluators: 15 trials at epoch 3" in text and "bootstrap" in text
    # The spread is the sd over resamples: a study where one parameter decides everything has a small one.
    study, names, _ = importance.build_study(search, trials.searched_params(search, REPORT_SPACE), 3)
    spread = importance.bootstrap_spread(study, optuna.importance.PedAnovaImportanceEvaluator(), names, resamples=5)
    assert set(spread) == {"lr", "p"} and spread["lr"] == pytest.approx(spread["p"])  # two parameters: the same sd


def test_the_methods_space_gives_every_method_3_lr_samples_and_3_final_seeds_and_dry_run_counts_both():
    space = spaces.load_space("methods", validate=False)
    assert fairness.method_axis(space).args == list(METHODS) and space.searcher["type"] == "optuna"
    assert space.final == {"seeds": [1, 2, 3], "per": "method", "top": 1}
    assert space.scheduler["grace_period"] * 2 >= space.max_epochs  # the first rung at half the budget or later
    lines: list[str] = []
    console.dry_run(space, timed=False, out=lines.append)
    n, e = len(METHODS), space.max_epochs
    text = "\n".join(lines)
    assert f"Epoch budget: {3 * n} trials x {e} epochs = {3 * n * e} epochs at most" in text
    assert f"{n} methods, 3 trials each (dealt in turn)" in text and "n_startup_trials=10" in text and "group=True" in text
    assert f"re-run with seeds [1, 2, 3] for {e} epochs, no early stopping: {n * 3 * e} epochs at most; {6 * n * e} in all" in text
