"""``perf/seed_cost.py`` at tiny sizes: it runs, prints its table and target line, and refuses bad input
with exit 2.  The figures themselves are measurements, run by hand; none is checked here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

PERF = Path(__file__).resolve().parents[2] / "perf"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"perf_{name}", PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seed_cost = _load("seed_cost")


def test_the_script_prints_one_row_per_setup_and_the_target_line(capsys, tmp_path):
    out_file = tmp_path / "rows.json"
    argv = ["--benchmark", "synthetic", "--ks", "1", "2", "--rounds", "1", "--set", "p=0.5", "--json", str(out_file)]
    assert seed_cost.main(argv) == 0
    out = capsys.readouterr().out
    assert "| 1 | one seed |" in out
    for how in ("k single-seed trials", "one trial, loop", "one trial, batched"):
        assert f"| 2 | {how} |" in out, out
    assert "not measured (--ks without 4)" in out
    rows = json.loads(out_file.read_text())["rows"]
    assert [(r["k"], r["way"]) for r in rows][0] == (1, "one seed") and rows[0]["ratio"] == 1.0
    assert all(r["s_per_epoch"] > 0 and r["cpu_s_per_epoch"] >= 0 for r in rows)


def test_the_target_line_reads_the_best_four_seed_trial():
    rows = [
        {"k": 4, "way": "k single-seed trials", "ratio": 4.0, "cpu_ratio": 4.0},
        {"k": 4, "way": "one trial, loop", "ratio": 3.9, "cpu_ratio": 3.8},
        {"k": 4, "way": "one trial, batched", "ratio": 1.8, "cpu_ratio": 1.9},
    ]
    assert "met (one trial, batched: 1.80x wall, 1.90x CPU)" in seed_cost.target_line(rows)
    assert "NOT met (one trial, loop: 3.90x" in seed_cost.target_line(rows[:2])


def test_bad_input_exits_2_with_one_line(capsys):
    assert seed_cost.main(["--ks", "2", "4"]) == 2
    assert capsys.readouterr().err.strip() == "error: --ks: the table's ratios are to one seed: include 1"
    assert seed_cost.main(["--benchmark", "synthetic", "--ks", "1", "2", "--set", "no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_key" in err
