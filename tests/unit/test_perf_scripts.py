"""``perf/search_efficiency.py`` and ``perf/overhead.py`` without Ray: their grids, fixed configs, the
curve and target arithmetic, bad input (exit 2 before anything starts) and the bare-trainer child.
The searches themselves are measurements (minutes), run by hand; no figure is timed here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mtlsearch import spaces
from mtlsearch.errors import ConfigError

PERF = Path(__file__).resolve().parents[2] / "perf"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"perf_{name}", PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


eff = _load("search_efficiency")
ovh = _load("overhead")


def test_grid_values_cover_each_range_by_cell_centres():
    P = spaces.Param
    assert eff.grid_values(P("p", "uniform", [-2.0, 4.0]), 3) == [-1.0, 1.0, 3.0]
    assert eff.grid_values(P("lr", "loguniform", [1e-4, 1e-2]), 2) == [0.0003162, 0.003162]
    assert eff.grid_values(P("o", "choice", ["adam", "sgd"]), 5) == ["adam", "sgd"]
    assert eff.grid_values(P("k", "randint", [0, 10]), 3) == [0, 4, 9]
    assert eff.grid_values(P("q", "quniform", [0.0, 1.0, 0.5]), 2) == [0.0, 1.0]


def test_make_grid_of_the_bundled_spaces_and_its_refusals():
    grid = eff.make_grid(spaces.load_space("gemtl_p"), {"p": 4}, 3)
    assert list(grid) == ["p", "lr"] and len(grid["p"]) == 4 and len(grid["lr"]) == 3
    assert min(grid["p"]) > -2.0 and max(grid["p"]) < 4.0
    assert len(eff.make_grid(spaces.load_space("adatask"), {}, 2)["optimizer"]) == 6
    with pytest.raises(ConfigError, match="'q'.*not searched.*searched: p, lr"):
        eff.make_grid(spaces.load_space("gemtl_p"), {"q": 2}, 3)
    with pytest.raises(ConfigError, match="conditional"):
        eff.make_grid(spaces.load_space("methods"), {}, 3)
    # SPACE:NAME=K is that space's own (and wins over NAME=K); other spaces' entries are left to them
    counts = eff.parse_grid_counts(["lr=2", "imtl:lr=4", "gemtl_p:p=5"], 3)
    assert len(eff.make_grid(spaces.load_space("imtl"), counts, 3)["lr"]) == 4
    assert [len(v) for v in eff.make_grid(spaces.load_space("gemtl_p"), counts, 3).values()] == [5, 2]


def _run(strategy, seed, vals):
    """A search's results as the recorder keeps them: one per epoch spent, (trial, epoch, val)."""
    return {
        "strategy": strategy,
        "seed": seed,
        "wall_s": 1.0,
        "results": [{"trial": t, "epoch": e, "val": v, "test": v - 1} for t, e, v in vals],
    }


def _args(**kw):
    ns = eff.build_parser().parse_args(["--samples", "3", "--max-epochs", "2", "--seeds", "0", "1"])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_report_best_so_far_and_the_target_line():
    space = spaces.load_space("gemtl_p")
    grid = {"p": [0.0, 2.0], "lr": [0.001, 0.01]}  # 4 trials x 2 epochs = 8 epochs; 35% = 2.8 epochs
    runs = [
        _run(
            "grid",
            0,
            [("a", 1, -30), ("a", 2, -20), ("b", 1, -12), ("b", 2, -10), ("c", 1, -40), ("c", 2, -35), ("d", 1, -50), ("d", 2, -45)],
        ),
        _run("asha_tpe", 0, [("x", 1, -15), ("y", 1, -10.5), ("x", 2, -9), ("z", 1, -60)]),  # -10.5 by epoch 2
        _run("asha_tpe", 1, [("x", 1, -11), ("y", 1, -30), ("x", 2, -14)]),  # -11 by epoch 2; x ends at -14
    ]
    text, met = eff.report(space, runs, grid, _args())
    assert met is True
    assert "= 4 trials x 2 epochs = 8 epochs" in text
    target = text.splitlines()[-1]
    # one seed per trial: no interval, so "reached" is within --target-points (1) of the grid's best
    assert "full grid's best val/delta_m (-10.00; reached = at least -11.00, within 1 point(s)" in target and "(3 of 8)" in target
    assert "in >= 2 of 2 searcher seeds: 2/2" in target and target.endswith("MET")
    rows: dict[str, str] = {}
    for line in text.splitlines():  # the first table's row (the verdict table below has a row of the same name)
        rows.setdefault(line.split("  ")[0], line)
    # best of any epoch (-9, -11 -> mean -10) and the launcher's last-epoch best (-9, -14 -> -11.5)
    assert "-10.00 ± 1.41" in rows["ASHA + TPE (default)"] and "-11.50 ± 3.54" in rows["ASHA + TPE (default)"]
    assert "3.5" in rows["ASHA + TPE (default)"] and "44%" in rows["ASHA + TPE (default)"]
    # the per-strategy verdict row: reached 2/2, best@35% per seed -10.50 -11.00, mean -10.75, gap 0.75
    verdict = [line for line in text.splitlines() if line.startswith("ASHA + TPE (default)  2/2")]
    assert verdict and "-10.50 -11.00" in verdict[0] and "-10.75" in verdict[0] and verdict[0].rstrip().endswith("0.75")
    # a stricter target: 0.5 points -> one seed of two reached (the share asks for 2 of 2)
    text, met = eff.report(space, runs, grid, _args(target_points=0.5))
    assert met is False and "2 searcher seeds: 1/2" in text and text.endswith("NOT MET")
    # 1 of 2 is enough with --target-share 0.5; ASHA + random with a better mean best@35% still fails it
    runs.append(_run("asha_random", 0, [("r", 1, -10.2), ("s", 1, -10.1)]))
    runs.append(_run("asha_random", 1, [("r", 1, -10.3)]))
    text, met = eff.report(space, runs, grid, _args(target_points=0.5, target_share=0.5, strategies=list(eff.STRATEGIES)))
    assert met is False and "1/2; mean best@35% -10.75 vs ASHA+random's -10.20 (worse) -> NOT MET" in text
    text, met = eff.report(space, runs[:3], grid, _args(target_points=0.5, target_share=0.5))
    assert met is True and text.endswith("1/2 -> MET")


def test_seeded_spaces_are_judged_against_the_grids_seed_interval():
    space = spaces.load_space("gemtl_p")  # budget.seeds: 3
    grid = {"p": [1.0], "lr": [0.01]}  # 1 trial x 2 epochs, judged at 100% of them
    best = {"trial": "a", "epoch": 1, "val": -10.0, "test": -11.0, "seeds": [-12.0, -10.0, -8.0]}  # 95%: -10 ± 4.97
    runs = [
        {"strategy": "grid", "seed": 0, "wall_s": 1.0, "results": [best, {**best, "epoch": 2, "val": -20.0, "seeds": [-20.0] * 3}]},
        _run("asha_tpe", 0, [("x", 1, -14.0)]),  # within the interval: reached
        _run("asha_tpe", 1, [("x", 1, -15.5)]),  # below its low end (-14.97): not reached
    ]
    text, met = eff.report(space, runs, grid, _args(target_share=0.5, target_fraction=1.0))
    assert "reached = at least -14.97, its 3-seed 95% interval [-14.97, -5.03]" in text
    assert met is True and "in >= 1 of 2 searcher seeds: 1/2" in text
    assert eff.report(space, runs, grid, _args(target_fraction=1.0))[1] is False  # 0.8 of 2 seeds: both must reach it
    result = {
        "val/delta_m": -10.0,
        "seed1/val/delta_m": -10.0,
        "seed0/val/delta_m": -12.0,
        "seed0/test/delta_m": 1.0,
        "seed2/val/delta_m": -8,
    }
    assert eff.seed_values(result, "val/delta_m") == [-12.0, -10.0, -8.0]
    assert eff.seed_values({"val/delta_m": 1.0}, "val/delta_m") == []


def test_bohb_gets_the_spaces_own_domains_and_constants():
    from ray import tune

    config = eff.bohb_param_space(spaces.load_space("imtl"))
    assert config["optimizer"] == "adam" and config["batch_size"] == 64 and config["max_epochs"] == 12
    assert isinstance(config["method"], tune.search.sample.Categorical) and config["method"].categories == ["imtl_g", "imtl_l", "imtl_h"]
    assert isinstance(config["lr"], tune.search.sample.Float) and (config["lr"].lower, config["lr"].upper) == (3e-4, 3e-2)
    assert eff.bohb_param_space(spaces.load_space("gemtl_p"))["seeds"] == 3
    # ConfigSpace gives a choice as numpy.str_: a checkpoint holding one cannot be loaded with weights_only
    import numpy as np

    config = eff.plain({"optimizer": np.str_("adam"), "lr": np.float64(0.01), "sizes": [np.int64(3)], "p": 1.5})
    assert config == {"optimizer": "adam", "lr": 0.01, "sizes": [3], "p": 1.5}
    assert type(config["optimizer"]) is str and type(config["lr"]) is float and type(config["sizes"][0]) is int
    with pytest.raises(ConfigError, match="'method' \\(grid\\) has no BOHB"):
        eff.bohb_param_space(spaces.load_space("methods"))


def test_tables_again_from_the_json_file(tmp_path, capsys):
    runs = [_run("grid", 0, [("a", 1, -30), ("a", 2, -20)]), _run("asha_tpe", 3, [("x", 1, -25), ("x", 2, -19.5)])]
    path = tmp_path / "curves.json"
    path.write_text(json.dumps({"gemtl_p": {"space": "gemtl_p", "max_epochs": 2, "grid": {"p": [1.0], "lr": [0.01]}, "runs": runs}}))
    assert eff.main(["--from-json", str(path), "--target-fraction", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "searcher seeds 3" in out and "= 1 trials x 2 epochs = 2 epochs" in out
    assert "full grid's best val/delta_m (-20.00; reached = at least -21.00" in out and "100% of its epochs (2 of 2)" in out
    assert out.strip().endswith("1/1 -> MET")


def test_bad_input_is_one_line_and_exit_2_before_ray(capsys):
    assert eff.main(["--grid", "q=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--grid" in err and "searched: p, lr" in err
    assert eff.main(["--grid", "p=0"]) == 2
    assert "--grid" in capsys.readouterr().err
    assert ovh.main(["--epochs", "1"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert ovh.main(["--param", "x=1"]) == 2
    assert "--param" in capsys.readouterr().err


def test_overhead_trial_config_is_the_middle_of_each_range_unless_fixed():
    space = spaces.load_space("gemtl_p")
    assert ovh.fixed_params(space, []) == {"p": "1.0", "lr": "0.003"}
    assert ovh.fixed_params(space, ["lr=0.01"]) == {"p": "1.0", "lr": "0.01"}


cost = _load("trial_cost")


def test_trial_cost_refuses_bad_options_in_one_line(capsys):
    for argv, flag in (
        (["--trials", "0"], "--trials"),
        (["--modes", "bare", "nope"], "--modes"),
        (["--epochs", "0"], "--epochs"),
        (["--rounds", "0"], "--rounds"),
    ):
        assert cost.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"error: {flag}"), err


def _cost_run(mode, round_, wall, rss_10=700.0, rss_100=710.0):
    return {
        "mode": mode,
        "round": round_,
        "load": 0.5,
        "code": 0,
        "wall_s": wall,
        "ended": 100,
        "rss_10": rss_10,
        "rss_100": rss_100,
        "rss_peak": 990.0,
    }


def test_trial_cost_table_ratio_rss_and_targets():
    args = cost.build_parser().parse_args(["--trials", "100"])
    runs = [_cost_run("launcher", 1, 30.0, 800.0, 900.0), _cost_run("bare", 1, 24.0), _cost_run("noop", 1, 12.0)]
    text = cost.report(args, runs, (6.2, 100), "load 0.1")
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:] if line.split() and line.split()[0] in cost.MODES}
    assert rows["launcher"][1:7] == ["1", "0.50", "100/100", "30.0", "0.300", "1.25"] and rows["noop"][6] == "0.50"
    assert "launcher <= 1.5x bare Ray Tune: 1.25x -> MET" in text
    assert "RSS flat (100% within 1.25x of 10%, every round): 1.12x -> MET" in text
    assert text.endswith("6.20 s -> NOT MET (< 5 s)")
    runs[0]["rss_100"] = 1100.0
    runs[0]["wall_s"] = 40.0
    text = cost.report(args, runs, None, "load 0.1")
    assert "1.67x -> NOT MET" in text and "every round): 1.38x -> NOT MET" in text


def test_trial_cost_judges_the_median_of_the_rounds_each_against_its_own_bare():
    """Rounds: each launcher run over the bare run of the same round; the verdict on their median, so one
    loaded round neither passes nor fails the target alone; the RSS must stay flat in every round."""
    args = cost.build_parser().parse_args(["--trials", "100", "--rounds", "3"])
    runs = [_cost_run("launcher", 1, 30.0), _cost_run("bare", 1, 20.0), _cost_run("bare", 2, 10.0), _cost_run("launcher", 2, 20.0)]
    runs += [_cost_run("launcher", 3, 28.0), _cost_run("bare", 3, 20.0)]
    text = cost.report(args, runs, None, "load 0.1")
    assert "1.50x (median of 3 rounds: 1.50 2.00 1.40) -> MET" in text, text
    assert [line.split()[:2] for line in text.splitlines()[3:9]] == [
        ["launcher", "1"],
        ["bare", "1"],
        ["bare", "2"],
        ["launcher", "2"],
        ["launcher", "3"],
        ["bare", "3"],
    ]
    runs[3]["rss_100"] = 900.0
    assert "every round): 1.01x 1.29x 1.01x -> NOT MET" in cost.report(args, runs, None, "load 0.1")


drv = _load("driver_cost")


def test_driver_cost_refuses_bad_options_in_one_line(capsys):
    for argv, flag in ((["--trials", "5"], "--trials"), (["--studies", "journal", "redis"], "--studies")):
        assert drv.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith(f"error: {flag}"), err


def test_driver_cost_replays_the_store_calls_on_real_stores(tmp_path, capsys):
    """Ten trials (after the uncounted warm-up ones) through the real searcher and MLflow callback into a journal
    and a SQLite study: one row each (no figure is judged here), and the stores hold every trial, finished."""
    import optuna
    from mlflow.tracking import MlflowClient

    from mtlsearch import studies

    assert drv.main(["--trials", "10", "--workdir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("10 one-epoch trials' store calls on the driver") and [line.split()[0] for line in lines[3:]] == [
        "journal",
        "sqlite",
    ]
    for line in lines[3:]:
        assert len(line.split()) == 2 + len(drv.CALLS) + 2 and all(float(v) > 0 for v in line.split()[1:])
    for study, url in (
        ("journal", str(tmp_path / "journal" / "optuna.journal")),
        ("sqlite", f"sqlite:///{tmp_path / 'sqlite' / 'optuna.db'}"),
    ):
        trials = optuna.load_study(study_name="driver_cost", storage=studies.open_storage(url)).get_trials()
        assert len(trials) == 10 + drv.WARMUP and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / study / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("driver_cost").experiment_id], "tags.`mtlsearch.kind` = 'trial'")
        assert len(runs) == 10 + drv.WARMUP and {r.info.status for r in runs} == {"FINISHED"}
