"""Bad input gets one clear line on stderr, exit code 2, and no trial starts.

Every case runs the real command line (``mtlsearch.launch.main``) from an empty working directory
with explicit ``--storage`` and ``--tracking-uri`` below it, and checks: exit code 2, exactly one
line ``error: [FILE: ]FIELD: message`` naming the field and what is allowed, and that neither Ray
Tune's storage nor an MLflow store was created (nothing started).  The cases that need a cluster to
be refused (more GPUs or CPUs per trial than any node has) and the command run as a process are in
tests/integration/test_bad_input_cluster.py.
"""

import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from mtlsearch.balancing import METHODS, GradBalancing, GradResult
from mtlsearch.launch import main

from helpers.bad_input import GOOD, check_refused, make_prior_store


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


def _a_folder(tmp_path: Path) -> str:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    return str(folder)


def _read_only_db(tmp_path: Path) -> str:
    """An existing MLflow database the user cannot write (root writes through file modes: there a
    kernel file that refuses writes stands in for it)."""
    if os.geteuid() == 0:
        return "sqlite:////proc/version"
    db = tmp_path / "prior" / "mlflow.db"
    db.chmod(0o444)
    return f"sqlite:///{db}"


MULTI = GOOD.replace(
    "objective: {metric: val/delta_m, mode: max}", "objective: {metrics: [val/left/accuracy, val/number/mae], modes: [max, min]}"
)


# (label, space text or None for the bundled gemtl_p, extra CLI args, field, words that must appear, needs Ray)
CASES = [
    ("unknown space name", None, ["--space", "no_such_space"], "--space", ["available:", "gemtl_p"], False),
    (
        "yaml syntax error",
        "name: x\nbenchmark: synthetic\nparams:\n  p: {uniform: [1, 2]\n  lr: 1\n",
        [],
        None,
        ["YAML syntax error at line 5"],
        False,
    ),
    ("unknown top-level key", GOOD + "extra: 1\n", [], "extra", ["allowed:", "budget"], False),
    ("unknown section key", GOOD.replace("num_samples: 2", "num_sample: 2"), [], "budget.num_sample", ["allowed:", "num_samples"], False),
    (
        "unknown distribution",
        GOOD.replace("uniform: [-1.0, 2.0]", "gaussian: [0, 1]"),
        [],
        "params.p",
        ["unknown distribution", "'loguniform'"],
        False,
    ),
    ("loguniform non-positive", GOOD.replace("[1.0e-3, 1.0e-2]", "[0.0, 1.0e-2]"), [], "params.lr", ["0 < low"], False),
    ("low >= high", GOOD.replace("[-1.0, 2.0]", "[2.0, -1.0]"), [], "params.p", ["low < high"], False),
    ("wrong type (budget)", GOOD.replace("num_samples: 2", "num_samples: many"), [], "budget.num_samples", ["integer", "'many'"], False),
    ("seeds per trial out of range", GOOD, ["--set", "budget.seeds=17"], "--set budget.seeds=17", ["integer from 1 to 16", "17"], False),
    ("wrong type (trial key)", GOOD + "  batch_size: big\n", [], "batch_size", ["integer", "'big'"], False),
    ("bad mode", GOOD.replace("mode: max", "mode: best"), [], "objective.mode", ["'min' or 'max'"], False),
    ("unknown method", GOOD.replace("method: gemtl", "method: gemtll"), [], "method", ["choose one of", "'gemtl'"], False),
    ("unknown optimizer", GOOD + "  optimizer: adamw\n", [], "optimizer", ["choose one of", "'adam'", "'adam_adatask'"], False),
    (
        "key not of the method",
        GOOD + "  dwa_temperatur: 2.0\n",
        [],
        "dwa_temperatur",
        ["allowed keys", "optimizer, p, protocol, seed"],
        False,
    ),
    (
        "method x optimizer undefined",
        GOOD.replace("method: gemtl\n  p: {uniform: [-1.0, 2.0]}\n", "method: test_nonlinear\n  optimizer: adam_adatask\n"),
        [],
        "optimizer",
        ["cannot feed 'adam_adatask'", "use a base optimizer"],
        False,
    ),
    ("GeMTL p is NaN", GOOD.replace("p: {uniform: [-1.0, 2.0]}", "p: .nan"), [], "params.p", ["finite"], False),
    (
        "conditional grid",
        GOOD.replace("p: {uniform: [-1.0, 2.0]}", "p: {grid: [0.5, 1.0], when: {method: gemtl}}"),
        [],
        "params.p",
        ["cannot depend", "use 'choice'"],
        False,
    ),
    ("unknown scheduler", GOOD.replace("type: asha", "type: pbt"), [], "scheduler.type", ["'asha', 'fifo'"], False),
    ("unknown benchmark flag", GOOD, ["--benchmark", "nyu"], "benchmark", ["choose one of", "'nyuv2'"], False),
    ("zero samples", GOOD, ["--num-samples", "0"], "--num-samples", ["> 0"], False),
    ("GPU fraction above one", GOOD, ["--gpus-per-trial", "1.5"], "--gpus-per-trial", ["fraction", "whole number"], False),
    (
        "data folder missing",
        GOOD.replace("val/delta_m", "val/segmentation/miou"),
        ["--benchmark", "nyuv2", "--data-root", "/no/such/nyuv2"],
        "data_root",
        ["not a directory", "expected {train,val}"],
        False,
    ),
    (
        "data folder malformed",
        GOOD.replace("val/delta_m", "val/segmentation/miou"),
        ["--benchmark", "nyuv2", "--data-root", _malformed_nyuv2],
        "data_root",
        ["nyuv2", "expected {train,val}"],
        False,
    ),
    ("dashboard URL as --address", GOOD, ["--address", "http://127.0.0.1:8265"], "--address", ["job-submission", "ray job submit"], False),
    # issue 17: refused before Ray or MLflow starts (mtlsearch/preflight.py)
    (
        "task the benchmark lacks",
        GOOD + "  tasks: [left, nope]\n",
        [],
        "params.tasks",
        ["no task 'nope'", "its tasks: left, right, number"],
        False,
    ),
    ("device cuda without a GPU share", GOOD + "  device: cuda\n", [], "device", ["gpus_per_trial is 0", "--gpus-per-trial"], False),
    pytest.param(
        "device cuda on a machine without GPU",
        GOOD + "  device: cuda\n",
        ["--gpus-per-trial", "1"],
        "device",
        ["no usable CUDA GPU"],
        False,
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        id="device cuda on a machine without GPU",
    ),
    (
        "objective no trial reports",
        GOOD.replace("val/delta_m", "val/left/acc"),
        [],
        "objective.metric",
        ["no trial reports 'val/left/acc'", "val/left/accuracy"],
        False,
    ),
    (
        "scheduler metric no trial reports",
        MULTI.replace("type: asha,", "type: asha, metric: val/delta, mode: max,"),
        [],
        "scheduler.metric",
        ["no trial reports 'val/delta'", "val/delta_m"],
        False,
    ),
    ("negative seed", GOOD, ["--seed", "-1"], "--seed", ["[0, 4294967295]", "-1"], False),
    ("zero CPUs per trial", GOOD, ["--cpus-per-trial", "0"], "--cpus-per-trial", ["> 0"], False),
    ("zero CPUs per trial in the space", GOOD + "resources: {cpus_per_trial: 0}\n", [], "resources.cpus_per_trial", ["> 0"], False),
    ("unknown tracking scheme", GOOD, ["--tracking-uri", "foo://x"], "--tracking-uri", ["unknown scheme 'foo://'", "sqlite://"], False),
    (
        "tracking URI a plain folder",
        GOOD,
        ["--tracking-uri", _a_folder],
        "--tracking-uri",
        ["is a path, not a tracking URI", "sqlite:///", "a_folder/mlflow.db"],
        False,
    ),
    (
        "tracking sqlite in a read-only folder",
        GOOD,
        ["--tracking-uri", "sqlite:////sys/mlflow.db"],
        "--tracking-uri",
        ["/sys", "not writable"],
        False,
    ),
    (
        "tracking sqlite file read-only",
        GOOD,
        ["--tracking-uri", _read_only_db],
        "--tracking-uri",
        ["cannot be written", "earlier runs are untouched"],
        False,
    ),
    ("storage read-only", GOOD, ["--storage", "/sys/mtlsearch_ray"], "--storage", ["cannot be written", "not a writable folder"], False),
    (
        "storage unreachable bucket",
        GOOD,
        ["--storage", "s3://a-bucket-that-cannot-be-reached"],
        "--storage",
        ["cannot reach 's3://a-bucket-that-cannot-be-reached'"],
        False,
    ),
    ("name escapes the storage", GOOD, ["--name", "../escaped"], "--name", ["one folder name", "'../escaped'"], False),
    ("duplicate key", GOOD + "  p: {uniform: [0.0, 1.0]}\n", [], "params.p", ["duplicate key 'p'", "lines 10 and 12"], False),
    (
        "when value never taken",
        GOOD.replace("p: {uniform: [-1.0, 2.0]}", "p: {uniform: [-1.0, 2.0], when: {method: gemtll}}"),
        [],
        "params.p.when.method",
        ["{method: 'gemtll'} never holds", "takes 'gemtl'"],
        False,
    ),
    (
        "space file not UTF-8",
        GOOD.replace("name: tiny", "name: tiny\ndescription: caf\xe9").encode("latin-1"),
        [],
        None,
        ["not UTF-8 text", "line 3", "save the file as UTF-8"],
        False,
    ),
    (
        "1e-4 read as text",
        GOOD.replace("[1.0e-3, 1.0e-2]", "[1e-4, 1.0e-2]"),
        [],
        "params.lr.loguniform",
        ["YAML reads 1e-4 as text", "write 1.0e-4"],
        False,
    ),
    (
        "bundled space file name from another folder",
        None,
        ["--space", "gemtl_p.yaml"],
        "--space",
        ["no such file 'gemtl_p.yaml'", "--space gemtl_p"],
        False,
    ),
    ("space is a directory", None, ["--space", _a_folder], "--space", ["is a directory", "gemtl_p"], False),
]


@pytest.fixture(scope="module")
def prior_store(tmp_path_factory):
    """An MLflow store holding one finished run: a refused command must leave it as it was."""
    return make_prior_store(tmp_path_factory.mktemp("prior"))


@pytest.mark.parametrize("label, text, extra, field, words, needs_ray", CASES, ids=[c[0] if isinstance(c, tuple) else None for c in CASES])
def test_bad_input_exits_2_with_one_line_and_starts_nothing(
    label, text, extra, field, words, needs_ray, tmp_path, monkeypatch, capsys, prior_store
):
    # A case refused only against a cluster's resources goes in tests/integration/test_bad_input_cluster.py.
    assert not needs_ray, f"{label}: needs a cluster, which the unit tier does not start"
    if isinstance(text, str) and "test_nonlinear" in text:
        _register_nonlinear(monkeypatch)
    check_refused(label, text, extra, field, words, tmp_path, monkeypatch, capsys, prior_store)


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


def test_nonlinear_test_method_is_really_nonlinear():
    """The test data above must be what the combination check is about (not a vacuous case)."""
    method = NonLinearDirection(num_tasks=2)
    out = method(torch.eye(2), torch.ones(2))
    assert out.weights is None and out.direction is not None and not NonLinearDirection.linear


def test_resume_after_the_space_file_changed_is_refused_naming_the_change(tmp_path, monkeypatch, capsys):
    """``--resume`` continues the search Ray saved: an edited space would be silently ignored.  The saved
    search is described by the file the launcher writes beside Ray's results (tracking.search_info)."""
    from mtlsearch import launch, tracking

    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(GOOD))
    storage = tmp_path / "ray"
    argv = ["--space", str(path), "--storage", str(storage), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--name", "s"]
    args = launch.build_parser().parse_args(argv)
    info = tracking.search_info(launch.prepare_space(args), {"benchmark": None, "num_samples": None, "max_epochs": None, "seed": None})
    tracking.write_search_info(storage / "s", info)
    saved = sorted(p.name for p in (storage / "s").iterdir())
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    path.write_text(textwrap.dedent(GOOD.replace("num_samples: 2", "num_samples: 4").replace("1.0e-2]", "3.0e-2]")))
    assert main([*argv, "--resume"]) == 2
    path.write_text(textwrap.dedent(GOOD))
    assert main([*argv, "--resume", "--max-epochs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("error: --resume: the search 's' was started with another space"), err[0]
    assert "budget.num_samples: 2 -> 4" in err[0] and "params.lr.loguniform: [0.001, 0.01] -> [0.001, 0.03]" in err[0], err[0]
    assert "max_epochs: 2 -> 3" in err[1] and "override.max_epochs: (unset) -> 3" in err[1], err[1]
    assert sorted(p.name for p in (storage / "s").iterdir()) == saved
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_store_locked_by_another_writer(prior_store, tmp_path, monkeypatch, capsys):
    """Another writer (a second search, a sync) holds the SQLite store's write lock: the pre-flight waits
    for it (MTLSEARCH_SQLITE_LOCK_WAIT_S) and goes on once it is released; held longer, one line and
    exit 2 before Ray starts, and the earlier runs are intact."""
    import sqlite3
    import threading

    from mtlsearch import store_checks

    db = tmp_path / "mlflow.db"
    shutil.copy(prior_store, db)
    before = db.read_bytes()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store_checks, "SQLITE_LOCK_WAIT_S", 0.5)
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(GOOD))
    monkeypatch.chdir(tmp_path)
    assert main(["--space", str(path), "--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --tracking-uri: the SQLite store"), err
    assert "locked by another writer for more than 0.5 s" in err[0], err[0]
    assert not (tmp_path / "ray").exists()

    monkeypatch.setattr(store_checks, "SQLITE_LOCK_WAIT_S", 30.0)
    threading.Timer(1.0, lambda: holder.execute("ROLLBACK")).start()
    store_checks.check_tracking_uri(f"sqlite:///{db}")  # waits for the lock, then passes
    holder.close()
    assert db.read_bytes() == before


def test_resume_of_a_search_whose_saved_state_is_corrupted(tmp_path, monkeypatch, capsys):
    """A truncated experiment state (a full disk, a copy cut short): one line before Ray, nothing changed."""
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(GOOD))
    folder = tmp_path / "ray" / "s"
    folder.mkdir(parents=True)
    state = folder / "experiment_state-2026-01-01_00-00-00.json"
    state.write_text('{"trial_data": [["{\\"trial_id\\": \\"a\\", \\"status\\": \\"RUN')
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = [
        "--space",
        str(path),
        "--storage",
        str(tmp_path / "ray"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--name",
        "s",
        "--resume",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume: the saved state of search 's' is unreadable"), err
    assert state.name in err[0] and "untouched" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == [state.name] and not (tmp_path / "mlflow.db").exists()
