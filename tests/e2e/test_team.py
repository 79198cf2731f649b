"""A team's setup, end to end with the real parts: one PostgreSQL (Debian's ``postgresql``: a cluster made
here with ``initdb``/``pg_ctl`` on a free loopback port, removed afterwards) holding both the MLflow
tracking server's store and the Optuna studies, artifacts in a shared folder, and one Ray head (two nodes,
``ray start``) to which three searches are submitted at once with ``ray job submit``, each to its own
experiment; one of them has its driver SIGKILLed mid-search and is resumed by a fourth job.

Nothing may be lost: every trial's run with every epoch's metric, no run left RUNNING, one run per trial
(the resumed search re-uses its runs), the three Optuna studies intact; ``mtlsearch ui`` and
``python -m mtlsearch.report`` work against that server.  docs/team.md shows the same setup for people.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers.shared_search import MlflowServer, free_port, processes_with_env, rest, search_runs

from mtlsearch.tracking import TAG_KIND, TAG_SEARCH, TAG_STATUS, TAG_TRIAL

SPACE = """
name: {name}
benchmark: synthetic
objective: {{metric: val/delta_m, mode: max}}
budget: {{num_samples: {samples}, max_epochs: {epochs}}}
scheduler: {{type: fifo}}
searcher: {{type: optuna, sampler: tpe, seed: {seed}}}
resources: {{cpus_per_trial: 1}}
params:
  method: gemtl
  p: {{uniform: [0.0, 1.0]}}
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
"""
#: (name, trials, epochs): the third one is the long search whose driver is killed and resumed.
SEARCHES = [("team_a", 2, 2), ("team_b", 2, 2), ("team_c", 3, 12)]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]
    assert found, f"{name} not found: install Debian's postgresql (apt-get install postgresql)"
    return found if isinstance(found, str) else found[0]


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust authentication, superuser ``postgres``)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mtlpg", dir="/tmp"))
        self.port = free_port()
        # initdb refuses to run as root: the cluster belongs to Debian's postgres user then.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self.as_owner, *cmd], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def start(self) -> None:
        data = self.root / "data"
        self._run(_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        for db in ("mlflow", "optuna"):
            self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f"CREATE DATABASE {db}")

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_owner, _pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL store, artifacts in a shared folder."""
    srv = MlflowServer(tmp_path_factory.mktemp("team_mlflow"), backend=postgres.url("mlflow"))
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def _launch(space: Path, name: str, storage: Path, server: MlflowServer, study_url: str, *extra: str) -> list[str]:
    return [
        "python",
        "-m",
        "mtlsearch.launch",
        "--space",
        str(space),
        "--name",
        name,
        "--storage",
        str(storage),
        "--storage-is-shared",
        "--tracking-uri",
        server.uri,
        "--optuna-storage",
        study_url,
        *extra,
    ]


def _driver_pid(cluster, name: str) -> int | None:
    for pid in processes_with_env(cluster.marker):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The job's entrypoint itself (`python -m mtlsearch.launch ...`), not the `ray job submit` client
        # or the shell that Ray starts it from.
        if cmd[1:3] == [b"-m", b"mtlsearch.launch"] and name.encode() in cmd and b"--resume" not in cmd:
            return pid
    return None


def _epochs_logged(uri: str, experiment_id: str) -> int:
    """Trial runs of the experiment that hold a val/delta_m value (at least one epoch reported)."""
    return len([m for r in search_runs(uri, experiment_id) for m in r["data"].get("metrics", []) if m["key"] == "val/delta_m"])


def test_three_searches_share_postgres_mlflow_and_optuna_one_resumed_after_a_driver_kill(cluster, postgres, team_server, tmp_path):
    import optuna

    shared = tmp_path / "shared"  # the team's shared folder (NFS in real life): Ray results and checkpoints
    shared.mkdir()
    study_url = postgres.url("optuna")
    spaces = {}
    for seed, (name, samples, epochs) in enumerate(SEARCHES):
        spaces[name] = tmp_path / f"{name}.yaml"
        spaces[name].write_text(textwrap.dedent(SPACE.format(name=name, samples=samples, epochs=epochs, seed=seed)))

    outputs: dict[str, tuple[int, str]] = {}

    def submit(name: str, *extra: str) -> None:
        job = f"{name}-{uuid.uuid4().hex[:6]}"
        outputs[name + "".join(extra)] = cluster.submit_job(job, _launch(spaces[name], name, shared, team_server, study_url, *extra))

    threads = [threading.Thread(target=submit, args=(name,)) for name, _, _ in SEARCHES]
    for t in threads:
        t.start()

    # The long search's driver is killed once its first epoch is in MLflow (an event, not a delay).
    deadline = time.time() + 600
    exp_c = None
    while time.time() < deadline:
        try:
            exp_c = rest(team_server.uri, "experiments/get-by-name", params={"experiment_name": "team_c"})["experiment"]["experiment_id"]
        except OSError:
            exp_c = None
        if exp_c and _epochs_logged(team_server.uri, exp_c) >= 1:
            break
        time.sleep(0.5)
    assert exp_c, "the third search never reached MLflow"
    pid = _driver_pid(cluster, "team_c")
    assert pid is not None, "the third search's driver is not running"
    os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(timeout=900)
    assert outputs["team_a"][0] == 0 and outputs["team_b"][0] == 0, (outputs["team_a"][1][-3000:], outputs["team_b"][1][-3000:])
    assert outputs["team_c"][0] != 0  # its driver was killed

    submit("team_c", "--resume")
    code, out = outputs["team_c--resume"]
    assert code == 0, out[-6000:]
    assert "Best trials by val/delta_m" in out

    # MLflow (PostgreSQL behind the server): every trial, every epoch, nothing RUNNING, one run per trial.
    for name, samples, epochs in SEARCHES:
        exp = rest(team_server.uri, "experiments/get-by-name", params={"experiment_name": name})["experiment"]
        runs = search_runs(team_server.uri, exp["experiment_id"])
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        assert [r["info"]["status"] for r in runs if r["info"]["status"] == "RUNNING"] == [], name
        trials = [(r, t) for r, t in zip(runs, tags) if t.get(TAG_KIND) == "trial"]
        ids = [t[TAG_TRIAL] for _, t in trials]
        assert len(ids) == samples and len(set(ids)) == samples, (name, ids)
        assert len({t[TAG_SEARCH] for _, t in trials}) == 1
        for run, tag in trials:
            assert tag[TAG_STATUS] == "completed", (name, tag)
            history = rest(team_server.uri, "metrics/get-history", params={"run_id": run["info"]["run_id"], "metric_key": "val/delta_m"})
            assert sorted(m["step"] for m in history["metrics"]) == list(range(1, epochs + 1)), name

    # The Optuna studies live in the same PostgreSQL, one per search, every trial told.
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage=study_url)}
    assert sorted(summaries) == ["team_a", "team_b", "team_c"]
    for name, samples, _ in SEARCHES:
        study = optuna.load_study(study_name=name, storage=study_url)
        finished = [t for t in study.trials if t.state.is_finished()]
        assert len(finished) >= samples, (name, [t.state for t in study.trials])
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in finished), (name, [t.state for t in finished])

    # The team's tools read the same server.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    ui = subprocess.run(
        [sys.executable, "-m", "mtlsearch", "ui", "--tracking-uri", team_server.uri, "--experiment", "team_c", "--no-browser"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert ui.returncode == 0 and f"/#/experiments/{exp_c}/" in ui.stdout, ui.stdout + ui.stderr[-2000:]
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlsearch.report",
            "--tracking-uri",
            team_server.uri,
            "--experiment",
            "team_c",
            "--out",
            str(tmp_path / "rep"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert (tmp_path / "rep" / "report.html").exists() and "team_c" in report.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/tmp/optuna.db", "is not a database URL; give one of sqlite://, postgresql://, mysql://"),
        (
            "postgresql://postgres:secret@127.0.0.1:{port}/optuna",
            "cannot open the Optuna database postgresql://postgres:***@127.0.0.1:{port}/optuna: ",
        ),
    ],
)
def test_a_bad_optuna_storage_is_refused_before_ray_in_one_line(tmp_path, url, expected):
    """No server listens on the port: one line naming --optuna-storage (the password hidden), exit 2, nothing created."""
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "mtlsearch.launch", "--space", "gemtl_p", "--optuna-storage", url.format(port=port)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: --optuna-storage: ") and expected.format(port=port) in errors[0], proc.stderr
    assert "secret" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
