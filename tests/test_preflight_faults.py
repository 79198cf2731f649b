"""Issue 26, rows 1-11 and 15: faults and mistakes that must end before Ray starts, in one line, exit 2,
creating nothing and leaving earlier runs intact (or, where the table says so, be accepted).

Each test runs the real command line (``mtlsearch.launch.main``, ``mtlsearch.report``, ``mtlsearch ui``)
on real files: a real MLflow SQLite store with an earlier run in it, a real Optuna study file.  Most rows
are refused before Ray starts, so these tests start no Ray (they are in the fast tier)."""

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
