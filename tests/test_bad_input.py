"""Bad input gets one clear line on stderr, exit code 2, and no trial starts.

Every case runs the real command line (``mtlsearch.launch.main``) from an empty working directory
with explicit ``--storage`` and ``--tracking-uri`` below it, and checks: exit code 2, exactly one
line ``error: [FILE: ]FIELD: message`` naming the field and what is allowed, and that neither Ray
Tune's storage nor an MLflow store was created (nothing started).  The cases that need a cluster to
be refused (more GPUs or CPUs per trial than any node has) run against the suite's local Ray.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mtlsearch.balancing import METHODS, GradBalancing, GradResult
from mtlsearch.launch import main

GOOD = """
name: tiny
benchmark: multidigits
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
params:
  method: gemtl
  p: {uniform: [-1.0, 2.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


class NonLinearDirection(GradBalancing):
    """Test data: a gradient method whose update is not a weighting of the task gradients."""

    name = "test_nonlinear"
    linear = False

    def forward(self, grads, losses):
        return GradResult(direction=grads.sum(0) / grads.norm())


def _register_nonlinear(monkeypatch):
    monkeypatch.setitem(METHODS, NonLinearDirection.name, NonLinearDirection)


def _malformed_nyuv2(tmp_path: Path) -> str:
    root = tmp_path / "nyu"
    (root / "train" / "image").mkdir(parents=True)  # no val/, no label/depth/normal
    return str(root)


def space(text):
    return ("space", text)


# (label, space text or None for the bundled gemtl_p, extra CLI args, field, words that must appear, needs Ray)
CASES = [
    ("unknown space name", None, ["--space", "no_such_space"], "--space", ["available:", "gemtl_p"], False),
    ("yaml syntax error", "name: x\nbenchmark: synthetic\nparams:\n  p: {uniform: [1, 2]\n  lr: 1\n", [], None,
     ["YAML syntax error at line 5"], False),
    ("unknown top-level key", GOOD + "extra: 1\n", [], "extra", ["allowed:", "budget"], False),
    ("unknown section key", GOOD.replace("num_samples: 2", "num_sample: 2"), [], "budget.num_sample",
     ["allowed:", "num_samples"], False),
    ("unknown distribution", GOOD.replace("uniform: [-1.0, 2.0]", "gaussian: [0, 1]"), [], "params.p",
     ["unknown distribution", "'loguniform'"], False),
    ("loguniform non-positive", GOOD.replace("[1.0e-3, 1.0e-2]", "[0.0, 1.0e-2]"), [], "params.lr", ["0 < low"], False),
    ("low >= high", GOOD.replace("[-1.0, 2.0]", "[2.0, -1.0]"), [], "params.p", ["low < high"], False),
    ("wrong type (budget)", GOOD.replace("num_samples: 2", "num_samples: many"), [], "budget.num_samples",
     ["integer", "'many'"], False),
    ("wrong type (trial key)", GOOD + "  batch_size: big\n", [], "batch_size", ["integer", "'big'"], False),
    ("bad mode", GOOD.replace("mode: max", "mode: best"), [], "objective.mode", ["'min' or 'max'"], False),
    ("unknown method", GOOD.replace("method: gemtl", "method: gemtll"), [], "method", ["choose one of", "'gemtl'"], False),
    ("unknown optimizer", GOOD + "  optimizer: adamw\n", [], "optimizer", ["choose one of", "'adam'", "'adam_adatask'"], False),
    ("key not of the method", GOOD + "  dwa_temperatur: 2.0\n", [], "dwa_temperatur", ["allowed keys", "optimizer, p, protocol, seed"], False),
    ("method x optimizer undefined", GOOD.replace("method: gemtl\n  p: {uniform: [-1.0, 2.0]}\n",
                                                  "method: test_nonlinear\n  optimizer: adam_adatask\n"),
     [], "optimizer", ["cannot feed 'adam_adatask'", "use a base optimizer"], False),
    ("GeMTL p is NaN", GOOD.replace("p: {uniform: [-1.0, 2.0]}", "p: .nan"), [], "params.p", ["finite"], False),
    ("grid with optuna", GOOD.replace("uniform: [-1.0, 2.0]", "grid: [0.5, 1.0]"), [], "params.p",
     ["searcher type 'random'"], False),
    ("unknown scheduler", GOOD.replace("type: asha", "type: pbt"), [], "scheduler.type", ["'asha', 'fifo'"], False),
    ("unknown benchmark flag", GOOD, ["--benchmark", "nyu"], "benchmark", ["choose one of", "'nyuv2'"], False),
    ("zero samples", GOOD, ["--num-samples", "0"], "--num-samples", ["> 0"], False),
    ("GPU fraction above one", GOOD, ["--gpus-per-trial", "1.5"], "--gpus-per-trial", ["fraction", "whole number"], False),
    ("data folder missing", GOOD.replace("val/delta_m", "val/segmentation/miou"),
     ["--benchmark", "nyuv2", "--data-root", "/no/such/nyuv2"], "data_root", ["not a directory", "expected {train,val}"], False),
    ("data folder malformed", GOOD.replace("val/delta_m", "val/segmentation/miou"),
     ["--benchmark", "nyuv2", "--data-root", _malformed_nyuv2], "data_root", ["nyuv2", "expected {train,val}"], False),
    ("dashboard URL as --address", GOOD, ["--address", "http://127.0.0.1:8265"], "--address",
     ["job-submission", "ray job submit"], False),
    ("more GPUs per trial than any node", GOOD, ["--gpus-per-trial", "1"], "--gpus-per-trial",
     ["no node of the cluster has more than 0", "fractions"], True),
    ("more CPUs per trial than any node", GOOD, ["--cpus-per-trial", "64"], "--cpus-per-trial",
     ["no node of the cluster has more than 2"], True),
]


@pytest.mark.parametrize("label, text, extra, field, words, needs_ray", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_starts_nothing(
    label, text, extra, field, words, needs_ray, tmp_path, monkeypatch, capsys, request
):
    if needs_ray:
        request.getfixturevalue("ray_session")
        capsys.readouterr()  # Ray's own start-up lines are not ours
    if text is not None and "test_nonlinear" in text:
        _register_nonlinear(monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = []
    path = None
    if text is not None:
        path = tmp_path / "space.yaml"
        path.write_text(textwrap.dedent(text))
        argv += ["--space", str(path)]
    argv += [a(tmp_path) if callable(a) else a for a in extra]
    argv += ["--storage", str(work / "ray"), "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]

    assert main(argv) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("error: "), line
    if field is not None:
        assert f"{field}: " in line, line
    for word in words:
        assert word in line, line
    if path is not None and (field is None or not field.startswith("--")):
        assert str(path) in line, line  # an error in the file names the file
    assert list(work.iterdir()) == [], "bad input must not create storage or an MLflow store"


def test_local_storage_inside_a_ray_job_is_refused(tmp_path, monkeypatch, capsys):
    """Inside ``ray job submit`` the working directory is Ray's temporary copy: defaults would vanish."""
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(GOOD))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["--space", str(path)]) == 2
    assert main(["--space", str(path), "--storage", str(tmp_path / "ray")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "--storage: inside a Ray job" in err[0] and "s3://" in err[0]
    assert "--tracking-uri: inside a Ray job" in err[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_cli_as_a_process_exits_2_before_starting_ray(tmp_path):
    """The real process: exit status 2, no traceback, nothing written in its working directory."""
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(GOOD.replace("loguniform: [1.0e-3, 1.0e-2]", "loguniform: [-1, 1]")))
    proc = subprocess.run([sys.executable, "-m", "mtlsearch.launch", "--space", str(path)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 2, proc.stderr
    assert "params.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_nonlinear_test_method_is_really_nonlinear():
    """The test data above must be what the combination check is about (not a vacuous case)."""
    method = NonLinearDirection(num_tasks=2)
    out = method(torch.eye(2), torch.ones(2))
    assert out.weights is None and out.direction is not None and not NonLinearDirection.linear
