"""The bad-input table's shared parts: the small valid space it mutates, an earlier MLflow store that a
refused command must leave as it was, and the check every row runs (tests/unit/test_bad_input.py; the
rows refused only against a cluster's resources: tests/integration/test_bad_input_cluster.py)."""

import shutil
import textwrap
from pathlib import Path

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


def make_prior_store(folder: Path) -> Path:
    """An MLflow store in ``folder`` holding one finished run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("earlier", artifact_location=(folder / "mlruns").as_uri())
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "val/delta_m", 1.5, step=1)
    client.set_terminated(run.info.run_id)
    return folder / "mlflow.db"


def check_refused(label, text, extra, field, words, tmp_path, monkeypatch, capsys, prior_store) -> None:
    """Run the command line from an empty folder and check the refusal: exit code 2, one line naming
    ``field`` and holding ``words``, nothing created, the earlier store unchanged."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = []
    path = None
    (tmp_path / "prior").mkdir()
    prior = tmp_path / "prior" / "mlflow.db"
    shutil.copy(prior_store, prior)
    before = prior.read_bytes()
    if text is not None:
        path = tmp_path / "space.yaml"
        if isinstance(text, bytes):
            path.write_bytes(textwrap.dedent(text.decode("latin-1")).encode("latin-1"))
        else:
            path.write_text(textwrap.dedent(text))
        argv += ["--space", str(path)]
    argv += [a(tmp_path) if callable(a) else a for a in extra]
    if "--storage" not in argv:
        argv += ["--storage", str(work / "ray")]
    if "--tracking-uri" not in argv:
        # Half the rows write to a fresh store below work/ (it must not appear), half to an earlier store.
        argv += ["--tracking-uri", f"sqlite:///{prior}" if len(label) % 2 else f"sqlite:///{work / 'mlflow.db'}"]

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
    assert prior.read_bytes() == before, "an earlier MLflow store must be left as it was"
    assert sorted(p.name for p in prior.parent.iterdir()) == ["mlflow.db"]
