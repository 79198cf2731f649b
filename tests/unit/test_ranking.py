"""Rankings with their uncertainty (issue 21 part 2, issue 22 part 3): the statistics of
``mtlsearch.uncertainty`` on known cases, digits that follow the noise, and the launcher's table on
planted rows (seeds, tie marks, status, an errored trial never best, a lucky seed that no longer wins)."""

from __future__ import annotations

import math

import pytest

from mtlsearch import console, final, report, results, uncertainty
from mtlsearch.report.load import Search, Trial
from mtlsearch.spaces import load_space
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED


# ----------------------------------------------------------------------------------------- statistics
def test_t_interval_matches_the_textbook():
    # Seeds 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.303 -> 2 ± 4.303 / sqrt(3).
    got = uncertainty.interval([1.0, 2.0, 3.0])
    assert got is not None and got.n == 3 and got.mean == pytest.approx(2.0)
    assert got.half == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    # One seed: a mean, no interval; non-finite seeds are dropped; nothing left: None.
    one = uncertainty.interval([5.0, float("nan")])
    assert one is not None and one.n == 1 and one.half is None
    assert uncertainty.interval([]) is None
    # Beyond the table the expansion stays on the t quantiles (df 40: 2.021, df 120: 1.980).
    assert uncertainty.t_quantile(40) == pytest.approx(2.021, abs=2e-3)
    assert uncertainty.t_quantile(120) == pytest.approx(1.980, abs=2e-3)
    with pytest.raises(ValueError):
        uncertainty.t_quantile(0)


def test_separated_configurations_are_not_tied_and_overlapping_ones_are():
    best = [10.0, 11.0, 12.0]
    assert uncertainty.prob_outperforms([1.0, 2.0, 3.0], best, "max") == 0.0
    assert uncertainty.tied([1.0, 2.0, 3.0], best, "max") is False
    overlapping = [9.0, 11.5, 11.0]
    p = uncertainty.prob_outperforms(overlapping, best, "max")
    assert p is not None and 0.05 < p < 0.5 and uncertainty.tied(overlapping, best, "max") is True
    # A minimised objective: lower is better, so the same numbers swap roles.
    assert uncertainty.prob_outperforms([1.0, 2.0, 3.0], best, "min") == 1.0
    # One seed on either side gives the bootstrap nothing to resample: untestable.
    assert uncertainty.tied([5.0], best, "max") is None and uncertainty.tied(best, [5.0], "max") is None
    # Deterministic: a table printed twice says the same.
    assert uncertainty.prob_outperforms(overlapping, best, "max") == p


def test_a_configuration_against_itself_is_a_coin_flip():
    values = [1.0, 4.0, 2.0, 8.0]
    p = uncertainty.prob_outperforms(values, values, "max", seed=3)
    assert p is not None and 0.4 < p < 0.6


@pytest.mark.parametrize(
    "mean, half, text",
    [
        (-7.634, 2.187, "-7.6 ± 2.2"),  # no four digits on a ±2 quantity
        (0.51234, 0.0996, "0.51 ± 0.10"),  # the rounded half keeps two digits
        (1234.5, 123.0, "1230 ± 120"),
        (-0.01, 0.5, "-0.01 ± 0.50"),
        (0.004, 0.5, "0.00 ± 0.50"),  # no "-0.00"
        (-0.004, 0.5, "0.00 ± 0.50"),
        (3.14159, None, "3.142"),  # one seed: the value alone
        (2.0, 0.0, "2 ± 0"),
    ],
)
def test_digits_follow_the_interval(mean, half, text):
    assert uncertainty.fmt_interval(mean, half) == text


# ----------------------------------------------------------------------------------------- ranking
def _entry(name, seeds, status=results.COMPLETED):
    return {"name": name, "status": status, "_seeds": seeds}


def test_one_lucky_seed_does_not_rank_above_a_configuration_better_on_average():
    lucky = _entry("lucky", [0.0, 0.0, 10.0])  # its best seed beats every seed of "steady"; its mean 3.3 does not
    steady = _entry("steady", [5.0, 5.0, 5.5])
    ranked = results.rank_with_uncertainty([lucky, steady], "max")
    assert [r["name"] for r in ranked] == ["steady", "lucky"]
    assert ranked[0]["best"] and not ranked[1]["best"]
    # One lucky seed in three is not enough to tell them apart either: tied, with its probability stated.
    assert ranked[1]["tied"] is True and 0.05 < ranked[1]["p_best"] < 0.5


def test_status_order_errored_never_best():
    planted = [
        _entry("errored", [99.0], results.ERRORED),  # reported a great value, then failed
        _entry("stopped", [50.0], results.STOPPED),  # a partial value: not ranked against final ones
        _entry("done", [1.0, 2.0]),
        _entry("done2", [0.0, 1.5]),
    ]
    ranked = results.rank_with_uncertainty(planted, "max")
    assert [r["name"] for r in ranked] == ["done", "done2", "stopped", "errored"]
    assert ranked[0]["best"] and [r["best"] for r in ranked[1:]] == [False, False, False]
    assert ranked[2]["tied"] is None and ranked[3]["tied"] is None  # other statuses are not tested against the best
    # Only errored trials: no best at all.
    only = results.rank_with_uncertainty([_entry("e", [3.0], results.ERRORED)], "max")
    assert not only[0]["best"]
    standing = results.best_standing(only, "val/delta_m")
    assert "best_interval" not in standing and standing["trial_counts"] == "1 trials (0 completed, 0 stopped early by ASHA, 1 errored)"


# ----------------------------------------------------------------------------------------- launcher table
def _k_seed(trial_id, epoch, per_seed, **config):
    """A k-seed trial's last result as the agreed names have it: the mean under the usual name,
    ``seed<s>/<metric>`` per seed."""
    metrics = {"trial_id": trial_id, "epoch": epoch, "val/delta_m": sum(per_seed) / len(per_seed)}
    metrics.update({f"seed{s}/val/delta_m": v for s, v in enumerate(per_seed)})
    return metrics, {"method": "gemtl", **config}


def test_launcher_table_marks_ties_status_and_errors():
    space = load_space("gemtl_p")
    assert space.max_epochs > 2
    full = space.max_epochs
    trials = [
        (*_k_seed("lucky", full, [-9.0, -9.5, 4.0], p=0.5, lr=0.01), False),  # best single seed, mean -4.8
        (*_k_seed("steady", full, [-2.0, -2.2, -1.9], p=1.0, lr=0.005), False),  # better on average
        (*_k_seed("close", full, [-2.4, -1.5, -2.6], p=1.5, lr=0.002), False),  # overlaps "steady": tied
        (*_k_seed("far", full, [-30.0, -31.0, -29.0], p=2.0, lr=0.003), False),  # clearly worse: not tied
        (*_k_seed("cut", 2, [3.0, 2.0, 2.5], p=0.1, lr=0.004), False),  # ASHA stopped it at epoch 2
        (*_k_seed("nan", full - 1, [9.0, 9.0, 9.0], p=3.0, lr=0.001), True),  # errored after a great value
    ]
    rows, columns = results.summarize_trials(trials, space, 0)
    assert [r["trial"] for r in rows] == ["steady", "close", "lucky", "far", "cut", "nan"]
    assert columns[-1] == "tied" and "status" in columns and "seeds" in columns
    text = results.results_table(rows, columns)
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert lines["steady"].rstrip().endswith("best") and lines["close"].rstrip().endswith("=")
    assert not lines["far"].rstrip().endswith(("=", "best", "?"))
    assert "stopped (ASHA, epoch 2)" in lines["cut"] and "errored" in lines["nan"]
    # steady: mean -2.033, s 0.153, half 4.303 * 0.153 / sqrt(3) = 0.38 -> two digits of the half.
    assert "-2.03 ± 0.38" in lines["steady"]
    notes = results.table_notes(rows)
    assert any("t-interval" in n for n in notes) and any("bootstrap" in n and "Bouthillier" in n for n in notes)
    assert any(n.startswith("Order: completed trials are ranked first") for n in notes)
    assert results.status_counts(rows) == "6 trials (4 completed, 1 stopped early by ASHA, 1 errored)"
    standing = results.best_standing(rows, space.metric)
    # "lucky" ranks below "steady" but one good seed in three keeps it tied (P 0.26 of a mean as good).
    assert lines["lucky"].rstrip().endswith("=")
    assert standing["tied_with_best"] == "close lucky" and standing["best_interval"].startswith("-2.03 ± 0.38 (95% Student t-interval")


def test_one_seed_search_says_its_ranking_is_untested():
    space = load_space("gemtl_p")
    trials = [
        ({"trial_id": t, "epoch": space.max_epochs, "val/delta_m": v}, {"p": 1.0, "lr": 0.01}, False) for t, v in [("a", -2.0), ("b", -1.0)]
    ]
    rows, columns = results.summarize_trials(trials, space, 0)
    assert "seeds" not in columns and [r["trial"] for r in rows] == ["b", "a"]
    text = results.results_table(rows, columns)
    assert "±" not in text and "?" not in text
    notes = results.table_notes(rows)
    assert len(notes) == 1 and "untested by seeds" in notes[0] and "--set budget.seeds=3" in notes[0] and "final:" in notes[0]
    assert "final stage below" in results.table_notes(rows, final=True)[0]


def test_final_stage_pools_runs_and_ranks_by_mean():
    lucky_cfg = {"method": "ew", "lr": 0.01, "seed": 0}
    steady_cfg = {"method": "gemtl", "p": 1.0, "lr": 0.01, "seed": 0}
    runs = [{"config": {**lucky_cfg, "seed": s}, "metrics": {"val/delta_m": v}} for s, v in [(5, 6.0), (6, -5.0), (7, -4.0)]]
    runs += [{"config": {**steady_cfg, "seed": s}, "metrics": {"val/delta_m": v}} for s, v in [(5, 1.0), (6, 1.2), (7, 0.8)]]
    runs.append({"config": {**steady_cfg, "seed": 8}, "metrics": {"val/delta_m": 50.0}, "error": True})  # errored: left out
    rows = final.summarize(runs, [("ew", lucky_cfg), ("gemtl", steady_cfg)], ["val/delta_m"], "val/delta_m", "max", ["p", "lr"])
    assert [r["group"] for r in rows] == ["gemtl", "ew"] and rows[0]["seeds"] == 3 and rows[0]["val/delta_m"] == pytest.approx(1.0)
    text = results.results_table(rows, ["group", "config", "seeds", "val/delta_m", "tied"])
    assert "1.00 ± 0.50" in text and "p=1 lr=0.01" in text
    # A row whose every run errored is never picked for confirmation either.
    picked_from = [{"_config": {"method": "ew"}, "status": results.ERRORED}, {"_config": {"method": "gemtl"}, "status": results.COMPLETED}]
    space = load_space("gemtl_p", sets=["final={seeds: [1, 2], top: 1}"])
    assert final.pick_configs(picked_from, space) == [("all", {"method": "gemtl"})]


# ----------------------------------------------------------------------------------------- report, console
def _report_trial(trial_id, status, values, epochs=3, **params):
    """A report trial; ``values``: one per seed (a k-seed trial when several)."""
    final = {"val/delta_m": sum(values) / len(values)}
    if len(values) > 1:
        final.update({f"seed{s}/val/delta_m": v for s, v in enumerate(values)})
    return Trial(trial_id, {"lr": 0.01, "seed": 0, "optimizer": "adam", **params}, status, final, epochs, time_total_s=1.0, _history={})


def _report_search(trials):
    return Search("s", "test", "s", "val/delta_m", "max", [("val/delta_m", "max")], 3, 0.0, 1.0, "synthetic", trials)


def test_report_leaderboard_pools_seeds_and_never_ranks_an_errored_group_first():
    trials = [
        # ew: one configuration, its three seeds as three trials (a final stage's re-runs look like this)
        *[_report_trial(f"e{s}", STATUS_COMPLETED, [v], method="ew", seed=s) for s, v in enumerate([-9.0, -9.5, 4.0])],
        _report_trial("g1", STATUS_COMPLETED, [-2.0, -2.2, -1.9], method="gemtl", p=0.5),  # one 3-seed trial
        _report_trial("i1", STATUS_COMPLETED, [-30.0, -31.0, -29.0], method="imtl_l"),
        _report_trial("n1", STATUS_ERRORED, [90.0], epochs=2, method="nash_mtl"),  # a great value, then an error
    ]
    rows, _ = report.leaderboard(_report_search(trials))
    assert [r["method"] for r in rows] == ["gemtl", "ew", "imtl_l", "nash_mtl"]
    assert rows[0]["best"] and rows[0]["seeds"] == 3 and rows[1]["seeds"] == 3 and rows[1]["best_trials"] == "e0 e1 e2"
    assert [results.tie_mark(r) for r in rows] == ["best", "=", "", ""]
    assert rows[3]["status"] == STATUS_ERRORED and "val/delta_m" not in rows[3]
    text, _, _ = report.render(_report_search(trials))
    assert "-2.03 ± 0.38" in text and "-5 ± 19" in text and "Bouthillier" in text and "never best" in text


def test_the_live_best_never_names_an_errored_trial():
    lines: list[str] = []
    progress = console.Progress(load_space("gemtl_p"), out=lines.append)
    cfg = {"p": 1.0, "lr": 0.01}
    progress.result("a", cfg, {"epoch": 1, "val/delta_m": 50.0})
    assert lines[-1].endswith("best 50 (a)")
    progress.errored("a")
    progress.result("b", cfg, {"epoch": 1, "val/delta_m": -3.0})
    assert lines[-1].endswith("best -3 (b)"), lines[-1]


# ----------------------------------------------------------------------------------------- MLflow, API
def test_mlflow_parent_run_and_load_results_carry_the_ranking(tmp_path):
    """A search written through the real Tracker into a SQLite store: the parent run records the best
    configuration's interval, the ties and the counts; load_results gives every trial its configuration's
    standing, and the errored trial (the highest value) is never best."""
    from mtlsearch import tracking
    from mtlsearch.api import load_results

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space("gemtl_p")
    tracker = tracking.Tracker(uri, "ranked", str(tmp_path / "ray" / "ranked-1"), tolerant=False)
    tracker.start_search(space, {})
    planted = {
        "steady": ([-2.0, -2.2, -1.9], tracking.STATUS_COMPLETED, 1.0),
        "lucky": ([-9.0, -9.5, 4.0], tracking.STATUS_COMPLETED, 0.5),
        "far": ([-30.0, -31.0, -29.0], tracking.STATUS_COMPLETED, 2.0),
        "boom": ([80.0, 81.0, 82.0], tracking.STATUS_ERRORED, 3.0),
    }
    trials = []
    for name, (values, status, p) in planted.items():
        epochs = space.max_epochs if status == tracking.STATUS_COMPLETED else 2
        metrics = {
            "epoch": epochs,
            "trial_id": name,
            "val/delta_m": sum(values) / 3,
            **{f"seed{s}/val/delta_m": v for s, v in enumerate(values)},
        }
        trials.append((metrics, {"method": "gemtl", "p": p, "lr": 0.01, "seed": 0}, status == tracking.STATUS_ERRORED))
        # In MLflow each seed is its own trial of the configuration (as the final stage's re-runs are):
        # load_results pools them, whether or not a k-seed trial's seed<s>/ values are logged too.
        for s, value in enumerate(values):
            trial_id, config = f"{name}-{s}", {"method": "gemtl", "p": p, "lr": 0.01, "seed": s}
            tracker.trial_run(trial_id, config)
            tracker.log_result(trial_id, config, {"epoch": epochs, "val/delta_m": value})
            tracker.end_trial(trial_id, config, status, epochs=epochs, error="NaN weights" if status == tracking.STATUS_ERRORED else None)
    rows, _ = results.summarize_trials(trials, space, 0)
    assert rows[0]["trial"] == "steady" and rows[-1]["trial"] == "boom" and not rows[-1]["best"]
    best = {"trial_id": "steady-0", "config": rows[0]["_config"], "metrics": rows[0]["_metrics"]}
    tracker.end_search(best, standing=results.best_standing(rows, space.metric))

    parent = tracker.client.get_run(tracker.parent_run_id)
    assert parent.data.tags["best_trial_id"] == "steady-0"
    assert parent.data.tags["best_interval"].startswith("-2.03 ± 0.38 (95% Student t-interval over seeds, 3 seeds)")
    assert parent.data.tags["tied_with_best"] == "lucky" and "bootstrap" in parent.data.tags["ranking_test"]
    assert parent.data.tags["trial_counts"] == "4 trials (3 completed, 0 stopped early by ASHA, 1 errored)"
    assert parent.data.metrics["best_ci95_low/val/delta_m"] == pytest.approx(-2.4128, abs=1e-3)
    assert parent.data.metrics["best_seeds"] == 3
    # The confirmation phase's ranking goes beside it (here the same rows stand in for the final stage's).
    tracker.record_final(results.best_standing(rows, space.metric), rows[0]["_config"])
    parent = tracker.client.get_run(tracker.parent_run_id)
    assert (
        parent.data.tags["final_best_interval"] == parent.data.tags["best_interval"] and parent.data.tags["final_tied_with_best"] == "lucky"
    )
    assert '"p": 1.0' in parent.data.tags["final_best_config"] and parent.data.metrics["final_best_seeds"] == 3

    frame = load_results("ranked", tracking_uri=uri).set_index("trial")
    assert frame.loc["steady-1", "best"] and frame.loc["steady-2", "rank"] == 1 and frame.loc["lucky-0", "tied"]
    assert not frame.loc["far-0", "tied"] and frame.loc["far-1", "rank"] == 3 and not frame.loc["far-2", "best"]
    for s in range(3):
        boom = frame.loc[f"boom-{s}"]
        assert not boom["best"] and boom["status"] == "errored" and math.isnan(boom["mean"]) and boom["n_seeds"] == 0
    assert frame.loc["steady-0", "ci95_low"] == pytest.approx(-2.4128, abs=1e-3) and frame.loc["steady-0", "n_seeds"] == 3
    assert frame.loc["lucky-2", "mean"] == pytest.approx(-14.5 / 3)
    assert "bootstrap" in frame.attrs["ranking_test"]


def test_an_errored_trial_is_not_on_the_pareto_front():
    rows = [
        {"trial": "ok", "epochs": 3, "status": results.COMPLETED, "_metrics": {"val/a": 0.5, "val/b": 0.5}},
        {"trial": "boom", "epochs": 3, "status": results.ERRORED, "_metrics": {"val/a": 0.9, "val/b": 0.9}},  # dominates, but errored
    ]
    front = results.pareto_rows(rows, [("val/a", "max"), ("val/b", "max")], 3)
    assert [r["trial"] for r in front] == ["ok"]


def test_welch_guards_the_bootstrap_with_few_seeds():
    # Student's t tail against its table: t(0.975, df) leaves 2.5% above it, for df 1, 2 and 10.
    for df, t in [(1, 12.706), (2, 4.303), (10, 2.228)]:
        assert uncertainty.t_sf(t, df) == pytest.approx(0.025, abs=1e-4)
        assert uncertainty.t_sf(-t, df) == pytest.approx(0.975, abs=1e-4)
    # Three seeds of the best all above three of the other (a real final stage on multidigits): the bootstrap
    # alone says 0%, but the best's seeds spread over 26 points; Welch's test (p 0.07) keeps them tied.
    best, other = [-23.97, -11.59, -37.75], [-41.74, -42.23, -42.0]
    assert uncertainty.prob_outperforms(other, best, "max") == 0.0
    assert uncertainty.welch_p(other, best, "max") == pytest.approx(0.073, abs=2e-3)
    assert uncertainty.tied(other, best, "max") is True
    # Clearly separated seeds stay separated by both.
    assert uncertainty.welch_p([1.0, 2.0, 3.0], [10.0, 11.0, 12.0], "max") < 0.001
    # No spread at all: the means decide.
    assert uncertainty.welch_p([1.0, 1.0], [2.0, 2.0], "max") == 0.0 and uncertainty.tied([2.0, 2.0], [2.0, 2.0], "max") is True
