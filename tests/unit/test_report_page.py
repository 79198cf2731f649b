"""The report's view of the searched parameters: per-trial CSV, p x lr and parallel-coordinates data,
Optuna's parameter importance, the self-contained HTML page (hand-made searches; the real search
through MLflow is in test_report.py)."""

import csv
import math
import re

import pytest

from mtlsearch.report import importance, page, param_figures, scale, trials
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED

from helpers.report_search import SPACE, _score, _search


def test_searched_params_come_from_the_space_with_its_set_lines():
    search = _search()
    got = trials.searched_params(search, search.info["space_text"])
    assert [(p.name, p.kind, p.log, p.low, p.high) for p in got] == [("p", "float", False, -2.0, 3.0), ("lr", "float", True, 3e-4, 3e-2)]
    inferred = {p.name: p for p in trials.params_from_trials(search)}
    assert set(inferred) == {"p", "lr"} and inferred["lr"].log and not inferred["p"].log


def test_trials_csv_has_one_row_per_trial_and_one_column_per_searched_parameter(tmp_path):
    search = _search()
    searched = trials.searched_params(search, search.info["space_text"])
    path = trials.write_trials_csv(tmp_path / "trials.csv", search, searched)
    with open(path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert len(body) == len(search.trials)
    for name in ("p", "lr"):
        assert header.count(name) == 1
    assert not {"seed", "batch_size", "method"} & set(header)
    assert header[:3] == ["trial", "status", "epochs"] and "val/delta_m" in header
    assert {"val/left/accuracy", "val/number/mae", "test/left/accuracy", "test/delta_m"} <= set(header)
    by_id = {r[0]: dict(zip(header, r)) for r in body}
    for t in search.trials:
        assert float(by_id[t.trial_id]["lr"]) == t.params["lr"] and by_id[t.trial_id]["status"] == t.status


def test_joint_data_draws_stopped_trials_hollow_and_keeps_them_off_the_colour_scale():
    search = _search()
    search.trials[2].final["val/delta_m"] = -500.0  # a stopped trial's partial value, far below the rest
    data = param_figures.joint_data(search, trials.searched_params(search, SPACE))
    assert data["x"].name == "lr" and data["x"].log and data["y"].name == "p"
    status = {t.trial_id: t.status for t in search.trials}
    assert len(data["points"]) == len(search.trials)
    for pt in data["points"]:
        assert pt["hollow"] == (status[pt["trial"]] == STATUS_STOPPED)
        assert pt["errored"] == (status[pt["trial"]] == STATUS_ERRORED)
    done = [t.final["val/delta_m"] for t in search.trials if t.status == STATUS_COMPLETED]
    assert data["limits"][:2] == (min(done), max(done)) and "reached 12 epochs" in data["limits"][2]
    # Without two completed trials: robust limits (Tukey's fences), still not the outlier.
    for t in search.trials:
        if t.status == STATUS_COMPLETED:
            t.status = STATUS_STOPPED
    low, high, how = scale.colour_limits(search)
    assert low > -500.0 and "robust limits" in how


def test_joint_axes_without_p_are_the_most_important_numbers():
    space = SPACE.replace("p: {uniform: [-2.0, 4.0]}", "weight_decay: {loguniform: [1.0e-6, 1.0e-3]}").replace(
        "# --set params.p.uniform=[-2.0, 3.0]", ""
    )
    searched = trials.searched_params(_search(), space)
    imp = importance.Importance(params=["lr", "weight_decay"], values={"fANOVA": {"weight_decay": 0.8, "lr": 0.2}})
    x, y = param_figures.joint_axes(searched, imp)
    assert (x.name, y.name) == ("lr", "weight_decay")
    assert param_figures.joint_axes(searched[:1]) is None


def test_parallel_data_axes_log_and_categorical_and_faint_stopped_trials():
    space = SPACE.replace("method: gemtl", "method: {choice: [gemtl, ew]}")
    search = _search()
    for i, t in enumerate(search.trials):
        t.params["method"] = "ew" if i % 2 else "gemtl"
    data = param_figures.parallel_data(search, trials.searched_params(search, space))
    axes = {a.name: a for a in data["axes"]}
    assert list(axes) == ["method", "p", "lr"] and axes["lr"].log and axes["method"].kind == "categorical"
    for line in data["lines"]:
        t = next(t for t in search.trials if t.trial_id == line["trial"])
        assert line["faint"] == (t.status != STATUS_COMPLETED)
        assert line["ys"][0] == (0.0 if t.params["method"] == "gemtl" else 1.0)
        lr_pos = math.log(t.params["lr"] / 3e-4) / math.log(100)
        assert line["ys"][2] == pytest.approx(lr_pos)


def test_importance_ranks_the_parameter_the_objective_depends_on_with_both_evaluators(tmp_path):
    search = _search()
    searched = trials.searched_params(search, SPACE)
    result = importance.param_importance(search, searched)
    assert result.ok and set(result.values) == {"fANOVA", "PED-ANOVA"}
    # Every trial is compared at epoch 3 (the latest epoch at least half of the trials reached), with
    # its value at that epoch (not its last one); the errored trial (1 epoch) is left out.
    assert result.epoch == 3 and result.trials == len(search.trials) - 1
    study, names, _ = importance.build_study(search, searched, 3)
    for ot in study.trials:
        assert ot.value == pytest.approx(_score(ot.params["lr"], 3))
    for label in ("fANOVA", "PED-ANOVA"):
        assert result.values[label]["lr"] > result.values[label]["p"], result.values
        assert sum(result.values[label].values()) == pytest.approx(1.0)
    text = importance.importance_text(result, "val/delta_m")
    assert "FanovaImportanceEvaluator" in text and "PedAnovaImportanceEvaluator" in text and "epoch 3" in text
    path = param_figures.fig_importance(result, "val/delta_m", tmp_path)
    assert path.is_file() and path.stat().st_size > 5000


def test_importance_says_why_in_one_line_when_it_cannot_rank():
    one = SPACE.replace("p: {uniform: [-2.0, 4.0]}", "p: 0.5").replace("# --set params.p.uniform=[-2.0, 3.0]", "")
    search = _search()
    result = importance.param_importance(search, trials.searched_params(search, one))
    assert not result.ok and result.note.count("\n") == 0 and "one parameter (lr)" in result.note
    few = _search(n=4)
    result = importance.param_importance(few, trials.searched_params(few, SPACE))
    assert not result.ok and "at least 5" in result.note and "\n" not in importance.importance_text(result, "x")


def test_html_page_is_self_contained_with_figures_and_both_evaluators(tmp_path):
    search = _search()
    searched = trials.searched_params(search, SPACE)
    result = importance.param_importance(search, searched)
    paths = [
        param_figures.fig_joint(param_figures.joint_data(search, searched, result), tmp_path),
        param_figures.fig_parallel(param_figures.parallel_data(search, searched), tmp_path),
        param_figures.fig_importance(result, search.metric, tmp_path),
    ]
    assert all(p is not None and p.is_file() for p in paths)
    html = page.build_page(search, [], [search.metric], result, searched, paths)
    assert html.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', html), "the page links outside itself (a hand-made search has no MLflow runs)"
    assert "<link" not in html and "<script src" not in html and html.count("<script>") == 1  # the inline table sorter
    for text in (
        "fANOVA",
        "PED-ANOVA",
        "FanovaImportanceEvaluator",
        "PedAnovaImportanceEvaluator",
        "Parameter importance",
        "multidigits",
        "val/delta_m (max)",
        "16 trials x up to 12 epochs",
        "optuna-dashboard sqlite:////x/o.db",
    ):
        assert text in html, text
    assert html.count("<tr>") >= len(search.trials) + 1 + len(result.params)
