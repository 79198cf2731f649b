"""``python -m mtlsearch.report``: Pareto sets, the leaderboard's pooling over seeds, p buckets and cost
accounting on hand-made trials, multi-objective spaces, and the whole report (tables, CSV, Markdown,
figures logged to the parent run) on a real small search read back from a real MLflow server."""

from __future__ import annotations

import csv
import math
import random
import re

import pytest
from helpers import shared_search as shared

from mtlsearch import report, results, spaces
from mtlsearch.balancing import GeMTL
from mtlsearch.errors import ConfigError
from mtlsearch.report import Search, Trial, analysis, figures
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED, TAG_KIND, TAG_STATUS, TAG_TIME, TAG_TRIAL


# ----------------------------------------------------------------------------------------- Pareto
def test_pareto_mask_on_hand_made_points():
    # (accuracy: max, error: min)
    points = [(0.9, 2.0), (0.8, 1.0), (0.7, 3.0), (0.9, 2.0), (0.95, 2.5), (0.8, 1.5)]
    assert results.pareto_mask(points, ["max", "min"]) == [True, True, False, True, True, False]
    # (0.7, 3.0) is beaten on both; (0.8, 1.5) by (0.8, 1.0): equal on one, better on the other.
    assert results.pareto_mask([(1, 1), (2, 0), (0, 2), (0.5, 0.5)], ["max", "max"]) == [True, True, True, False]
    assert results.pareto_mask([(1, 1), (2, 0), (0, 2), (0.5, 0.5)], ["min", "min"]) == [False, True, True, True]
    assert results.pareto_mask([], ["max"]) == [] and results.pareto_mask([(3.0,)], ["min"]) == [True]


def test_pareto_mask_defining_property_on_random_points():
    rng = random.Random(0)
    for _ in range(20):
        modes = [rng.choice(["min", "max"]) for _ in range(3)]
        pts = [[rng.randint(0, 4) for _ in range(3)] for _ in range(25)]
        mask = results.pareto_mask(pts, modes)

        def dominates(a, b, modes=modes):
            better = [(x > y) if m == "max" else (x < y) for x, y, m in zip(a, b, modes)]
            at_least = [(x >= y) if m == "max" else (x <= y) for x, y, m in zip(a, b, modes)]
            return all(at_least) and any(better)

        for i, p in enumerate(pts):
            beaten = any(dominates(q, p) for j, q in enumerate(pts) if j != i)
            assert mask[i] == (not beaten)
            if not mask[i]:  # every dominated point is dominated by a point of the front
                assert any(dominates(q, p) for q, k in zip(pts, mask) if k)


def test_pareto_rows_use_only_trials_that_reached_max_epochs():
    rows = [
        {"trial": "a", "epochs": 3, "_metrics": {"val/x/acc": 0.9, "val/y/mae": 2.0}},
        {"trial": "b", "epochs": 1, "_metrics": {"val/x/acc": 0.99, "val/y/mae": 0.1}},  # stopped by ASHA: partial
        {"trial": "c", "epochs": 3, "_metrics": {"val/x/acc": 0.8, "val/y/mae": 1.0}},
        {"trial": "d", "epochs": 3, "_metrics": {"val/x/acc": 0.7, "val/y/mae": 3.0}},
    ]
    front = results.pareto_rows(rows, [("val/x/acc", "max"), ("val/y/mae", "min")], max_epochs=3)
    assert [r["trial"] for r in front] == ["a", "c"]


# ----------------------------------------------------------------------------------------- leaderboard
def _trial(tid, method, status, dm, *, p=None, lr=0.01, seed=0, epochs=3, seconds=3600.0, optimizer="adam", extra=None):
    params = {"method": method, "lr": lr, "seed": seed, "optimizer": optimizer, "benchmark": "synthetic", "max_epochs": 3}
    if p is not None:
        params["p"] = p
    final = {"val/delta_m": dm, "val/scale_1/mse": 1.0 - dm / 100, "test/delta_m": dm - 1}
    final.update(extra or {})
    return Trial(tid, params, status, final, epochs, time_total_s=seconds, _history={})


def _search(trials, gpus=0.5, cpus=2.0):
    return Search(
        name="s",
        source="test",
        search_id="s",
        metric="val/delta_m",
        mode="max",
        objectives=[("val/delta_m", "max")],
        max_epochs=3,
        gpus_per_trial=gpus,
        cpus_per_trial=cpus,
        benchmark="synthetic",
        trials=trials,
    )


def test_leaderboard_pools_seeds_buckets_p_and_counts_cost():
    trials = [
        _trial("g1", "gemtl", STATUS_COMPLETED, -4.0, p=0.5, seed=0),
        _trial("g2", "gemtl", STATUS_COMPLETED, -2.0, p=0.5, seed=1),  # same config, other seed: pooled with g1
        _trial("g3", "gemtl", STATUS_COMPLETED, -2.5, p=0.7, seed=0),  # same bucket, other p: beats g1/g2 (mean -3)
        _trial("g4", "gemtl", STATUS_STOPPED, 5.0, p=0.9, epochs=1),  # partial value: never beats a completed config
        _trial("g5", "gemtl", STATUS_COMPLETED, -8.0, p=-1.0),  # bucket p<0
        _trial("g6", "gemtl", STATUS_COMPLETED, -1.0, p=1.0),  # bucket p>=1 (p = 1 is the arithmetic mean)
        _trial("e1", "ew", STATUS_STOPPED, -9.0, epochs=1),  # a row with only partial trials
        _trial("e2", "ew", STATUS_ERRORED, float("nan"), epochs=0, seconds=10.0),
    ]
    rows, metrics = report.leaderboard(_search(trials))
    by = {(r["method"], r["p bucket"]): r for r in rows}
    assert set(by) == {("gemtl", "0<=p<1"), ("gemtl", "p<0"), ("gemtl", "p>=1"), ("ew", "")}
    mid = by[("gemtl", "0<=p<1")]
    assert mid["best_trials"] == "g3" and mid["seeds"] == 1 and mid["val/delta_m"] == -2.5
    assert mid["trials"] == 4 and mid["asha_stopped"] == 1 and mid["epochs_spent"] == 3 + 3 + 3 + 1
    assert mid["gpu_hours"] == pytest.approx(4 * 0.5) and mid["cpu_hours"] == pytest.approx(4 * 2.0)
    assert [r["method"] + r["p bucket"] for r in rows] == ["gemtlp>=1", "gemtl0<=p<1", "gemtlp<0", "ew"]
    ew = by[("ew", "")]
    assert ew["partial"] and ew["val/delta_m"] == -9.0 and ew["errored"] == 1 and ew["asha_stopped"] == 1

    # Pooling: drop g3 and the best configuration of the bucket is p=0.5 over two seeds.
    rows, _ = report.leaderboard(_search([t for t in trials if t.trial_id != "g3"]))
    mid = next(r for r in rows if r["p bucket"] == "0<=p<1")
    assert mid["best_trials"] == "g1 g2" and mid["seeds"] == 2
    assert mid["val/delta_m"] == pytest.approx(-3.0) and mid["val/delta_m std"] == pytest.approx(math.sqrt(2.0))
    text, _, _ = report.render(_search([t for t in trials if t.trial_id != "g3"]))
    # Two seeds: mean -3, s 1.414, 95% t-interval half 12.706 * 1.414 / sqrt(2) = 12.7, digits to match.
    assert "-3 ± 13" in text and "p<0" in text and "(partial)" in text and "stopped (ASHA, epoch 1)" in text
    assert "8 trials" not in text and "7 trials (4 completed, 2 stopped early by ASHA, 1 errored)" in text


def test_p_buckets_and_metric_directions():
    # The buckets are GeMTL's declaration (its HParam's buckets); the report reads them from there.
    (p,) = analysis.bucket_params(_search([_trial("g", "gemtl", STATUS_COMPLETED, 1.0, p=0.5), _trial("e", "ew", STATUS_COMPLETED, 0.0)]))
    assert (p.name, p.methods, p.owners, p.column) == ("p", ("gemtl",), ("GeMTL",), "p bucket")
    assert [p.spec.bucket(v) for v in (-2, -1e-9, 0, 0.99, 1, 3.5)] == ["p<0", "p<0", "0<=p<1", "0<=p<1", "p>=1", "p>=1"]
    assert (
        analysis.bucket_params(_search([_trial("e", "ew", STATUS_COMPLETED, 0.0), _trial("u", "./gone.py:M", STATUS_COMPLETED, 0.0)])) == []
    )
    search = _search([])
    search.benchmark = "multidigits"
    modes = analysis.metric_modes(search, ["val/left/accuracy", "val/number/mae", "val/unknown/loss", "val/x/miou"])
    assert modes == {"val/left/accuracy": "max", "val/number/mae": "min", "val/unknown/loss": "min", "val/x/miou": "max"}


def test_the_report_names_no_method_and_no_searched_parameter_itself():
    """Which parameters were searched, which method owns one and its buckets come from the space, the
    trials and the methods' declarations: no string in ``mtlsearch/report/`` (docstrings aside) is a
    method's name, a method hyperparameter's name or ``lr``, nor a column or file named after one."""
    import ast
    from pathlib import Path

    from mtlsearch.balancing import METHODS

    names = set(METHODS) | {k for cls in METHODS.values() for k in cls.hyperparams} | {"lr"}
    names |= {f"{n} bucket" for n in names} | {f"delta_m_vs_{n}.png" for n in names}
    found = []
    for path in sorted((Path(report.__file__).parent).glob("*.py")):
        tree = ast.parse(path.read_text())
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body and isinstance(node.body[0], ast.Expr)
        }
        found += [
            f"{path.name}:{n.lineno} {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs and n.value in names
        ]
    assert not found, found


def test_metric_directions_of_a_folder_benchmark_come_from_the_trials_data_root(tmp_path):
    """NYUv2's normal angle errors (``mean``, ``median``) are minimised although their names give no hint:
    the benchmark is opened with the data folder the trials used (it cannot be opened without one)."""
    from mtlsearch.benchmarks.generate import generate

    generate("nyuv2", tmp_path / "nyu", train=4, test=1, size=(32, 32), seed=0)
    trial = _trial("n1", "ew", STATUS_COMPLETED, 1.0)
    trial.params.update(benchmark="nyuv2", data_root=str(tmp_path / "nyu"))
    search = _search([trial])
    search.benchmark = "nyuv2"
    modes = analysis.metric_modes(search, ["val/normal/mean", "val/normal/median", "val/normal/within_30", "test/depth/abs_err"])
    assert modes == {"val/normal/mean": "min", "val/normal/median": "min", "val/normal/within_30": "max", "test/depth/abs_err": "min"}
    trial.final = {"val/normal/mean": 30.0, "val/segmentation/miou": 0.2, "val/delta_m": 1.0}
    assert analysis.task_metrics(search) == ["val/segmentation/miou", "val/normal/mean"]  # the benchmark's task order


def test_dominance_heatmap_from_metrics(tmp_path):
    from mtlsearch.dominance import table_from_metrics

    dom = {
        "dominance/encoder.0/scale_1": 0.1,
        "dominance/encoder.0/scale_100": 0.8,
        "dominance/encoder.0/scale_10": 0.1,
        "dominance/encoder.2/scale_1": 0.3,
        "dominance/encoder.2/scale_100": 0.4,
        "dominance/encoder.2/scale_10": 0.3,
    }
    table = table_from_metrics(dom)
    assert list(table) == ["encoder.0", "encoder.2"] and list(table["encoder.0"]) == ["scale_1", "scale_100", "scale_10"]
    assert table["encoder.0"]["scale_100"] == 0.8 and table["encoder.2"]["scale_10"] == 0.3
    trials = [
        _trial("a", "ew", STATUS_COMPLETED, -1.0, extra=dom),
        _trial("b", "ew", STATUS_COMPLETED, -2.0, optimizer="adam_adatask", extra={k: 1 / 3 for k in dom}),
    ]
    path = figures.fig_dominance(_search(trials), tmp_path)
    _assert_png(path)
    assert figures.fig_dominance(_search([_trial("c", "ew", STATUS_COMPLETED, 0.0)]), tmp_path / "none") is None


# ----------------------------------------------------------------------------------------- multi-objective spaces
BASE = {"name": "m", "benchmark": "multidigits", "params": {"method": "gemtl", "p": {"uniform": [-1.0, 2.0]}}}


def test_multi_objective_space_options():
    s = spaces.parse_space({**BASE, "objective": {"metrics": "tasks"}}, "m.yaml")
    assert s.multi_objective and s.scheduler["type"] == "fifo" and (s.metric, s.mode) == ("val/delta_m", "max")
    assert s.objectives() == [("val/left/accuracy", "max"), ("val/right/accuracy", "max"), ("val/number/mae", "min")]
    s.validate_objectives()
    s = spaces.parse_space(
        {
            **BASE,
            "objective": {"metrics": ["val/left/accuracy", "val/number/mae"], "modes": ["max", "min"]},
            "scheduler": {"type": "asha", "metric": "val/delta_m", "mode": "max"},
        },
        "m.yaml",
    )
    assert s.scheduler["type"] == "asha" and s.objectives() == [("val/left/accuracy", "max"), ("val/number/mae", "min")]
    one = spaces.parse_space({**BASE, "objective": {"metrics": ["val/number/mae"], "modes": ["min"]}}, "m.yaml")
    assert not one.multi_objective and (one.metric, one.mode) == ("val/number/mae", "min")


@pytest.mark.parametrize(
    "objective, extra, field",
    [
        ({"metrics": ["val/left/accuracy", "val/number/mae"]}, {}, "objective.modes"),
        ({"metrics": ["val/left/accuracy", "val/number/mae"], "modes": ["max", "lowest"]}, {}, "objective.modes"),
        ({"metrics": "tasks", "modes": ["max"]}, {}, "objective.modes"),
        ({"metrics": "tasks", "metric": "val/delta_m"}, {}, "objective"),
        ({"metrics": ["val/left/accuracy", "val/left/accuracy"], "modes": ["max", "max"]}, {}, "objective.metrics"),
        ({"metrics": "tasks"}, {"searcher": {"type": "optuna", "sampler": "cmaes"}}, "searcher.sampler"),
        ({"metric": "val/delta_m"}, {"scheduler": {"type": "asha", "metric": "val/left/accuracy"}}, "scheduler.metric"),
    ],
)
def test_multi_objective_space_errors_name_the_field(objective, extra, field):
    with pytest.raises(ConfigError) as err:
        spaces.parse_space({**BASE, "objective": objective, **extra}, "m.yaml")
    assert err.value.field == field


def test_multi_objective_metric_must_be_reported_by_the_benchmark():
    s = spaces.parse_space({**BASE, "objective": {"metrics": ["val/left/acc", "val/number/mae"], "modes": ["max", "min"]}}, "m.yaml")
    with pytest.raises(ConfigError, match="val/left/accuracy") as err:
        s.validate_objectives()
    assert err.value.field == "objective.metrics"


# ----------------------------------------------------------------------------------------- a real search


def _assert_png(path, min_bytes=8000):
    import matplotlib.image as mpimg

    assert path is not None and path.is_file() and path.stat().st_size > min_bytes, path
    img = mpimg.imread(path)
    assert img.shape[0] >= 250 and img.shape[1] >= 300
    assert img[..., :3].std() > 0.02  # not a blank canvas


def test_report_on_a_real_search(remote_search, tmp_path, capsys):
    uri = remote_search.uri
    out, md, csv_path = tmp_path / "figures", tmp_path / "report.md", tmp_path / "report.csv"
    code = report.main(
        ["--experiment", "remote_small", "--tracking-uri", uri, "--out", str(out), "--markdown", str(md), "--csv", str(csv_path)]
    )
    text = capsys.readouterr().out
    assert code == 0, text

    runs = shared.search_runs(uri, remote_search.experiment_id)
    parent = next(r for r in runs if shared.run_tags(r)[TAG_KIND] == "search")
    trials = [r for r in runs if shared.run_tags(r)[TAG_KIND] == "trial"]
    # The best configuration per method is the best mean Δm over seeds among completed trials in MLflow
    # (or, for a method whose trials were all stopped early, the best partial one).
    expect = {}
    for method in {shared.run_params(r)["method"] for r in trials}:
        mine = [r for r in trials if shared.run_params(r)["method"] == method]
        done = [r for r in mine if shared.run_tags(r)[TAG_STATUS] == STATUS_COMPLETED] or mine
        configs = {}
        for r in done:
            key = tuple(sorted((k, v) for k, v in shared.run_params(r).items() if k != "seed"))
            configs.setdefault(key, []).append(shared.run_metrics(r)["val/delta_m"])
        expect[method] = max(sum(v) / len(v) for v in configs.values())
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    got = {}
    for row in rows:
        got[row["method"]] = max(got.get(row["method"], -math.inf), float(row["val/delta_m"]))
    assert got == pytest.approx(expect)
    assert sum(int(r["trials"]) for r in rows) == len(trials) == 4
    stopped = sum(shared.run_tags(r)[TAG_STATUS] == STATUS_STOPPED for r in trials)
    assert sum(int(r["asha_stopped"]) for r in rows) == stopped
    seconds = sum(float(shared.run_tags(r)[TAG_TIME]) for r in trials)
    assert sum(float(r["cpu_hours"]) for r in rows) == pytest.approx(seconds / 3600, rel=1e-3)
    assert all(float(r["gpu_hours"]) == 0.0 for r in rows)  # gpus_per_trial = 0
    for r in rows:
        if r["method"] == "gemtl":
            assert r["p bucket"] in GeMTL.hyperparams["p"].bucket_labels()
        for task in ("scale_1", "scale_10", "scale_100"):
            assert float(r[f"val/{task}/mse"]) > 0

    assert "Pareto set:" in text and "val/delta_m" in text and f"{len(trials)} trials (" in text
    markdown = md.read_text()
    assert "| method | optimizer | p bucket |" in markdown and "Pareto set:" in markdown
    assert markdown.count("\n| ") >= 1 + len(rows)

    expected = {"delta_m_vs_lr.png", "delta_m_by_method.png", "learning_curves.png", "parallel_coordinates.png"}
    if any(shared.run_params(r)["method"] == "gemtl" for r in trials):
        expected.add("delta_m_vs_p.png")
    if sum(shared.run_tags(r)[TAG_STATUS] == STATUS_COMPLETED for r in trials) >= 1:
        expected.add("pareto.png")
    assert expected <= {p.name for p in out.glob("*.png")}
    for name in expected:
        _assert_png(out / name)
    logged = shared.rest(uri, "artifacts/list", params={"run_id": parent["info"]["run_id"], "path": "report"})
    assert expected | {"leaderboard.md", "report.html", "trials.csv"} <= {f["path"].split("/")[-1] for f in logged["files"]}

    # The per-trial CSV: one row per trial, one column per searched parameter (from the logged space file).
    with open(out / "trials.csv") as f:
        per_trial = list(csv.DictReader(f))
    assert len(per_trial) == len(trials)
    header = list(per_trial[0])
    assert [k for k in header if k in ("method", "p", "lr", "seed", "batch_size")] == ["method", "p", "lr", "seed"]
    assert {r["trial"] for r in per_trial} == {shared.run_tags(r)[TAG_TRIAL] for r in trials}
    # One self-contained page: every figure inline, nothing loaded from elsewhere; 4 trials are too few to
    # rank parameters, which the report says in one line (the table itself: test_report_page.py).
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(list(out.glob("*.png")))
    assert not re.search(r'src\s*=\s*"(?!data:)', html) and "<link" not in html and "<script src" not in html
    # Its only links: each trial's run page on the tracking server.
    links = set(re.findall(r'href="([^"]+)"', html))
    run_pages = {f"{uri}/#/experiments/{parent['info']['experiment_id']}/runs/{r['info']['run_id']}" for r in trials}
    assert links == run_pages, (links, run_pages)
    note = "Parameter importance: not computed: "
    assert note in text and note in html and "at least 5 are needed" in html
    assert "remote_small" in html and "synthetic" in html and "4 trials x up to 2 epochs" in html

    # The Optuna study (remote tracking: kept in the search's --storage folder), loaded by optuna.
    import optuna

    from mtlsearch import studies

    storage = str(remote_search.results_dir.parent / "optuna.journal")
    assert f"optuna-dashboard {storage}" in text and f"optuna-dashboard {storage}" in remote_search.output
    study = optuna.load_study(study_name="remote", storage=studies.open_storage(storage))
    assert len(study.trials) == len(trials)
    assert sorted(round(t.params["lr"], 12) for t in study.trials) == sorted(round(float(shared.run_params(r)["lr"]), 12) for r in trials)

    # The Ray results folder gives the same leaderboard as MLflow.
    from_ray, _ = report.leaderboard(report.load_results(remote_search.results_dir))
    from_mlflow, _ = report.leaderboard(report.load_mlflow(uri, "remote_small"))
    key = lambda rows: sorted(
        (
            r["method"],
            r["p bucket"],
            r.get("best_trials"),
            round(r.get("val/delta_m", 0), 9),
            r["trials"],
            r["asha_stopped"],
            r["epochs_spent"],
        )
        for r in rows
    )
    assert key(from_ray) == key(from_mlflow)


def test_report_errors_are_one_line(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --results: ") and "not a Ray results folder" in err[0]
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    assert report.main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "--tracking-uri: no MLflow store at" in capsys.readouterr().err  # and none made (issue 26, row 11)
    assert not (tmp_path / "empty.db").exists()
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()  # an empty store
    capsys.readouterr()
    assert report.main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
