"""Issue 26, rows 1-11 and 15: faults and mistakes that must end before Ray starts, in one line, exit 2,
creating nothing and leaving earlier runs intact (or, where the table says so, be accepted).

Each test runs the real command line (``mtlsearch.launch.main``, ``mtlsearch.report``, ``mtlsearch ui``)
on real files: a real MLflow SQLite store with an earlier run in it, a real Optuna study file.  Most rows
are refused before Ray starts, so these tests start no Ray (they are in the fast tier)."""

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtlsearch.launch import main

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
name: tiny
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
params:
  method: gemtl
  p: {uniform: [-1.0, 2.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


@pytest.fixture(scope="module")
def prior_store(tmp_path_factory):
    """An MLflow store holding one finished run: a refused command must leave it as it was."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("prior")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("earlier", artifact_location=(folder / "mlruns").as_uri())
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "val/delta_m", 1.5, step=1)
    client.set_terminated(run.info.run_id)
    return folder / "mlflow.db"


class Work:
    """An empty working folder with a space file, a storage and a store below it, and a helper that
    runs the launcher there and returns (exit code, stderr lines)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, text: str = GOOD):
        self.root = tmp_path / "work"
        self.root.mkdir()
        self.space = tmp_path / "space.yaml"
        self.space.write_text(textwrap.dedent(text))
        self.storage = self.root / "ray"
        self.uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.capsys = capsys
        monkeypatch.chdir(self.root)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def launch(self, *extra: str, uri: str | None = None) -> tuple[int, list[str]]:
        self.capsys.readouterr()
        argv = ["--space", str(self.space), "--storage", str(self.storage), "--tracking-uri", uri or self.uri, *extra]
        code = main(argv)
        return code, self.capsys.readouterr().err.strip().splitlines()

    def created(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())


def one_line(err: list[str], *words: str) -> str:
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("error: "), line
    for word in words:
        assert word in line, line
    return line


# ------------------------------------------------------------------------------ row 2: --set KEY= (empty)
def test_set_with_an_empty_value_is_refused_naming_the_key(tmp_path, monkeypatch, capsys):
    """``--set params.lr=$LR`` with LR unset: the parameter must not silently leave the search."""
    w = Work(tmp_path, monkeypatch, capsys)
    code, err = w.launch("--set", "params.lr=")
    assert code == 2
    one_line(err, "--set: ", "'params.lr='", "no value after '='", "params.lr=VALUE")
    assert w.created() == []


# ------------------------------------------------------------------------------ row 3: the README's --set example
def test_set_accepts_numbers_written_as_on_a_command_line(tmp_path, monkeypatch, capsys):
    """``--set params.lr.loguniform=[1e-4,1e-2]`` (the README's example): 1e-4 is a number on a command
    line, although YAML 1.1 reads it as text in a file; a quoted '1e-4' stays text (and is refused)."""
    from mtlsearch import launch

    w = Work(tmp_path, monkeypatch, capsys)
    argv = ["--space", str(w.space), "--set", "params.lr.loguniform=[1e-4,1e-2]", "--set", "budget.num_samples=3"]
    space = launch.prepare_space(launch.build_parser().parse_args(argv))
    (lr,) = [p for p in space.params if p.name == "lr"]
    assert (lr.kind, lr.args) == ("loguniform", [1e-4, 1e-2]) and all(isinstance(x, float) for x in lr.args)
    assert space.num_samples == 3

    code, err = w.launch("--set", "params.lr.loguniform=['1e-4',1e-2]")
    assert code == 2
    one_line(err, "params.lr", "'1e-4'")
    assert w.created() == []


# ------------------------------------------------------------------------------ row 4: budget bounds
@pytest.mark.parametrize(
    "text, extra, field",
    [
        (GOOD.replace("num_samples: 2", "num_samples: 1000000000"), [], "budget.num_samples"),
        (GOOD, ["--num-samples", "1000000000"], "--num-samples"),
        (GOOD, ["--set", "budget.num_samples=1e9"], "budget.num_samples"),
        (GOOD.replace("max_epochs: 2", "max_epochs: 50000000"), [], "budget.max_epochs"),
        (GOOD, ["--max-epochs", "50000000"], "--max-epochs"),
        (GOOD + "final: {seeds: [" + ", ".join(map(str, range(1000))) + "]}\n", [], "final.seeds"),
    ],
    ids=["num_samples in the file", "--num-samples", "--set num_samples", "max_epochs in the file", "--max-epochs", "final seeds"],
)
def test_budget_above_its_limit_is_refused_naming_the_limit(text, extra, field, tmp_path, monkeypatch, capsys):
    from mtlsearch import spaces

    w = Work(tmp_path, monkeypatch, capsys, text)
    code, err = w.launch(*extra)
    if extra[:1] == ["--set"]:  # 1e9 is a float, and a number of samples is a whole number
        assert code == 2
        one_line(err, f"{field}: ", "integer")
        code, err = w.launch("--set", "budget.num_samples=1000000000")
    assert code == 2
    limit = {"final.seeds": spaces.MAX_FINAL_SEEDS, "budget.max_epochs": spaces.MAX_EPOCHS, "--max-epochs": spaces.MAX_EPOCHS}
    line = one_line(err, f"{field}: ", f"above the limit of {limit.get(field, spaces.MAX_NUM_SAMPLES)}", "docs/faults.md")
    if not field.startswith("--"):
        assert str(w.space) in line
    assert w.created() == []


# ------------------------------------------------------------------------------ row 9: the experiment deleted in the UI
def test_search_into_an_experiment_deleted_in_the_ui_is_refused_before_ray(prior_store, tmp_path, monkeypatch, capsys):
    """The experiment ``tiny`` deleted in the MLflow UI (lifecycle 'deleted', its name still taken): the same
    search again is refused before Ray, naming the experiment and both fixes; the store is unchanged."""
    from mlflow.tracking import MlflowClient

    w = Work(tmp_path, monkeypatch, capsys)
    db = w.root.parent / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(prior_store, db)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp_id = client.create_experiment("tiny", artifact_location=(db.parent / "mlruns").as_uri())
    client.delete_experiment(exp_id)
    before = db.read_bytes()

    code, err = w.launch(uri=f"sqlite:///{db}")
    assert code == 2
    one_line(
        err,
        "--experiment: ",
        f"'tiny' (id {exp_id})",
        "was deleted",
        f"mlflow experiments restore --experiment-id {exp_id}",
        "--experiment NAME",
    )
    assert w.created() == [] and db.read_bytes() == before
    code, err = w.launch("--experiment", "tiny", "--dry-run", uri=f"sqlite:///{db}")  # named on the command line: the same
    assert code == 2 and "--experiment: the MLflow experiment 'tiny'" in err[0]


# ------------------------------------------------------------------------------ row 10: --port held by a non-HTTP service
def _search_store(folder: Path) -> str:
    """A store holding one mtlsearch search (a parent run tagged as such), as ``mtlsearch ui`` expects."""
    from mlflow.tracking import MlflowClient

    from mtlsearch.tracking import TAG_KIND, TAG_SEARCH

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("tiny", artifact_location=(folder / "mlruns").as_uri())
    run = client.create_run(exp, tags={TAG_KIND: "search", TAG_SEARCH: str(folder / "ray" / "tiny-1")}, run_name="tiny-1")
    client.set_terminated(run.info.run_id)
    return uri


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH_9.6\r\n", b""], ids=["speaks another protocol", "closes at once"])
def test_ui_on_a_port_held_by_a_non_http_service_is_refused_naming_the_port(reply, tmp_path, capsys):
    """Another program (an SSH server, a database...) listens on ``--port``: exit 2 naming ``--port``
    before an MLflow server is started (it would fail to bind, exit 1 after "Starting the MLflow UI")."""
    import threading

    from mtlsearch import ui

    uri = _search_store(tmp_path)
    capsys.readouterr()  # MLflow's lines as it made the store
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        code = ui.main(["--tracking-uri", uri, "--port", str(port), "--no-browser"])
    finally:
        stop.set()
        thread.join()
        listener.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    one_line(err, "--port: ", f"{port}", "in use by another")


# ------------------------------------------------------------------------------ row 11: the report without a store
def test_report_in_a_folder_without_a_store_creates_nothing(tmp_path, monkeypatch):
    """``python -m mtlsearch.report --experiment X`` where there is no ``./mlflow.db``: exit 2, one line,
    and no empty store made (the real process, in an empty folder)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "mtlsearch.report", "--experiment", "X"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr.strip().splitlines(), "--tracking-uri: no MLflow store", str(tmp_path / "mlflow.db"))
    assert list(tmp_path.iterdir()) == []
