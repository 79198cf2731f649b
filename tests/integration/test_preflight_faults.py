"""Issue 26, rows 1-11 and 15: faults and mistakes that must end before Ray starts, in one line, exit 2,
creating nothing and leaving earlier runs intact (or, where the table says so, be accepted).

Each test runs the real command line (``mtlsearch.launch.main``, ``mtlsearch.report``, ``mtlsearch ui``)
on real files: a real MLflow SQLite store with an earlier run in it, a real Optuna study file.  Most rows
are refused before Ray starts, so these tests start no Ray (they are in the fast tier)."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from mtlsearch.launch import main

ROOT = Path(__file__).resolve().parents[2]

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
        one_line(err, "--set budget.num_samples=1e9: ", "integer")  # the --set that wrote it (issue 25)
        code, err = w.launch("--set", "budget.num_samples=1000000000")
        field = "--set budget.num_samples=1000000000"
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


# ------------------------------------------------------------------------------ row 1: mlflow.db read-only
@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` made unwritable in a way that binds root too: tests often run as root, and root writes
    through file modes (``chmod 444`` stops nobody), so as root the file is made immutable (``chattr +i``:
    the kernel refuses root's writes with EPERM, and SQLite then opens the file read-only, as it does for a
    user's read-only file).  As another user, ``chmod 444``.  Undone on exit (pytest must delete the file)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)  # ext4, xfs, btrfs, tmpfs (Linux >= 6.0)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


def test_read_only_mlflow_store_is_refused_before_ray(prior_store, tmp_path, monkeypatch, capsys):
    """``./mlflow.db`` read-only, with earlier runs in it (the default store, no --tracking-uri): exit 2 before
    Ray naming the file; nothing created; the earlier runs intact.  The pre-flight's write test used to be
    ``BEGIN IMMEDIATE``, which passes on a file SQLite opened read-only: the search failed after Ray started."""
    w = Work(tmp_path, monkeypatch, capsys)
    db = w.root / "mlflow.db"
    shutil.copy(prior_store, db)
    before = db.read_bytes()
    with read_only(db):
        code, err = w.launch(uri=f"sqlite:///{db}")
        capsys.readouterr()
        default_code = main(["--space", str(w.space), "--storage", str(w.storage)])  # the embedded default ./mlflow.db
        default_err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and default_code == 2
    one_line(err, "--tracking-uri: the SQLite store", str(db), "cannot be written", "read-only", "earlier runs are untouched", "chmod")
    assert default_err == err
    assert w.created() == ["mlflow.db"] and db.read_bytes() == before


def test_sqlite_write_probe_refuses_a_file_sqlite_opens_read_only(prior_store, tmp_path, monkeypatch):
    """The probe itself: a file that passes ``os.access`` but that SQLite can only open read-only (here
    ``os.access`` is told the file is writable, as it is for root on some mounts) is still refused: the
    probe writes for real (a table created and rolled back), and the file is left byte for byte."""
    from mtlsearch import store_checks

    db = tmp_path / "mlflow.db"
    shutil.copy(prior_store, db)
    before = db.read_bytes()
    assert store_checks._sqlite_problem(db) is None and db.read_bytes() == before  # a writable store passes unchanged
    real_access = os.access
    monkeypatch.setattr(store_checks.os, "access", lambda p, mode, **kw: True if Path(p) == db else real_access(p, mode, **kw))
    with read_only(db):
        problem = store_checks._sqlite_problem(db)
    assert problem is not None and problem[0] == "readonly" and "readonly database" in problem[1], problem
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_corrupt_mlflow_store_is_told_what_it_is_not_to_fix_permissions(tmp_path, monkeypatch, capsys):
    """A corrupt ``mlflow.db`` was told to "fix its permissions": it is named as not a database."""
    w = Work(tmp_path, monkeypatch, capsys)
    db = w.root / "mlflow.db"
    db.write_bytes(b"this is not a database, but a text file of 64 bytes or more ....\n" * 4)
    code, err = w.launch(uri=f"sqlite:///{db}")
    assert code == 2
    line = one_line(err, "--tracking-uri: ", str(db), "not a database", "move it aside")
    assert "permissions" not in line and w.created() == ["mlflow.db"]


# ------------------------------------------------------------------------------ rows 5, 6: the Optuna study file
def test_study_file_that_is_not_a_journal_is_refused_before_ray(prior_store, tmp_path, monkeypatch, capsys):
    """``mlflow-optuna.journal`` (beside ``mlflow.db``) is not an Optuna journal (text, a SQLite database, a
    folder): exit 2 before Ray naming the file, the reason and the fix; nothing changed."""
    w = Work(tmp_path, monkeypatch, capsys)
    db = w.root / "mlflow.db"
    shutil.copy(prior_store, db)
    study = w.root / "mlflow-optuna.journal"
    for content, why in (
        (b"not a journal " * 20, "it is not an Optuna journal"),
        (db.read_bytes(), f"it is a SQLite database, not a journal (name it sqlite:///{study})"),
        (None, "it is a directory"),
    ):
        if content is None:
            study.unlink()
            study.mkdir()
        else:
            study.write_bytes(content)
        before = db.read_bytes()
        code, err = w.launch(uri=f"sqlite:///{db}")
        assert code == 2
        one_line(err, "--tracking-uri: the Optuna study journal (kept for optuna-dashboard)", str(study), why, "move it aside")
        assert w.created() == ["mlflow-optuna.journal", "mlflow.db"] and db.read_bytes() == before


def test_study_file_locked_by_another_process_waits_then_one_line(tmp_path, monkeypatch, capsys):
    """Another process holds the write lock of the SQLite study file that ``--optuna-storage sqlite:///``
    names: the pre-flight waits for it (MTLSEARCH_SQLITE_LOCK_WAIT_S) and goes on once it is released; held
    longer, one line naming the flag, exit 2, before Ray and before any MLflow run is made (no RUNNING run
    left behind)."""
    import threading

    import optuna

    from mtlsearch import store_checks

    w = Work(tmp_path, monkeypatch, capsys)
    study = w.root / "mlflow-optuna.db"
    optuna.create_study(storage=f"sqlite:///{study}", study_name="earlier")
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(study)], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )  # another process, as in the issue
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(store_checks, "SQLITE_LOCK_WAIT_S", 0.5)
        code, err = w.launch("--optuna-storage", f"sqlite:///{study}")
        assert code == 2
        one_line(err, "--optuna-storage: the Optuna study file", str(study), "locked by another writer for more than 0.5 s")
        assert w.created() == ["mlflow-optuna.db"]  # no MLflow store, no Ray results

        monkeypatch.setattr(store_checks, "SQLITE_LOCK_WAIT_S", 60.0)
        threading.Timer(1.0, lambda: holder.communicate("release\n")).start()
        store_checks.check_study_file(w.uri, str(w.storage), f"sqlite:///{study}")  # waits for the lock, then passes
    finally:
        holder.kill()
        holder.wait()


LOCK_HOLDER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


# ------------------------------------------------------------------------------ row 7: --resume with the study gone
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_resume_after_the_study_file_was_deleted_is_refused_naming_it(kind, tmp_path, monkeypatch, capsys):
    """The driver was killed, then the study file deleted: Ray's saved searcher refers to the study's trials,
    so ``--resume`` would end in ``KeyError: 'Record does not exist.'`` after Ray started and mark the runs
    FAILED.  Refused before Ray, naming the file; the search's saved files untouched.  Both kinds of file: the
    journal (``mlflow-optuna.journal``, the default) and the SQLite file of a search started before it."""
    import optuna

    from mtlsearch import launch, studies, tracking

    w = Work(tmp_path, monkeypatch, capsys)
    study = w.root / ("mlflow-optuna.journal" if kind == "journal" else "mlflow-optuna.db")
    url = str(study) if kind == "journal" else f"sqlite:///{study}"
    argv = ["--space", str(w.space), "--storage", str(w.storage), "--tracking-uri", w.uri, "--name", "s"]
    space = launch.prepare_space(launch.build_parser().parse_args(argv))
    info = tracking.search_info(space, {"benchmark": None, "num_samples": None, "max_epochs": None, "seed": None}, study=(url, "s"))
    tracking.write_search_info(w.storage / "s", info)  # what the launcher saves beside Ray's state as a search starts
    saved = sorted(p.name for p in (w.storage / "s").iterdir())

    for state in ("missing", "another study", "not a database"):
        if state == "another study":
            optuna.create_study(storage=studies.open_storage(url), study_name="another")
        elif state == "not a database":
            study.unlink()
            study.write_text("x" * 200)
        capsys.readouterr()
        assert main([*argv, "--resume"]) == 2
        line = one_line(capsys.readouterr().err.strip().splitlines(), "--resume: the search 's' keeps its Optuna study 's' in", str(study))
        unreadable = "not a journal" if kind == "journal" else "not an Optuna storage"
        assert {"missing": "the file is missing", "another study": "the study is not in it", "not a database": unreadable}[state] in line, (
            line
        )
        assert "put the file back" in line and "without --resume" in line
        assert sorted(p.name for p in (w.storage / "s").iterdir()) == saved

    study.unlink()
    optuna.create_study(storage=studies.open_storage(url), study_name="s")  # the study back: the check passes
    from mtlsearch import store_checks

    store_checks.check_resume_study(w.storage / "s", info)


# ------------------------------------------------------------------------------ row 15: the store's creation killed midway
def test_store_creation_killed_midway_leaves_no_half_made_store(tmp_path, monkeypatch, capsys):
    """The driver SIGKILLed while MLflow creates ``./mlflow.db`` (here: killed with every table made but before
    the store is in place, the last moment of the creation): no ``mlflow.db`` is left, only a temporary file,
    and the next run creates the store (deleting that file) and works."""
    from mlflow.tracking import MlflowClient

    from mtlsearch import tracking

    w = Work(tmp_path, monkeypatch, capsys)
    db = w.root / "mlflow.db"
    code = f"from mtlsearch import tracking; tracking.Tracker({w.uri!r}, 'tiny', 'tiny-1')"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MTLSEARCH_FAULT_BEFORE_STORE_LINK": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=w.root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # SIGKILLed in the middle of the creation
    left = w.created()
    assert "mlflow.db" not in left and len(left) == 1 and left[0].startswith(f".mlflow.db{tracking.CREATING_PREFIX}"), left

    code_, err = w.launch("--dry-run")  # the same command again: the pre-flight passes (nothing half-made to refuse)
    assert code_ == 0, err
    tracker = tracking.Tracker(w.uri, "tiny", "tiny-1")  # and the store is made, at once
    assert w.created() == ["mlflow.db"]
    assert [e.name for e in MlflowClient(tracking_uri=w.uri).search_experiments()] == ["tiny", "Default"]
    assert tracker.experiment_id is not None and db.is_file()


def test_half_made_store_from_a_killed_creation_names_the_file_to_delete(tmp_path, monkeypatch, capsys):
    """A store that a killed process left half-migrated (MLflow's first tables and some of its migrations: what
    a kill during MLflow's own creation left before stores were made in one step) fails at every later use
    (``duplicate column name``).  The launcher says, before Ray, exactly what to delete; deleted, it works."""
    import sqlalchemy
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase  # MLflow's first tables

    w = Work(tmp_path, monkeypatch, capsys)
    db = w.root / "mlflow.db"
    engine = sqlalchemy.create_engine(w.uri)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(w.uri)
    revisions = list(reversed(list(ScriptDirectory.from_config(config).walk_revisions())))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revisions[len(revisions) // 2].revision)  # killed halfway through the migrations
    engine.dispose()

    code, err = w.launch()
    assert code == 2
    one_line(err, "--tracking-uri: the SQLite store", "half-made", "holds no runs", f"rm {db}")
    assert w.created() == ["mlflow.db"]
    db.unlink()
    code, err = w.launch("--dry-run")
    assert code == 0, err


# ------------------------------------------------------------------------------ row 8 (its start): a full disk
def test_full_disk_at_the_start_is_refused_before_ray(prior_store, tmp_path, monkeypatch, capsys):
    """The device of ``--storage`` has less free space than a search needs to start: one line naming the
    folder and the free space, exit 2, before Ray; nothing created, the earlier store intact.  The disk is
    made "full" by asking for more than it has free (MTLSEARCH_MIN_FREE_MB), on the real free space."""
    w = Work(tmp_path, monkeypatch, capsys)
    db = w.root.parent / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(prior_store, db)
    before = db.read_bytes()
    free_mb = shutil.disk_usage(w.root).free / 2**20
    monkeypatch.setenv("MTLSEARCH_MIN_FREE_MB", str(int(free_mb) + 10**6))
    code, err = w.launch(uri=f"sqlite:///{db}")
    assert code == 2
    one_line(err, "--storage: no space left for the search", f"free on the device of {w.root}", "MTLSEARCH_MIN_FREE_MB")
    assert w.created() == [] and db.read_bytes() == before
    monkeypatch.setenv("MTLSEARCH_MIN_FREE_MB", "1")  # the real need of this tiny search: the same command passes the check
    from mtlsearch import store_checks

    store_checks.check_free_space(f"sqlite:///{db}", str(w.storage))


# ------------------------------------------------------------------------------ smaller: MLflow's own traceback
def test_sqlite_error_after_the_start_is_not_preceded_by_mlflows_traceback(prior_store, tmp_path, capfd):
    """A SQLite store that fails after the pre-flight (made read-only while the search runs): MLflow logged
    ~60 lines of its own traceback before raising; with the launcher's logging only the error is left, which
    the launcher reports in one line (its tolerant tracker's warning, or a start error)."""
    from mlflow.exceptions import MlflowException

    from mtlsearch import console, tracking

    console.quiet_libraries()
    db = tmp_path / "mlflow.db"
    shutil.copy(prior_store, db)
    tracker = tracking.Tracker(f"sqlite:///{db}", "tiny", "tiny-1")
    capfd.readouterr()
    with read_only(db), pytest.raises(MlflowException, match="OperationalError|readonly"):
        tracker.client.create_run(tracker.experiment_id)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "SQLAlchemy database error" not in err, err


@pytest.mark.slow
def test_driver_killed_then_study_deleted_then_resume_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    """Row 7 as a user meets it, with real Ray: the launcher SIGKILLed once Ray saved the search's state, the
    study file deleted, ``--resume``: exit 2 before Ray naming the file (it was ``KeyError: 'Record does not
    exist.'`` after Ray started, with the runs marked FAILED); MLflow's runs and Ray's saved state untouched."""
    import json
    import re
    import signal
    import tempfile
    import time

    from mlflow.tracking import MlflowClient
    from helpers.shared_search import processes_with_env

    w = Work(tmp_path, monkeypatch, capsys, GOOD.replace("max_epochs: 2", "max_epochs: 30").replace("asha", "fifo"))
    ray_tmp = tempfile.mkdtemp(prefix="mtlpf", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = ["--space", str(w.space), "--storage", str(w.storage), "--tracking-uri", w.uri]
    log = tmp_path / "run1.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsearch.launch", *argv], cwd=w.root, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.time() + 240
        name = None
        while time.time() < deadline and proc.poll() is None:
            found = re.search(r"epoch 1/30", log.read_text()) and re.search(r"Search '([^']+)'", log.read_text())
            states = sorted((w.storage / found.group(1)).glob("experiment_state-*.json")) if found else []
            if states and any(json.loads(t[0]).get("status") == "RUNNING" for t in json.loads(states[-1].read_text())["trial_data"]):
                name = found.group(1)
                break
            time.sleep(0.5)
        assert name is not None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_with_env(f"RAY_TMPDIR={ray_tmp}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    study = w.root / "mlflow-optuna.journal"
    assert study.is_file()
    study.unlink()
    client = MlflowClient(tracking_uri=w.uri)
    runs_before = sorted((r.info.run_id, r.info.status) for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id]))
    saved = sorted(p.name for p in (w.storage / name).iterdir())

    code, err = w.launch("--resume", "--name", name)
    assert code == 2
    one_line(err, f"--resume: the search {name!r} keeps its Optuna study {name!r} in {study}", "the file is missing", "put the file back")
    runs_after = sorted((r.info.run_id, r.info.status) for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id]))
    assert runs_after == runs_before and not any(s == "FAILED" for _, s in runs_after)
    assert sorted(p.name for p in (w.storage / name).iterdir()) == saved and not study.exists()
