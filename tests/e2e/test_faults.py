"""Faults, with nothing lost: crashed trials resume from their checkpoint, NaN trials end with their
reason, a killed or interrupted driver resumes the search; MLflow keeps one run per trial and each
epoch once.  Real Ray, real MLflow (SQLite), real processes and signals."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from helpers.held import held_method
from helpers.shared_search import processes_with_env

from mtlsearch.launch import main
from mtlsearch.tracking import TAG_KIND, TAG_STATUS, TAG_TRIAL

ROOT = Path(__file__).resolve().parents[2]

SPACE = """
name: {name}
benchmark: synthetic
objective: {{metric: val/delta_m, mode: max}}
budget: {{num_samples: {samples}, max_epochs: {epochs}, max_concurrent_trials: 2}}
scheduler: {{type: fifo}}
searcher: {searcher}
resources: {{cpus_per_trial: 1}}
params:
{params}
"""
GEMTL = "  method: gemtl\n  p: {uniform: [0.0, 1.0]}\n  lr: {loguniform: [1.0e-3, 1.0e-2]}"


def write_space(tmp_path, name, *, samples, epochs, params=GEMTL, searcher="{type: optuna, sampler: random, seed: 0}"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(SPACE).format(name=name, samples=samples, epochs=epochs, params=params, searcher=searcher))
    return path


def trial_runs(uri, experiment):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TAG_KIND) == "trial"]


def steps(client, run, key="val/delta_m"):
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def tune_rows(folder: Path) -> list[dict]:
    """Ray Tune's own per-trial log: one row per reported result, with the worker's pid."""
    return [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]


class KillWorkerAfterEpoch(Callback):
    """Driver-side fault: SIGKILL the trial's worker process when the checkpoint of epoch ``epoch``
    reaches the driver (Ray registers it right after this hook, before it notices the death)."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.killed: list[tuple[str, int]] = []

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        result = trial.last_result or {}
        if not self.killed and int(result.get("epoch", 0)) == self.epoch:
            os.kill(int(result["pid"]), signal.SIGKILL)
            self.killed.append((trial.trial_id, int(result["pid"])))


def test_killed_worker_is_retried_from_its_last_checkpoint(tmp_path, ray_session, capsys):
    space = write_space(tmp_path, "fault_kill", samples=1, epochs=4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killer = KillWorkerAfterEpoch(2)
    code = main(
        ["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--name", "kill", "--max-failures", "1"],
        callbacks=[killer],
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert len(killer.killed) == 1
    trial_id, dead_pid = killer.killed[0]

    rows = tune_rows(tmp_path / "ray" / "kill" / f"trial_{trial_id}")
    epochs = [int(r["epoch"]) for r in rows]
    pids = [r["pid"] for r in rows]
    assert epochs == [1, 2, 3, 4], epochs  # no epoch twice: the retry did not start over
    first_after = pids.index(next(p for p in pids if p != dead_pid))
    assert set(pids[:first_after]) == {dead_pid} and dead_pid not in pids[first_after:]
    assert epochs[first_after] == epochs[first_after - 1] + 1  # continued right after the checkpoint

    client, runs = trial_runs(uri, "fault_kill")
    assert len(runs) == 1
    assert runs[0].data.tags[TAG_STATUS] == "completed"
    assert steps(client, runs[0]) == [1, 2, 3, 4]

    # The folder is taken: the same --name again would mix two searches; --resume has nothing to do.
    args = ["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--name", "kill"]
    assert main(args) == 2
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--name: a search named 'kill' exists" in err[0] and "add --resume" in err[0]
    assert "--resume: the search 'kill'" in err[1] and "has finished" in err[1]
    assert len(trial_runs(uri, "fault_kill")[1]) == 1


def test_nan_trial_errors_with_its_reason_without_retraining_and_the_search_goes_on(tmp_path, ray_session, capsys):
    params = "  method: ew\n  optimizer: sgd\n  lr: {grid: [0.001, 100.0]}"
    space = write_space(tmp_path, "fault_nan", samples=1, epochs=2, params=params, searcher="{type: random, seed: 0}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # --max-failures -1 (retry forever): the NaN trial still ends ERRORED after one retry and the search ends.
    code = main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--name", "nan", "--max-failures", "-1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"; 2 trials \(\d completed, \d stopped early by ASHA, 1 errored\):", out), out
    # The errored trial (lr 100) is the table's last row, never its best (rows: after the title, header and rule).
    rows = out.split("Best trials by", 1)[1].splitlines()[3:5]
    assert rows[0].rstrip().endswith("best") and "errored" in rows[1] and not rows[1].rstrip().endswith("best"), rows

    client, runs = trial_runs(uri, "fault_nan")
    by_lr = {float(r.data.params["lr"]): r for r in runs}
    assert sorted(by_lr) == [0.001, 100.0]
    good, bad = by_lr[0.001], by_lr[100.0]
    assert good.data.tags[TAG_STATUS] == "completed" and steps(client, good) == [1, 2]
    assert bad.data.tags[TAG_STATUS] == "errored" and bad.info.status == "FAILED"
    assert "NonFiniteLossError" in bad.data.tags["error"] and "became non-finite (nan or inf)" in bad.data.tags["error"]

    # Ray Tune retried the trial (max_failures applies to every exception), but the retry did not train
    # again: the first attempt diverged in epoch 1, the second stopped at once on the marker it left.
    folder = tmp_path / "ray" / "nan" / f"trial_{bad.data.tags[TAG_TRIAL]}"
    raised = re.findall(r"^mtlsearch\.trainer\.NonFiniteLossError: (.*)$", (folder / "error.txt").read_text(), re.M)
    assert len(raised) == 2, raised
    assert "not retrained" not in raised[0] and raised[1].endswith("(not retrained: the same checkpoint would diverge again)")
    assert not (folder / "result.json").exists() or tune_rows(folder) == []


class CorruptCheckpointThenKill(KillWorkerAfterEpoch):
    """Damage the checkpoint of epoch ``epoch`` (a truncated write, a bad disk), then kill the worker:
    the retry has to restore from that checkpoint, as ``--resume`` would."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        result = trial.last_result or {}
        if not self.killed and int(result.get("epoch", 0)) == self.epoch:
            state = Path(checkpoint.path) / "state.pt"
            state.write_bytes(state.read_bytes()[:100])
        super().on_checkpoint(iteration, trials, trial, checkpoint, **info)


def test_corrupted_checkpoint_ends_the_trial_once_with_its_reason(tmp_path, ray_session, capsys):
    space = write_space(tmp_path, "fault_corrupt", samples=1, epochs=3)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        ["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--name", "corrupt", "--max-failures", "-1"],
        callbacks=[CorruptCheckpointThenKill(2)],
    )
    captured = capsys.readouterr()
    assert code == 1, captured.out  # every trial (the only one) errored: exit 1 and a summary of the errors
    assert "error: all 1 trials of the search errored" in captured.err, captured.err
    assert re.search(r"^  1 x UnreadableCheckpointError: checkpoint \S+ cannot be read", captured.err, re.M), captured.err
    assert "Best trials" not in captured.out
    client, runs = trial_runs(uri, "fault_corrupt")
    assert len(runs) == 1 and runs[0].info.status == "FAILED" and runs[0].data.tags[TAG_STATUS] == "errored"
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED"  # a search in which every trial errored ends FAILED
    assert steps(client, runs[0]) == [1, 2]  # the epochs recorded before the damage are kept
    error = (tmp_path / "ray" / "corrupt" / f"trial_{runs[0].data.tags[TAG_TRIAL]}" / "error.txt").read_text()
    assert error.count("Failure #") == 3  # the kill, the retry that met the damage, its one retry; then no more


class FailAtSetup(Callback):
    """Ray Tune failing as the search starts, after MLflow's parent run exists (what an unexpected Ray
    error does)."""

    def setup(self, **info):
        raise RuntimeError("injected: Ray Tune failed as it started")


def test_a_failed_start_ends_its_mlflow_runs_failed(tmp_path, ray_session, capsys):
    space = write_space(tmp_path, "fault_start", samples=1, epochs=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RuntimeError, match="injected"):  # not bad input: the traceback is the report
        main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri], callbacks=[FailAtSetup()])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fault_start").experiment_id])
    assert [r.data.tags.get(TAG_KIND) for r in runs] == ["search"]
    assert runs[0].info.status == "FAILED" and "injected: Ray Tune failed" in runs[0].data.tags["error"]


# ------------------------------------------------------------------------------ the driver itself
def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> re.Match:
    deadline = time.time() + timeout
    while time.time() < deadline:
        match = re.search(pattern, path.read_text() if path.exists() else "")
        if match:
            return match
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited ({proc.returncode}) before {pattern!r}:\n{path.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n{path.read_text()[-3000:]}")


def _wait_for_file(folder: Path, pattern: str, proc: subprocess.Popen, log: Path, timeout: float) -> Path:
    """The first file matching ``pattern`` in ``folder`` (an event a trial signals, see helpers/held.py)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited ({proc.returncode}) before {folder / pattern}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {folder / pattern} within {timeout} s:\n{log.read_text()[-3000:]}")


def _finished_in_saved_state(folder: Path, proc, timeout: float) -> set[str]:
    """Trial ids that Ray Tune's saved experiment state records as finished (what a resume relies on:
    Ray saves it every TUNE_GLOBAL_CHECKPOINT_S, ~10 s by default, and on every few checkpoints)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for state in sorted(folder.glob("experiment_state-*.json"))[-1:]:
            try:
                trials = [json.loads(t[0]) for t in json.loads(state.read_text())["trial_data"]]
            except (OSError, ValueError, KeyError):
                continue
            done = {t["trial_id"] for t in trials if t["status"] == "TERMINATED"}
            if done:
                return done
        assert proc.poll() is None, "the launcher ended before it saved a finished trial"
        time.sleep(0.2)
    raise AssertionError(f"no finished trial in {folder}'s saved state within {timeout} s")


def test_driver_killed_then_interrupted_resumes_without_rerunning_or_duplicating(tmp_path):
    """SIGKILL the launcher once Ray saved a finished trial; ``--resume``; Ctrl-C that run; run the
    command it prints.  Every trial also crashes once after epoch 2 (MTLSEARCH_FAULT_AT_EPOCH) and is
    retried from that checkpoint.  In the end MLflow has one run per trial with each epoch once, and
    the trials finished before the kill were never run again."""
    hold = tmp_path / "hold"
    space = write_space(
        tmp_path, "fault_driver", samples=3, epochs=3, params=GEMTL.replace("method: gemtl", f"method: {held_method(tmp_path, hold)}")
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray_tmp = tempfile.mkdtemp(prefix="mtlft", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RAY_TMPDIR": ray_tmp,
        "MTLSEARCH_FAULT_AT_EPOCH": "2",
        "TUNE_GLOBAL_CHECKPOINT_S": "1",
    }
    env.pop("RAY_ADDRESS", None)
    argv = ["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--max-failures", "1"]
    procs = []

    def launch(args, log):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mtlsearch.launch", *args], cwd=tmp_path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT
        )
        procs.append(proc)
        return proc

    try:
        log1 = tmp_path / "run1.log"
        first = launch(argv, log1)
        name = _wait_for(log1, r"Search '([^']+)'", first, timeout=300).group(1)
        _wait_for(log1, r"\[\d+/3 done[^\]]*\] \w+ completed", first, timeout=400)
        finished = _finished_in_saved_state(tmp_path / "ray" / name, first, timeout=120)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        # The killed driver's local Ray (raylet, agents) can outlive it for a while and tidy up the session
        # folders under RAY_TMPDIR while the resumed driver starts its own there: end them first.
        deadline = time.time() + 15
        while (left := processes_with_env(f"RAY_TMPDIR={ray_tmp}")) and time.time() < deadline:
            kill_all(left)
            time.sleep(0.5)
        text1 = log1.read_text()
        assert 1 <= len(finished) < 3, text1

        log2 = tmp_path / "run2.log"
        # The resumed trials are held at their first step (tests/helpers/held.py) and Ctrl-C comes once one says so:
        # with reused workers and cached data the one epoch left once ended the search before a Ctrl-C
        # sent after a fixed wait, and a Ctrl-C sent too early hit Ray before Tuner.fit.
        (hold / "armed").touch()
        second = launch([*argv, "--resume"], log2)
        _wait_for(log2, rf"Resuming .*{re.escape(name)}", second, timeout=300)
        _wait_for_file(hold, "*.held", second, log2, timeout=300)
        second.send_signal(signal.SIGINT)
        assert second.wait(60) == 130, log2.read_text()[-3000:]
        text2 = log2.read_text()
        resume = re.search(r"Resume it with:\n  (.+)\n", text2)
        assert resume, text2[-3000:]
        # Only our own lines: no Tuner.restore advice, no warning or traceback of Ray's; a trial that never
        # started is not counted as finished; the results so far are shown.
        assert "Tuner.restore" not in text2 and "WARNING" not in text2 and "Traceback" not in text2, text2[-3000:]
        counts = re.search(r"Interrupted: (\d+) trial\(s\) finished, (\d+) stopped", text2)
        assert counts and int(counts.group(1)) >= len(finished) and sum(map(int, counts.groups())) <= 3, text2[-3000:]
        assert "Results so far by val/delta_m" in text2, text2[-3000:]
        command = shlex.split(resume.group(1))
        assert command[:3] == ["python", "-m", "mtlsearch.launch"] and command[-3:] == ["--resume", "--name", name]

        log3 = tmp_path / "run3.log"
        (hold / "armed").unlink()
        (hold / "release").touch()
        third = launch(command[3:], log3)
        assert third.wait(300) == 0, log3.read_text()[-3000:]
        text3 = log3.read_text()
        assert re.search(r"; 3 trials \(\d completed, \d stopped early by ASHA, 0 errored\):", text3), text3[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        # A SIGKILLed driver's local Ray mostly dies with it, but Ray's agents can outlive it.
        kill_all(processes_with_env(f"RAY_TMPDIR={ray_tmp}"))
        shutil.rmtree(ray_tmp, ignore_errors=True)

    for trial_id in finished:  # finished before the kill: never run again
        assert not re.search(rf"{trial_id} epoch", text2 + text3), trial_id
    client, runs = trial_runs(uri, "fault_driver")
    assert len(runs) == 3 and len({r.data.tags[TAG_TRIAL] for r in runs}) == 3
    for run in runs:
        assert run.data.tags[TAG_STATUS] == "completed", run.data.tags
        assert steps(client, run) == [1, 2, 3]
        assert steps(client, run, "train/scale_1/loss") == [1, 2, 3]
    for trial_id in finished:  # the injected crash after epoch 2 resumed from epoch 2's checkpoint
        rows = tune_rows(tmp_path / "ray" / name / f"trial_{trial_id}")
        assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
        assert rows[1]["pid"] != rows[2]["pid"]


def _launcher_env(ray_tmp: str, **extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "RAY_TMPDIR": ray_tmp, **extra}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _end(proc: subprocess.Popen, ray_tmp: str) -> None:
    """A launcher test's teardown: the launcher and every Ray process of its RAY_TMPDIR gone, the folder removed."""
    if proc.poll() is None:
        proc.kill()
    kill_all(processes_with_env(f"RAY_TMPDIR={ray_tmp}"))
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _gone(ray_tmp: str, timeout: float) -> list[int]:
    """The processes of the launcher's Ray still alive after ``timeout`` s (none is what we want)."""
    deadline = time.time() + timeout
    while (left := processes_with_env(f"RAY_TMPDIR={ray_tmp}")) and time.time() < deadline:
        time.sleep(0.5)
    return left


def _wait_for_ray_processes(ray_tmp: str, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until a process of the launcher's Ray (its RAY_TMPDIR, other than the launcher) runs."""
    deadline = time.time() + timeout
    while not set(processes_with_env(f"RAY_TMPDIR={ray_tmp}")) - {proc.pid}:
        assert proc.poll() is None, f"the launcher exited ({proc.returncode}) before Ray started"
        assert time.time() < deadline, f"no process of the launcher's Ray within {timeout} s"
        time.sleep(0.05)


def _our_lines(stderr: str) -> list[str]:
    """stderr without Ray's and MLflow's own timestamped log lines."""
    return [
        line
        for line in stderr.strip().splitlines()
        if line.strip() and not re.match(r"^(\[\w \d{4}-|\d{4}[-/]\d\d[-/]\d\d |\(\w+ pid=)", line)
    ]


def test_ctrl_c_while_ray_starts_exits_130_with_one_line_and_leaves_nothing_running(tmp_path):
    space = write_space(tmp_path, "fault_ctrlc", samples=1, epochs=1)
    ray_tmp = tempfile.mkdtemp(prefix="mtlcc", dir="/tmp")
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtlsearch.launch",
            "--space",
            str(space),
            "--storage",
            str(tmp_path / "ray"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        cwd=tmp_path,
        env=_launcher_env(ray_tmp),
        stdout=open(out, "w"),
        stderr=open(err, "w"),
    )
    try:
        _wait_for(out, r"Starting a local Ray", proc, timeout=120)
        _wait_for_ray_processes(ray_tmp, proc, timeout=120)  # ray.init has started Ray's first processes
        # Ray's own "Started a local Ray instance" line is silenced (mtlsearch.console): past ray.init the
        # launcher would create the MLflow store next, so its absence says Ray is still starting.
        assert not (tmp_path / "mlflow.db").exists(), "Ray started too fast for this test"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        left = _gone(ray_tmp, 30)
    finally:
        _end(proc, ray_tmp)
    text = err.read_text()
    assert code == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert _our_lines(text) == ["Interrupted before the search started; nothing was run and nothing is left running."], text
    assert left == [], "Ray processes left running"
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_sigterm_to_the_process_group_stops_in_seconds_with_the_resume_command(tmp_path):
    """What a job scheduler does: SIGTERM to the launcher's whole process group, its local Ray included.
    Ray's GCS dies with it, so Ray Tune cannot stop gracefully; the launcher stops anyway (its watchdog,
    MTLSEARCH_STOP_TIMEOUT_S), marks the MLflow runs, prints the resume command, exit code 130."""
    space = write_space(tmp_path, "fault_term", samples=2, epochs=30)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray_tmp = tempfile.mkdtemp(prefix="mtlst", dir="/tmp")
    out = tmp_path / "out.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtlsearch.launch",
            "--space",
            str(space),
            "--storage",
            str(tmp_path / "ray"),
            "--tracking-uri",
            uri,
            "--name",
            "term",
        ],
        cwd=tmp_path,
        env=_launcher_env(ray_tmp, MTLSEARCH_STOP_TIMEOUT_S="5"),
        stdout=open(out, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(out, r"epoch 2/30", proc, timeout=240)
        os.killpg(proc.pid, signal.SIGTERM)
        # Without the launcher's own stop (SIGTERM handled as Ctrl-C, then its watchdog) it waits for Ray
        # Tune forever; this bound only turns such a hang into a failure, it measures nothing.
        code = proc.wait(180)
        left = _gone(ray_tmp, 30)
    finally:
        _end(proc, ray_tmp)
    text = out.read_text()
    assert code == 130, text[-3000:]
    # The stop went through our handler: the interrupted search's own summary (not a kill, not Ray's exit).
    assert re.search(r"\nInterrupted: \d+ trial\(s\) finished, \d+ stopped; the search's state is saved in ", text), text[-3000:]
    resume = re.search(r"Resume it with:\n  (.+)\n", text)
    assert resume and resume.group(1).endswith("--resume --name term"), text[-3000:]
    assert left == [], "Ray processes left running"
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fault_term").experiment_id])
    assert runs and all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parent = next(r for r in runs if r.data.tags.get(TAG_KIND) == "search")
    assert parent.info.status == "KILLED"


def test_two_searches_started_at_once_on_one_store_and_storage(tmp_path, ray_session):
    """Two launchers started together on a new mlflow.db and the same storage (connected to the suite's
    Ray, as two users of one cluster would be): both finish, each in its own folder (a default name taken
    in the same second gets -2), and MLflow holds both searches, each trial once (the store's tables are
    created once: MLflow's migrations run under a lock on the store's folder)."""
    space = write_space(tmp_path, "fault_twice", samples=1, epochs=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "RAY_AUTH_MODE": "token"}
    env.pop("MLFLOW_TRACKING_URI", None)
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    # cwd=ROOT: Ray puts the driver's folder on its workers' path (the checkout need not be installed).
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mtlsearch.launch",
                "--space",
                str(space),
                "--storage",
                str(tmp_path / "ray"),
                "--tracking-uri",
                uri,
                "--address",
                address,
            ],
            cwd=ROOT,
            env=env,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    try:
        codes = [p.wait(300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], [t[-2000:] for t in texts]
    names = sorted(re.search(r"Search '([^']+)'", t).group(1) for t in texts)
    assert len(set(names)) == 2 and sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for text in texts:
        assert "; 1 trials (1 completed, 0 stopped early by ASHA, 0 errored):" in text and "warning: MLflow" not in text, text[-2000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fault_twice").experiment_id])
    parents = sorted(r.info.run_name for r in runs if r.data.tags.get(TAG_KIND) == "search")
    trials = [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]
    assert parents == names and len(trials) == 2
    assert all(r.info.status == "FINISHED" for r in runs) and all(steps(client, r) == [1] for r in trials)
