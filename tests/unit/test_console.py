"""The launcher's console without a search: --dry-run, --resume with nothing to resume, the progress line.

Fast (no Ray is started): a search's own console output is checked in test_search_e2e.py."""

import re
import textwrap
from pathlib import Path

from mtlsearch import console, faults, spaces
from mtlsearch.launch import main

SPACE = """
name: console_tiny
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 3, max_epochs: 4}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
resources: {cpus_per_trial: 1}
params:
  method: gemtl
  p: {uniform: [-1.0, 2.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


def _argv(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    return ["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]


def test_dry_run_prints_ranges_budget_and_estimate_and_starts_nothing(tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.chdir(tmp_path)
    was_running = ray.is_initialized()
    assert main([*_argv(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "p: uniform [-1, 2]" in out and "lr: loguniform [0.001, 0.01]" in out, out
    assert "Epoch budget: 3 trials x 4 epochs = 12 epochs at most" in out, out
    assert "Estimated time: about " in out and "one epoch of the first trial configuration took" in out, out
    # Where a search would write: the MLflow store and experiment, Ray's folder, the Optuna study.
    assert f"  MLflow: experiment 'console_tiny' in sqlite:///{tmp_path / 'mlflow.db'} " in out, out
    assert f"  Ray Tune's results and checkpoints: {tmp_path / 'ray'}/console_tiny-<date>-<time>\n" in out, out
    assert f"  Optuna study 'console_tiny-<date>-<time>': {tmp_path / 'mlflow-optuna.journal'}\n" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no Ray results, no MLflow store
    assert ray.is_initialized() == was_running


def test_resume_with_nothing_to_resume_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*_argv(tmp_path), "--resume"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume: no unfinished search of 'console_tiny'"), err
    assert "run without --resume" in err[0] and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_progress_counts_the_budget_asha_savings_and_the_last_epoch_best(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    now = [0.0]
    lines = []
    progress = console.Progress(spaces.load_space(str(space)), out=lines.append, clock=lambda: now[0])
    cfg = {"p": 0.5, "lr": 0.002}
    progress.started("a")
    progress.started("b")
    now[0] = 10.0
    progress.result("a", cfg, {"epoch": 1, "val/delta_m": -50.0})
    assert lines[-1].startswith("[0/3 done, 2 running | 1/12 epochs | 0:10 elapsed, ETA 1:50] a epoch 1/4 p=0.5 lr=0.002")
    progress.result("b", cfg, {"epoch": 1, "val/delta_m": -90.0})
    progress.ended_ok("b", {"epoch": 1})  # ASHA stops b: 3 of its epochs are saved
    assert lines[-1] == "[1/3 done, 1 running | 2/9 epochs (ASHA saved 3) | 0:10 elapsed, ETA 0:35] b stopped early by ASHA at epoch 1"
    now[0] = 20.0
    progress.result("a", cfg, {"epoch": 2, "val/delta_m": -40.0})
    progress.result("a", cfg, {"epoch": 3, "val/delta_m": -60.0})  # worse than its epoch 2
    # "best" is each trial's value at its last epoch, as in the final table: -60, not -40.
    fields = re.search(r"val/delta_m=(\S+)\s+best\s+(\S+)\s+\((\w+)\)$", lines[-1])
    assert fields and fields.groups() == ("-60", "-60", "a"), lines[-1]
    progress.result("a", cfg, {"epoch": 4, "val/delta_m": -55.0})
    progress.ended_ok("a", {"epoch": 4})
    assert lines[-1].startswith("[2/3 done, 0 running | 5/9 epochs (ASHA saved 3)") and lines[-1].endswith("a completed (4 epochs)")
    progress.errored("c")  # never reported: its whole budget is not spent
    assert lines[-1].startswith("[3/3 done, 0 running | 5/5 epochs (ASHA saved 3, 4 not run: errored)"), lines[-1]

    quiet = console.Progress(spaces.load_space(str(space)), quiet=True, out=lines.append)
    n = len(lines)
    quiet.result("a", cfg, {"epoch": 1, "val/delta_m": -50.0})
    quiet.ended_ok("a", {"epoch": 1})
    assert len(lines) == n  # --quiet: only errors
    quiet.errored("b")
    assert len(lines) == n + 1 and "ERRORED" in lines[-1]


def test_dry_run_weighs_a_method_axis_by_each_method_measured_step_cost(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        textwrap.dedent(SPACE)
        .replace("  method: gemtl\n", "  method: {grid: [ew, gemtl, imtl_g]}\n")
        .replace("type: optuna, sampler: tpe", "type: random")
        .replace("  p: {uniform", "  p: {when: {method: gemtl}, uniform")
    )
    space = spaces.load_space(str(space_file))
    costs = console.method_step_costs(space, steps=2)
    assert costs is not None and sorted(costs) == ["ew", "gemtl", "imtl_g"]
    assert costs["ew"] == 1.0 and all(c > 0 for c in costs.values())  # relative to the timed (first) configuration's method
    lines = console.method_cost_lines(space, epoch_s=1.0, setup_s=0.0, parallel=1)
    n = console.total_trials(space)
    assert lines[0].startswith(f"Methods: 3, {n // 3} trial(s) each ({n} trials = 3 methods x {n // 3}); step time relative to 'ew'")
    assert "With these costs the search takes about " in lines[1]
    # Without a method axis (a constant method) there is nothing to weigh.
    assert console.method_step_costs(spaces.load_space(str(_argv(tmp_path)[1]))) is None


def test_progress_under_fifo_never_credits_asha_and_an_errored_trial_says_why(tmp_path):
    """Issue 26 (smaller items): "ASHA saved N" was printed under ``scheduler: fifo`` when trials errored,
    and an errored trial's line gave no reason."""
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE).replace("{type: asha, grace_period: 1, reduction_factor: 2}", "{type: fifo}"))
    lines: list[str] = []
    progress = console.Progress(spaces.load_space(str(space)), out=lines.append, clock=lambda: 0.0)
    progress.started("a")
    progress.result("a", {"p": 0.5, "lr": 0.002}, {"epoch": 1, "val/delta_m": -50.0})
    progress.errored("a", "NonFiniteLossError: method 'x:NaN' returned non-finite weights at epoch 2, step 5")
    assert "ASHA" not in lines[-1] and "(3 not run: errored)" in lines[-1], lines[-1]
    assert lines[-1].endswith("a ERRORED: NonFiniteLossError: method 'x:NaN' returned non-finite weights at epoch 2, step 5")
    progress.ended_ok("b", {"epoch": 2})
    assert lines[-1].endswith("b stopped early at epoch 2") and "ASHA" not in lines[-1], lines[-1]


def test_a_trial_error_file_gives_one_plain_line(tmp_path):
    class Trial:  # what the progress callback reads of Ray's Trial: the error file Ray wrote
        error_file = str(tmp_path / "error.txt")

    Path(Trial.error_file).write_text(
        "Failure # 1 (occurred at 2026-12-06_13:00:00)\n\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\n"
        '  File "x.py", line 3, in f\nmtlsearch.trainer.NonFiniteLossError: the first\n'
        "Failure # 2 (occurred at 2026-12-06_13:00:01)\n\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=2)\n"
        "mtlsearch.trainer.NonFiniteLossError: \x1b[31mmethod 'm' returned non-finite weights\x1b[0m (not retrained: same)\n"
    )
    assert console.trial_error(Trial) == "NonFiniteLossError: method 'm' returned non-finite weights"
    assert faults.strip_ansi("\x1b[1;31mred\x1b[0m text") == "red text"
