"""A user's own benchmark and method (``path/file.py:Class``, ``module:Class``): bad ones are refused
before any trial with one line naming the file; good ones train like the built-in ones."""

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mtlsearch import launch, spaces
from mtlsearch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

TASKS = '''
import torch
from torch import nn
from torch.utils.data import Dataset

from mtlsearch.benchmarks import Benchmark, HPSModel, TaskSpec
from mtlsearch.metrics import AccuracyMeter, MeanMeter


class Items(Dataset):
    def __init__(self, n, dim, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x[:, :2].sum(1)
        self.c = (self.x[:, 2] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {"a": self.y[i], "b": self.c[i]}


class Net(nn.Module):
    def __init__(self, tasks=("a", "b")):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.out = nn.ModuleDict({t: nn.Linear(16, {"a": 1, "b": 2}[t]) for t in tasks})

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def forward(self, x):
        z = self.trunk(x)
        return {t: layer(z).squeeze(-1) if t == "a" else layer(z) for t, layer in self.out.items()}


class Good(Benchmark):
    direction = "min"
    dim = 8
    options = {"num_workers": 0}

    def task_specs(self):
        return [TaskSpec("a", nn.functional.mse_loss, {"mse": self.direction}, lambda: MeanMeter({"mse": nn.functional.mse_loss})),
                TaskSpec("b", nn.functional.cross_entropy, {"accuracy": "max"}, AccuracyMeter)]

    def load_splits(self, data_seed):
        val = Items(8, 8, data_seed + 1)  # given as in-memory tensors
        return {"train": Items(24, self.dim, data_seed), "val": (val.x, {"a": val.y, "b": val.c}),
                "test": Items(8, 8, data_seed + 2)}

    def build_model(self, task_names):
        return Net(tuple(task_names))


class GoodHPS(Good):
    """The same network as an encoder and heads (for comparing the two model forms)."""

    def build_model(self, task_names):
        net = Net(tuple(task_names))
        heads = {t: (nn.Sequential(net.out[t], Squeeze()) if t == "a" else net.out[t]) for t in task_names}
        return HPSModel(net.trunk, heads)


class Squeeze(nn.Module):
    def forward(self, x):
        return x.squeeze(-1)


class MissingTask(Good):
    def build_model(self, task_names):
        return Net(("a",))


class NoDirection(Good):
    direction = None


class WrongShapes(Good):
    dim = 7


class NoShared(Good):
    def build_model(self, task_names):
        return nn.Linear(8, 1)


class NotABenchmark:
    pass
'''

METHOD = '''
import torch

from mtlsearch.balancing import Balancing, GradBalancing, GradResult, HParam, LossBalancing


class SoftMax(LossBalancing):
    hyperparams = {"temperature": HParam(float, 1.0, "", lambda v: v > 0, "a number > 0")}

    def forward(self, losses):
        return self.temperature * torch.logsumexp(losses / self.temperature, dim=0)


class InverseNorm(GradBalancing):
    """A user's gradient-level method: weights 1 / ||g_t|| (normalised to sum to 1)."""
    default_mode = "param"

    def forward(self, grads, losses):
        w = 1.0 / grads.norm(dim=1).clamp(min=1e-12)
        return GradResult(weights=w / w.sum())


class Undeclared(LossBalancing):
    hyperparams = {"temperature": 1.0}

    def forward(self, losses):
        return losses.sum()


class Crashes(LossBalancing):
    def forward(self, losses):
        return losses[5]
'''


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "mytasks.py").write_text(TASKS)
    (tmp_path / "mymethods.py").write_text(METHOD)
    (tmp_path / "broken.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    # Each test has its own files of the same names: forget the ones imported (one process, one set in real use).
    from mtlsearch import plugins

    plugins._CACHE.clear()
    plugins._LOCATIONS.clear()
    for name in [n for n, m in sys.modules.items() if str(tmp_path) in str(getattr(m, "__file__", "") or "")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p != str(tmp_path)]


def space_file(folder: Path, benchmark: str, method: str = "ew", extra: str = "") -> Path:
    path = folder / "space.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: plug
        benchmark: {benchmark}
        objective: {{metric: val/b/accuracy, mode: max}}
        budget: {{num_samples: 2, max_epochs: 2}}
        params:
          method: {method}
          lr: {{loguniform: [1.0e-3, 1.0e-2]}}
        {extra}
    """)
    )
    return path


def line_of(text: str, source: str = TASKS) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


BAD = [
    # (benchmark, method, what the one line must say, the file it must name)
    ("no_such_pkg.tasks:Bench", "ew", "cannot import module 'no_such_pkg.tasks'", "no_such_pkg.tasks"),
    ("./nope.py:Bench", "ew", "no such file", "nope.py"),
    ("./broken.py:Bench", "ew", "importing it failed: RuntimeError: no GPU here", "broken.py:2"),
    ("./mytasks.py:Missing", "ew", "has no class 'Missing'; its Benchmark classes: Good, GoodHPS", "mytasks.py"),
    ("./mytasks.py:NotABenchmark", "ew", "not a subclass of mtlsearch.benchmarks.Benchmark", "mytasks.py"),
    ("./mytasks.py:Items", "ew", "'Items' is a class Items, not a subclass", "mytasks.py"),
    ("./mytasks.py:MissingTask", "ew", "the model's outputs miss task(s) ['b']", "mytasks.py"),
    (
        "./mytasks.py:NoDirection",
        "ew",
        "metric 'mse' has direction None; give 'min' (lower is better) or 'max'",
        "mytasks.py:%d" % line_of('TaskSpec("a"'),
    ),
    (
        "./mytasks.py:WrongShapes",
        "ew",
        "a first training batch (inputs shape (2, 7) float32) through the model failed",
        f"mytasks.py:{line_of('z = self.trunk(x)')}",
    ),
    ("./mytasks.py:NoShared", "ew", "does not say which parameters are shared", "mytasks.py"),
    ("./mytasks.py:Good", "./mymethods.py:Undeclared", "hyperparams['temperature'] must be HParam", "mymethods.py"),
    ("./mytasks.py:Good", "./mytasks.py:Good", "not a subclass of mtlsearch.balancing.Balancing", "mytasks.py"),
    ("./mytasks.py:Good", "./mymethods.py:Crashes", "a first training step (method", f"mymethods.py:{line_of('losses[5]', METHOD)}"),
    ("./mytasks.py:Good", "pcgrad", "cannot use grad_mode 'rep'; set grad_mode: param", "mytasks.py"),
]


@pytest.mark.parametrize("benchmark,method,message,file", BAD, ids=[b[2][:40] for b in BAD])
def test_a_bad_plugin_gets_one_line_naming_the_file_and_exit_2_before_any_trial(plugin_dir, capsys, benchmark, method, message, file):
    space = space_file(plugin_dir, benchmark, method, extra="  grad_mode: rep" if method == "pcgrad" else "")
    code = launch.main(["--space", str(space), "--tracking-uri", f"sqlite:///{plugin_dir / 'm.db'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and message in err[0] and file in err[0], err[0]
    assert any(f"{field}: " in err[0] for field in ("benchmark", "method", "grad_mode", "task_specs"))
    # before any trial: neither Ray's results nor an MLflow store was written
    assert sorted(p.name for p in plugin_dir.iterdir() if not p.name.startswith("__")) == [
        "broken.py",
        "mymethods.py",
        "mytasks.py",
        "space.yaml",
    ]


def test_a_good_plugin_passes_the_checks_under_the_names_written_in_the_space(plugin_dir):
    from mtlsearch import plugins

    space = space_file(
        plugin_dir,
        "./mytasks.py:Good",
        "{choice: [ew, ./mymethods.py:SoftMax]}",
        extra="  temperature: {uniform: [0.5, 2.0], when: {method: ./mymethods.py:SoftMax}}",
    )
    args = launch.build_parser().parse_args(["--space", str(space)])
    prepared = launch.prepare_space(args)
    assert prepared.benchmark == "./mytasks.py:Good"  # stored as written, never an absolute machine path
    method = next(p for p in prepared.params if p.name == "method")
    temperature = next(p for p in prepared.params if p.name == "temperature")
    assert method.args == ["ew", "./mymethods.py:SoftMax"]
    assert temperature.when == {"method": "./mymethods.py:SoftMax"}  # the condition still holds
    # where the trials load them from (trials run in their own working directories)
    assert plugins._LOCATIONS["./mytasks.py:Good"] == f"{plugin_dir / 'mytasks.py'}:Good"
    assert plugins._LOCATIONS["./mymethods.py:SoftMax"] == f"{plugin_dir / 'mymethods.py'}:SoftMax"


def _project(plugin_dir: Path) -> tuple[Path, Path]:
    """A user's project: package ``mybench`` (tasks, method) in ``proj/``, a space in ``proj/spaces/``
    naming the method by module in one place and by path in the other; the launcher runs from ``proj/``."""
    proj = plugin_dir / "proj"
    (proj / "mybench").mkdir(parents=True)
    (proj / "mybench" / "__init__.py").write_text("")
    (proj / "mybench" / "tasks.py").write_text(TASKS)
    (proj / "mybench" / "method.py").write_text(METHOD)
    (proj / "spaces").mkdir()
    return proj, proj / "spaces"


def _method_names(prepared) -> tuple[list, dict]:
    method = next(p for p in prepared.params if p.name == "method")
    temperature = next(p for p in prepared.params if p.name == "temperature")
    return method.args, temperature.when


def test_a_class_passed_to_the_api_matches_the_space_s_module_name(plugin_dir, monkeypatch):
    """``search(..., method=Cls)`` with the class imported from a package the launcher's directory holds:
    the same name as the space's ``when: {method: mybench.method:SoftMax}`` (the condition holds)."""
    from mtlsearch.api import search_argv

    proj, spaces_dir = _project(plugin_dir)
    monkeypatch.chdir(proj)
    monkeypatch.syspath_prepend(str(proj))
    from mybench.method import SoftMax
    from mybench.tasks import Good

    space = space_file(
        spaces_dir, "mybench.tasks:Good", extra="  temperature: {uniform: [0.5, 2.0], when: {method: mybench.method:SoftMax}}"
    )
    argv = search_argv(str(space), benchmark=Good, method=SoftMax)
    assert argv == ["--space", str(space), "--benchmark", "mybench.tasks:Good", "--set", "params.method=mybench.method:SoftMax"]
    prepared = launch.prepare_space(launch.build_parser().parse_args(argv))
    assert prepared.benchmark == "mybench.tasks:Good"
    assert _method_names(prepared) == ("mybench.method:SoftMax", {"method": "mybench.method:SoftMax"})
    assert [c["temperature"] is not None for c in prepared.probe_configs()] == [True] * len(prepared.probe_configs())


def test_a_class_passed_to_the_api_matches_the_space_s_path_and_is_stored_relative(plugin_dir, monkeypatch):
    """The same class imported from its folder (not importable from the launcher's directory) while the
    space names it by a path relative to the space file: the space's name; a benchmark class the space
    does not name: its path relative to the space file, never the absolute one."""
    from mtlsearch import plugins
    from mtlsearch.api import search_argv

    proj, spaces_dir = _project(plugin_dir)
    elsewhere = plugin_dir / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.syspath_prepend(str(proj / "mybench"))
    from method import SoftMax  # the user's module, imported from its own folder
    from tasks import Good

    space = space_file(
        spaces_dir,
        "mytasks.py:Good",  # replaced by the API's benchmark
        "../mybench/method.py:SoftMax",
        extra="  temperature: {uniform: [0.5, 2.0], when: {method: ../mybench/method.py:SoftMax}}",
    )
    argv = search_argv(str(space), benchmark=Good, method=SoftMax)
    assert argv[3] == f"{proj / 'mybench' / 'tasks.py'}:Good"  # what the launcher is handed: the file
    prepared = launch.prepare_space(launch.build_parser().parse_args(argv))
    assert prepared.benchmark == "../mybench/tasks.py:Good"  # relative to the space file
    assert _method_names(prepared) == ("../mybench/method.py:SoftMax", {"method": "../mybench/method.py:SoftMax"})
    assert all(c["temperature"] is not None for c in prepared.probe_configs())
    assert str(plugin_dir) not in repr(prepared.params) + prepared.benchmark
    # the names load from anywhere in this process (the trials get the same locations: with_locations)
    from mtlsearch.balancing import get_method
    from mtlsearch.benchmarks import benchmark_class

    assert get_method("../mybench/method.py:SoftMax").__name__ == "SoftMax"
    assert benchmark_class("../mybench/tasks.py:Good").__name__ == "Good"
    assert plugins.plugin_name(SoftMax, spaces_dir) == "../mybench/method.py:SoftMax"  # one function, both ways
    assert plugins.plugin_name("../mybench/method.py:SoftMax", spaces_dir, ["mybench.method:SoftMax"]) == "../mybench/method.py:SoftMax"


def test_set_overrides_are_validated_like_the_file(plugin_dir, capsys):
    space = space_file(plugin_dir, "./mytasks.py:Good")
    loaded = spaces.load_space(
        str(space), validate=False, sets=["budget.num_samples=5", "params.lr.uniform=[0.001, 0.01]", "params.seed=3"]
    )
    assert loaded.num_samples == 5 and "# --set budget.num_samples=5" in loaded.text
    params = {p.name: p for p in loaded.params}
    assert (params["lr"].kind, params["lr"].args, params["seed"].args) == ("uniform", [0.001, 0.01], 3)
    for sets, message in [
        # An error about a key a --set wrote names the --set, not the file (issue 25).
        (["budget.num_samples=0"], "error: --set budget.num_samples=0: must be > 0"),
        (["params.lr.loguniform=[0, 1]"], "error: --set params.lr.loguniform=[0, 1]: loguniform needs 0 < low < high"),
        (["params.seed=3", "params.method=nope"], "error: --set params.method=nope: unknown method 'nope'; choose one of "),
        (["params.lr=-1"], "error: --set params.lr=-1: must be > 0, got -1"),
        (["budgets.num_samples=3"], "--set: 'budgets.num_samples=3': unknown key 'budgets'"),
        (["budget.num_samples"], "--set: expected KEY.PATH=VALUE"),
    ]:
        code = launch.main(["--space", str(space), *[a for s in sets for a in ("--set", s)]])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (sets, err)


def test_a_module_plugin_and_a_plugin_shipped_without_its_path_are_found(plugin_dir, monkeypatch):
    from mtlsearch.balancing import get_method
    from mtlsearch.benchmarks import benchmark_class
    from mtlsearch.plugins import ship_paths

    monkeypatch.syspath_prepend(str(plugin_dir))
    assert benchmark_class("mytasks:Good").__name__ == "Good"
    # A Ray worker of a remote cluster lacks the driver's path; py_modules put the file on its sys.path.
    assert get_method("/elsewhere/on/the/driver/mymethods.py:SoftMax").__name__ == "SoftMax"
    assert ship_paths(["mytasks:Good", "./mymethods.py:SoftMax", "ew"]) == [
        str(plugin_dir / "mytasks.py"),
        str(plugin_dir / "mymethods.py"),
    ]
    assert ship_paths(["yaml:SafeLoader"]) == []  # installed: the nodes' environment has it


def _train(spec, method, **extra):
    from mtlsearch import Trainer

    trainer = Trainer({"benchmark": spec, "method": method, "max_epochs": 2, "batch_size": 8, "lr": 0.01, "device": "cpu", **extra})
    results = list(trainer.run())
    return trainer, results


@pytest.mark.parametrize(
    "method,extra",
    [
        ("ew", {}),
        ("pcgrad", {}),
        ("imtl_g", {"grad_mode": "param"}),
        ("imtl_l", {"optimizer": "adam_adatask"}),
        ("./mymethods.py:InverseNorm", {}),
    ],
)
def test_a_model_returning_one_output_per_task_trains_as_its_encoder_and_heads_form(plugin_dir, method, extra):
    """The same network given as any nn.Module with shared_parameters() and as an HPSModel: the same
    training, so the task-specific parameters get exactly their task's gradient on every path."""
    outputs, results = _train("./mytasks.py:Good", method, **extra)
    hps, hps_results = _train("./mytasks.py:GoodHPS", method, **extra)
    assert type(outputs.model).__name__ == "OutputsModel" and type(hps.model).__name__ == "HPSModel"
    assert results[-1].keys() == hps_results[-1].keys()
    for key, value in hps_results[-1].items():
        assert results[-1][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    before = dict(_train("./mytasks.py:Good", method, **{**extra, "max_epochs": 1})[0].model.named_parameters())
    for name, p in outputs.model.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} was not trained"


def test_user_benchmark_references_live_beside_its_module(plugin_dir):
    from mtlsearch.references import __main__ as refs
    from mtlsearch.references import load_reference

    assert refs.main(["--benchmark", "./mytasks.py:Good", "--epochs", "1", "--lrs", "0.01", "--seeds", "0"]) == 0
    written = plugin_dir / "Good.references.json"
    assert written.is_file() and '"benchmark": "Good"' in written.read_text()
    assert "--benchmark ./mytasks.py:Good" in written.read_text()
    ref = load_reference(f"{plugin_dir / 'mytasks.py'}:Good", ["a", "b"])
    assert set(ref) == {"val", "test"} and set(ref["val"]["a"]) == {"mse"}
    _, results = _train("./mytasks.py:Good", "ew")
    assert "val/delta_m" in results[-1] and "test/delta_m" in results[-1]


def test_python_api_arguments(plugin_dir):
    from mtlsearch.api import search_argv

    sys.path.insert(0, str(plugin_dir))
    try:
        import mymethods
        import mytasks
    finally:
        sys.path.remove(str(plugin_dir))
    argv = search_argv(
        "space.yaml",
        benchmark=mytasks.Good,
        method=mymethods.SoftMax,
        num_samples=3,
        budget__max_epochs=4,
        params__lr={"loguniform": [0.0001, 0.01]},
        **{"scheduler.type": "fifo"},
    )
    assert argv == [
        "--space",
        "space.yaml",
        "--benchmark",
        "mytasks:Good",  # importable from the working directory: by module
        "--num-samples",
        "3",
        "--set",
        "params.method=mymethods:SoftMax",
        "--set",
        "budget.max_epochs=4",
        "--set",
        "params.lr={loguniform: [0.0001, 0.01]}",
        "--set",
        "scheduler.type=fifo",
    ]
    with pytest.raises(ConfigError, match="defined in __main__"):
        search_argv("space.yaml", benchmark=type("Local", (), {"__module__": "__main__"}))


def test_what_a_remote_cluster_is_sent(plugin_dir, monkeypatch):
    """A remote cluster gets the user's files as py_modules, except what a Ray job's working directory holds."""
    from mtlsearch.plugins import runtime_env

    space = space_file(plugin_dir, "./mytasks.py:Good", "{choice: [ew, ./mymethods.py:SoftMax]}")
    args = launch.build_parser().parse_args(["--space", str(space)])
    prepared = launch.prepare_space(args)
    files = [str(plugin_dir / "mytasks.py"), str(plugin_dir / "mymethods.py")]
    assert runtime_env(prepared, remote=False, in_job=False) is None  # a local Ray shares this machine's files
    assert runtime_env(prepared, remote=True, in_job=False) == {"py_modules": files}
    assert runtime_env(prepared, remote=True, in_job=True) is None  # under the job's working directory
    assert runtime_env(prepared, remote=True, in_job=True, cwd=str(plugin_dir / "elsewhere")) == {"py_modules": files}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # inside a job: paths stay relative to its directory
    from mtlsearch import plugins

    assert launch.prepare_space(args).benchmark == "./mytasks.py:Good"
    assert plugins._LOCATIONS["./mytasks.py:Good"] == "mytasks.py:Good"


def test_python_api_quiet_and_its_errors_name_the_keyword_argument(tmp_path, monkeypatch):
    """``search(..., quiet=True)`` is the launcher's ``--quiet``; bad input names the keyword argument
    (not the ``--set`` it becomes) and lists the launcher options a keyword may also be."""
    import mtlsearch
    from mtlsearch.api import search_argv

    assert search_argv("gemtl_p", quiet=True) == ["--space", "gemtl_p", "--quiet"]
    assert search_argv("gemtl_p", quiet=False) == ["--space", "gemtl_p"]
    monkeypatch.chdir(tmp_path)
    for kwargs, message in [
        ({"budget__num_samples": 0}, "search(..., budget__num_samples=...): must be > 0, got 0"),
        ({"method": "nope"}, "search(method=...): unknown method 'nope'; choose one of "),
        ({"num_sample": 3}, "search(..., num_sample=...): 'num_sample=3': unknown key 'num_sample'; allowed: "),
    ]:
        with pytest.raises(ConfigError) as err:
            mtlsearch.search("gemtl_p", quiet=True, **kwargs)
        assert str(err.value).startswith(message), str(err.value)
        assert "--set" not in str(err.value)
    assert "or a launcher option: address, cpus_per_trial, " in str(err.value) and "num_samples" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before anything was written


def test_a_misspelt_module_file_or_class_gets_a_did_you_mean(plugin_dir, monkeypatch):
    from mtlsearch.balancing import Balancing
    from mtlsearch.benchmarks import Benchmark
    from mtlsearch.plugins import load_class

    monkeypatch.chdir(plugin_dir)
    monkeypatch.syspath_prepend(str(plugin_dir))
    for spec, base, hint in [
        (
            "mytask:Good",
            Benchmark,
            "no module named 'mytask' on the Python path (run from the folder that holds it, or install it); did you mean 'mytasks'?",
        ),
        (
            "mytasks:Goo",
            Benchmark,
            "has no class 'Goo'; its Benchmark classes: Good, GoodHPS, MissingTask, NoDirection, NoShared, WrongShapes; did you mean 'Good'?",
        ),
        ("./mymethod.py:SoftMax", Balancing, "no such file (from './mymethod.py:SoftMax'); did you mean 'mymethods.py'?"),
        ("mtlsearch.benchmarks.multidigit:MultiDigits", Benchmark, "did you mean 'mtlsearch.benchmarks.multidigits'?"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_class(spec, base, "method" if base is Balancing else "benchmark")
        assert hint in str(err.value), str(err.value)
    with pytest.raises(ConfigError) as err:  # nothing close: no guess
        load_class("mytasks:Zzzzzz", Benchmark, "benchmark")
    assert "did you mean" not in str(err.value)
