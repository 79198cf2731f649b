"""Faults while a search runs (issue 26, rows 13, 14, 16, 17 and row 8's mid-search part): shapes that
only work by broadcasting refused before Ray, a non-finite value named at its first source in one line,
results that cannot be saved ending the search like SIGTERM."""

import sys
import textwrap
from pathlib import Path

import pytest

from mtlsearch import launch

INK = '''
import torch
from torch import nn
from torch.utils.data import Dataset

from mtlsearch.benchmarks import Benchmark, TaskSpec
from mtlsearch.metrics import MeanMeter


class Items(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {"ink": self.y[i], "tone": self.y[i] * 2}


class Net(nn.Module):
    def __init__(self, tasks):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.out = nn.ModuleDict({t: nn.Linear(8, 1) for t in tasks})

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def forward(self, x):
        z = self.trunk(x)
        return {t: self.shape(t, layer(z)) for t, layer in self.out.items()}

    def shape(self, task, out):
        return out.squeeze(-1)


def by_hand(pred, target):
    return ((pred - target) ** 2).mean()


class Ink(Benchmark):
    """The head of 'ink' outputs [N, 1] while its target is [N]: mse_loss broadcasts to [N, N]."""

    loss = staticmethod(nn.functional.mse_loss)

    def task_specs(self):
        meter = lambda: MeanMeter({"mse": lambda p, t: ((p.reshape(-1) - t) ** 2).mean()})  # noqa: E731
        return [TaskSpec("ink", self.loss, {"mse": "min"}, meter), TaskSpec("tone", nn.functional.mse_loss, {"mse": "min"}, meter)]

    def load_splits(self, data_seed):
        return {"train": Items(16, data_seed), "val": Items(8, data_seed + 1)}

    def build_model(self, task_names):
        net = Net(tuple(task_names))
        net.shape = lambda task, out: out if task == "ink" else out.squeeze(-1)
        return net


class InkByHand(Ink):
    loss = staticmethod(by_hand)


class InkFixed(Ink):
    def build_model(self, task_names):
        return Net(tuple(task_names))
'''


def _space(folder: Path, benchmark: str, method: str = "ew", epochs: int = 1, samples: int = 1, extra: str = "") -> Path:
    path = folder / "space.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: faults
        benchmark: {benchmark}
        objective: {{metric: val/tone/mse, mode: min}}
        budget: {{num_samples: {samples}, max_epochs: {epochs}}}
        scheduler: {{type: fifo}}
        params:
          method: {method}
          lr: 0.01
          batch_size: 4
        {extra}
    """)
    )
    return path


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "ink.py").write_text(INK)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    from mtlsearch import plugins

    plugins._CACHE.clear()
    for name in [n for n, m in sys.modules.items() if str(tmp_path) in str(getattr(m, "__file__", "") or "")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p != str(tmp_path)]


# ------------------------------------------------------------------------------ row 13
@pytest.mark.parametrize("bench", ["Ink", "InkByHand"])
def test_row13_a_loss_that_only_works_by_broadcasting_is_refused_before_ray(plugin_dir, capsys, bench):
    space = _space(plugin_dir, f"./ink.py:{bench}")
    code = launch.main(["--space", str(space), "--tracking-uri", f"sqlite:///{plugin_dir / 'm.db'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "output and target shapes of task 'ink' differ: [2, 1] vs [2]" in err[0] and "ink.py" in err[0], err[0]
    assert "[2, 2]" in err[0] or "broadcasting" in err[0]
    assert sorted(p.name for p in plugin_dir.iterdir() if not p.name.startswith("__")) == ["ink.py", "space.yaml"]


def test_row13_the_same_benchmark_with_matching_shapes_passes_the_checks(plugin_dir):
    from mtlsearch import plugin_checks, spaces

    space = plugin_checks.prepare(spaces.load_space(str(_space(plugin_dir, "./ink.py:InkFixed"))))
    plugin_checks.check_space(space)  # raises ConfigError on a refusal


# ------------------------------------------------------------------------------ row 17
def test_row17_a_resumed_search_drops_the_run_of_a_trial_ray_never_saved(tmp_path, capsys):
    """The driver-kill race: a trial started (its MLflow run created) in a driver SIGKILLed before Ray saved
    its state again; the resumed Ray samples its place under a new id.  At the restored Tuner's first step
    the lost trial's run goes to MLflow's deleted runs, so the search keeps one run per trial."""
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial

    from mtlsearch import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tracking.Tracker(uri, "race", str(tmp_path / "ray" / "s1"), tolerant=False)
    first.start_search_from({"params": {}})
    for trial_id in ("saved1", "saved2", "lost3"):
        first.start_trial(trial_id, {"lr": 0.1})
    first.end_trial("saved1", {"lr": 0.1}, tracking.STATUS_COMPLETED, epochs=3)

    resumed = tracking.Tracker(uri, "race", str(tmp_path / "ray" / "s1"), tolerant=False)
    resumed.start_search_from({"params": {}})
    callback = tracking.make_resume_callback(resumed)
    restored = [Trial("__fake", trial_id=t, stub=True) for t in ("saved1", "saved2")]
    callback.on_step_begin(iteration=0, trials=restored)
    callback.on_step_begin(iteration=1, trials=[*restored, Trial("__fake", trial_id="new4", stub=True)])  # only the first step
    resumed.start_trial("new4", {"lr": 0.2})
    out = capsys.readouterr().out
    assert "trial lost3 started just before the search was stopped" in out and "new4" not in out

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("race")
    active = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(tracking.TAG_KIND) == "trial"]
    assert sorted(r.data.tags[tracking.TAG_TRIAL] for r in active) == ["new4", "saved1", "saved2"]
    from mlflow.entities import ViewType

    (lost,) = [r for r in client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY)]
    assert lost.data.tags[tracking.TAG_TRIAL] == "lost3" and lost.data.tags[tracking.TAG_STATUS] == tracking.STATUS_LOST
    assert lost.info.status == "KILLED"


# ------------------------------------------------------------------------------ row 14
NAN_METHODS = '''
import torch

from mtlsearch.balancing import GradBalancing, GradResult, LossBalancing


class NaNWeights(LossBalancing):
    """Equal weights, then NaN weights at epoch 2, step 5."""

    def __init__(self, num_tasks, **hparams):
        super().__init__(num_tasks, **hparams)
        self.epoch, self.step = 1, 0

    def forward(self, losses):
        self.step += 1
        w = torch.ones_like(losses)
        if (self.epoch, self.step) >= (2, 5):
            w = w * float("nan")
        return (w * losses).sum()

    def on_epoch_end(self, epoch, train_losses):
        self.epoch, self.step = self.epoch + 1, 0


class NaNDirection(GradBalancing):
    """The mean gradient, then a NaN direction at epoch 2, step 5."""

    default_mode = "param"

    def __init__(self, num_tasks, **hparams):
        super().__init__(num_tasks, **hparams)
        self.epoch, self.step = 1, 0

    def forward(self, grads, losses):
        self.step += 1
        d = grads.mean(0)
        if (self.epoch, self.step) >= (2, 5):
            d = d * float("nan")
        return GradResult(direction=d)

    def on_epoch_end(self, epoch, train_losses):
        self.epoch, self.step = self.epoch + 1, 0
'''


@pytest.fixture()
def nan_dir(plugin_dir):
    (plugin_dir / "nanmethods.py").write_text(NAN_METHODS)
    return plugin_dir


@pytest.mark.parametrize(
    "method,extra,message",
    [
        ("./nanmethods.py:NaNWeights", {}, "returned non-finite weights at epoch 2, step 5, from finite losses"),
        ("./nanmethods.py:NaNDirection", {}, "returned non-finite direction at epoch 2, step 5, from finite losses"),
        ("ew", {"optimizer": "sgd", "lr": 1e6}, "a step of optimizer 'sgd' (lr=1e+06) diverged"),
    ],
)
def test_row14_a_non_finite_value_is_named_at_its_first_source(nan_dir, method, extra, message):
    from mtlsearch import Trainer
    from mtlsearch.trainer import NonFiniteLossError

    config = {"benchmark": "synthetic", "method": method, "max_epochs": 3, "batch_size": 32, "lr": 0.01, "device": "cpu", **extra}
    trainer = Trainer(config)
    with pytest.raises(NonFiniteLossError) as raised:
        list(trainer.run())
    text = str(raised.value)
    assert message in text and "\n" not in text, text
    if method.startswith("./"):
        assert text.startswith(f"method {method!r} returned") and trainer.epoch == 1, text  # epoch 1 was reported


# ------------------------------------------------------------------------------ row 16 and row 8 (mid-search)
SYNTHETIC = """
name: storage_fault
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 4, max_concurrent_trials: 2}
scheduler: {type: fifo}
searcher: {type: random, seed: 0}
resources: {cpus_per_trial: 1}
params:
  method: gemtl
  p: {uniform: [0.0, 1.0]}
  lr: 0.005
"""


def _run(*cmd: str) -> None:
    import subprocess

    subprocess.run(cmd, check=True, capture_output=True)


def _break_storage(store: Path, how: str) -> None:
    """The storage made read-only (a read-only bind mount: root ignores file modes) or filled up."""
    import os

    if how == "read-only":
        if os.geteuid() == 0:
            _run("mount", "--bind", str(store), str(store))
            _run("mount", "-o", "remount,ro,bind", str(store))
        else:
            _run("chmod", "-R", "a-w", str(store))
        return
    # A small tmpfs: write until the device is full.  Unbuffered, so that closing the file has nothing
    # left to write (a buffered file raised ENOSPC again on close when the last write was partial).
    with open(store / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_row16_results_that_cannot_be_saved_end_the_search_like_sigterm(tmp_path, how):
    """The storage breaks while the trials run (held at their first step by a method of the test's own, so
    their first checkpoint is the first write after it): the launcher stops the search, marks the runs,
    says where, why and what to do with the resume command, and exits 1; no traceback, no ranking."""
    import os
    import re
    import shutil
    import subprocess
    import tempfile
    import time

    from mlflow.tracking import MlflowClient
    from helpers.shared_search import processes_with_env

    from mtlsearch.tracking import TAG_ERROR, TAG_KIND, TAG_STATUS

    root = os.geteuid() == 0
    if how == "full" and not root:
        pytest.skip("filling a disk needs a small tmpfs, which only root can mount")
    from helpers.held import held_method

    hold = tmp_path / "hold"
    (tmp_path / "space.yaml").write_text(SYNTHETIC.replace("method: gemtl", f"method: {held_method(tmp_path, hold)}"))
    (hold / "armed").touch()
    store = tmp_path / "ray"
    store.mkdir()
    mounted = []
    if how == "full":
        _run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(store))
        mounted.append(store)
    ray_tmp = tempfile.mkdtemp(prefix="mtlst", dir="/tmp")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
        "RAY_TMPDIR": ray_tmp,
        # The 8 MB device must pass the start-of-search free-space check (100 MB by default, tests/integration/test_preflight_faults.py):
        # this test is about the disk filling while the search runs.
        "MTLSEARCH_MIN_FREE_MB": "1",
    }
    env.pop("RAY_ADDRESS", None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = tmp_path / "log.txt"
    argv = ["--space", "space.yaml", "--storage", str(store), "--tracking-uri", uri, "--name", "s"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsearch.launch", *argv], cwd=tmp_path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.time() + 300
        while not any(hold.glob("*.held")):
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        _break_storage(store, how)
        if how == "read-only" and root:
            mounted.append(store)
        (hold / "release").write_text("")
        code = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
        for path in mounted:
            subprocess.run(["umount", str(path)])
        if how == "read-only" and not root:
            subprocess.run(["chmod", "-R", "u+w", str(store)])
        for pid in processes_with_env(f"RAY_TMPDIR={ray_tmp}"):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = log.read_text()
    assert code == 1, text[-3000:]
    why = "the file system is read-only" if how == "read-only" and root else "no space left" if how == "full" else "cannot be written"
    message = re.search(r"^error: the search's results cannot be saved in (\S+): (.*)$", text, re.M)
    assert message and message.group(1) == str(store / "s") and why in message.group(2), text[-3000:]
    assert "free space on that disk" in message.group(2) if how == "full" else "make the folder writable again" in message.group(2)
    assert re.search(r"\n  python -m mtlsearch\.launch .*--resume --name s\n", text), text[-3000:]
    assert "Traceback" not in text and "Best trials" not in text and "Trials did not complete" not in text, text[-3000:]
    # A trial whose checkpoint failed before the launcher's own check may end ERRORED first: its one line says why.
    errored = [line for line in text.splitlines() if " ERRORED" in line]
    assert all("No space left on device" in line or "Read-only file system" in line for line in errored), errored
    assert "0 errored" not in text and message.group(2).count("errored") == (1 if errored else 0), message.group(2)

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("storage_fault")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]
    (parent,) = [r for r in runs if r.data.tags.get(TAG_KIND) == "search"]
    assert parent.info.status == "FAILED" and "cannot be saved" in parent.data.tags[TAG_ERROR]
    assert len(trials) == 2 and all(r.info.status in ("KILLED", "FAILED") for r in trials), [r.info.status for r in trials]
    assert all("cannot be saved" in r.data.tags.get(TAG_ERROR, "") or "Errno" in r.data.tags.get(TAG_ERROR, "") for r in trials)
    assert all(r.data.tags[TAG_STATUS] in ("interrupted", "errored") for r in trials)


def test_row14_a_nan_method_search_prints_one_plain_line_per_errored_trial(nan_dir):
    """The search of issue 26 row 14 (a method plugin returning NaN weights from epoch 2), run as a user
    runs it: one progress line per errored trial naming the method's weights, no Ray traceback, no
    "ASHA saved" under fifo, and MLflow error tags in plain text."""
    import os
    import shutil
    import subprocess
    import tempfile

    from mlflow.tracking import MlflowClient
    from helpers.shared_search import processes_with_env

    from mtlsearch.tracking import TAG_ERROR, TAG_KIND, TAG_STATUS

    (nan_dir / "space.yaml").write_text(
        SYNTHETIC.replace("name: storage_fault", "name: nan_method")
        .replace("method: gemtl\n  p: {uniform: [0.0, 1.0]}", "method: ./nanmethods.py:NaNWeights\n  seed: {choice: [1, 2]}")
        .replace("max_epochs: 4", "max_epochs: 3")
    )
    ray_tmp = tempfile.mkdtemp(prefix="mtlsn", dir="/tmp")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
        "RAY_TMPDIR": ray_tmp,
    }
    env.pop("RAY_ADDRESS", None)
    uri = f"sqlite:///{nan_dir / 'mlflow.db'}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mtlsearch.launch", "--space", "space.yaml", "--storage", str(nan_dir / "ray"), "--tracking-uri", uri],
            cwd=nan_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        for pid in processes_with_env(f"RAY_TMPDIR={ray_tmp}"):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = done.stdout + done.stderr
    errored = [line for line in text.splitlines() if " ERRORED" in line]
    assert len(errored) == 2, text[-4000:]
    for line in errored:
        assert line.split(" ERRORED: ", 1)[1].startswith("NonFiniteLossError: method "), line
        assert "NaNWeights' returned non-finite weights at epoch 2, step 5, from finite losses" in line, line
    assert "Traceback" not in text and "ASHA" not in text and "Trial task failed" not in text, text[-4000:]
    assert "Trials did not complete" not in text, text[-4000:]
    assert done.returncode == 1 and "error: all 2 trials of the search errored" in text, text[-4000:]  # faults.all_errored

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("nan_method")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TAG_KIND) == "trial"]
    assert len(trials) == 2 and all(r.data.tags[TAG_STATUS] == "errored" for r in trials)
    for run in trials:
        tag = run.data.tags[TAG_ERROR]
        assert "returned non-finite weights at epoch 2, step 5" in tag and "\x1b" not in tag, tag[-500:]


def test_row16_the_storage_watch_tells_a_storage_failure_from_other_errors(tmp_path):
    """What ends a search as a storage failure: a failed write in its folder, or an exception out of Ray
    Tune whose text says the device is full or read-only; any other error is not one (and is raised)."""
    from mtlsearch.faults import StorageWatch

    stops = []
    watch = StorageWatch(tmp_path, lambda: stops.append(1))
    assert watch.probe() is None and list(tmp_path.iterdir()) == []  # the check leaves nothing behind
    assert watch.explain(ValueError("a bug of ours")) is None and watch.failure is None
    why = watch.explain(OSError(28, "Cannot write 'state.pt'. Detail: [errno 28] No space left on device"))
    assert why == "no space left on the device (ENOSPC, seen by Ray Tune)" and watch.failure == why
    assert stops == []  # Tune already stopped: explain() only records why

    watch = StorageWatch(tmp_path, lambda: stops.append(1), check_s=0.0)
    watch.folder = tmp_path / "gone" / "deeper"  # not a storage failure (Ray reports its own)
    watch.check()
    assert watch.failure is None and stops == []


def test_row16_the_storage_watch_callback_pickles_as_an_inert_callback(tmp_path):
    """Ray Tune pickles a Tuner's callbacks (the confirmation phase's Tuner is made while the launcher's
    stop holds a lock): the watch's callback pickles, and comes back as a callback that does nothing."""
    import threading

    from ray import cloudpickle
    from ray.tune import Callback

    from mtlsearch.faults import StorageWatch

    lock = threading.Lock()
    watch = StorageWatch(tmp_path, lambda: lock.acquire())
    restored = cloudpickle.loads(cloudpickle.dumps(watch.callback))
    assert type(restored) is Callback
