"""``mtlsearch ui --optuna``: optuna-dashboard on a real search's Optuna study, read through its JSON API.

A small real search (local Ray, Optuna + ASHA, SQLite MLflow store, the study beside it); then the
command as a user runs it, in a subprocess: the URL it prints, the study's trials in the dashboard's
API with the MLflow run id and Ray trial id of each (the same as MLflow's), and no process left after
it is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mtlsearch import ui
from mtlsearch.launch import main
from mtlsearch.tracking import TAG_KIND, TAG_STATUS, TAG_TRIAL

ROOT = Path(__file__).resolve().parents[2]

SPACE = """
name: dash_small
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 3, max_epochs: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: random, seed: 5}
resources: {cpus_per_trial: 1}
params:
  method: {choice: [gemtl, ew]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  batch_size: 128
"""


def _children(pid: int) -> set[int]:
    """The process ids whose parent is ``pid`` (Linux ``/proc``)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_ui_optuna_serves_the_study_with_each_trials_mlflow_run(tmp_path, ray_session, capfd):
    space = tmp_path / "dash.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--quiet"])
    assert code == 0, capfd.readouterr()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dash_small")
    runs = client.search_runs([exp.experiment_id])
    trials = {r.data.tags[TAG_TRIAL]: r.info.run_id for r in runs if r.data.tags.get(TAG_KIND) == "trial"}
    assert len(trials) == 3

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsearch", "ui", "--optuna", "--no-browser", "--tracking-uri", uri, "--experiment", "dash_small"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    dashboard: set[int] = set()
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # stdout holds the URL alone, once the dashboard answers
        assert url.startswith("http://127.0.0.1:") and "/dashboard/studies/" in url, (url, proc.stderr and proc.stderr.read())
        dashboard = _children(proc.pid)
        assert len(dashboard) == 1
        base, _, study_id = url.partition("/dashboard/studies/")
        detail = _get(f"{base}/api/studies/{int(study_id)}")
        parent = next(r for r in runs if r.data.tags.get(TAG_KIND) == "search")
        assert detail["name"] == parent.data.params["optuna_study"] == parent.info.run_name
        found = {t["number"]: {a["key"]: a["value"] for a in t["user_attrs"]} for t in detail["trials"]}
        assert len(found) == 3
        # each trial of the study names its MLflow run and Ray trial: the same pairs as in MLflow
        assert {attrs["ray_trial_id"]: attrs["mlflow_run_id"] for attrs in found.values()} == trials
        statuses = {r.data.tags[TAG_TRIAL]: r.data.tags[TAG_STATUS] for r in runs if r.data.tags.get(TAG_KIND) == "trial"}
        assert {attrs["ray_trial_id"]: attrs["status"] for attrs in found.values()} == statuses
        assert detail["objective_names"] == ["val/delta_m"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr and proc.stderr.read()
    deadline = time.time() + 30
    while any(_alive(pid) for pid in dashboard) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in dashboard)  # the dashboard is stopped with the command
    with pytest.raises(OSError):
        _get(f"{base}/api/studies")


def test_ui_optuna_without_the_extra_names_it(capsys, monkeypatch):
    """One line naming the extra to install when optuna-dashboard is not importable (exit 2)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna_dashboard" else real(name, *a))
    code = ui.main(["--optuna", "--no-browser"])
    err = capsys.readouterr().err
    assert code == ui.EXIT_BAD_INPUT
    assert err.strip().splitlines() == [
        "error: --optuna: optuna-dashboard is not installed; install the extra: pip install 'mtlsearch[dashboard]'"
    ]


def test_ui_optuna_bad_studies_are_one_line(tmp_path, monkeypatch):
    """A search without a study, a stored URL that hides its password, a study file that is gone."""
    from mtlsearch.errors import ConfigError

    monkeypatch.delenv("MTLSEARCH_OPTUNA_STORAGE", raising=False)
    with pytest.raises(ConfigError, match=r"--optuna: the latest search of experiment 'x' kept no Optuna study .* `mtlsearch ui`"):
        ui.study_of({"objective_metric": "val/delta_m"}, None, "x")
    hidden = {"optuna_study": "s-1", "optuna_storage": "postgresql://me:***@db:5432/optuna"}
    with pytest.raises(ConfigError, match=r"--optuna-storage: .* needs its password: pass --optuna-storage"):
        ui.study_of(hidden, None, "x")
    gone = f"sqlite:///{tmp_path / 'gone-optuna.db'}"
    assert ui.study_of({"optuna_study": "s-1", "optuna_storage": gone}, None, "x") == (gone, "s-1")
    with pytest.raises(ConfigError, match=r"--optuna-storage: the study's database .*gone-optuna.db does not exist"):
        ui.study_id(gone, "s-1")
    gone = str(tmp_path / "gone-optuna.journal")  # the default since the journal: a path
    assert ui.study_of({"optuna_study": "s-1", "optuna_storage": gone}, None, "x") == (gone, "s-1")
    with pytest.raises(ConfigError, match=r"--optuna-storage: the study's journal .*gone-optuna.journal does not exist"):
        ui.study_id(gone, "s-1")


def test_study_id_reads_a_journal_and_a_sqlite_study(tmp_path):
    """The dashboard's study id from either kind of file: the journal (the default) and the SQLite file of a
    search started before it; a study that is not there is named with those that are."""
    import optuna

    from mtlsearch import studies
    from mtlsearch.errors import ConfigError

    for url in (str(tmp_path / "a.journal"), f"sqlite:///{tmp_path / 'a.db'}"):
        storage = studies.open_storage(url)
        optuna.create_study(storage=storage, study_name="first")
        optuna.create_study(storage=storage, study_name="second")
        expected = storage.get_study_id_from_name("second")
        studies.close(storage)
        assert ui.study_id(url, "second") == expected
        with pytest.raises(ConfigError, match=r"--optuna-storage: no study 'third' in .*; its studies: 'first', 'second'"):
            ui.study_id(url, "third")
