"""Search-space YAML files: loading, validation, and translation into Ray Tune / Optuna terms.

A space file (``search_spaces/<name>.yaml``)::

    name: gemtl_p
    description: GeMTL exponent p and learning rate on multidigits
    benchmark: multidigits
    objective: {metric: val/delta_m, mode: max}
    budget: {num_samples: 16, max_epochs: 12}
    scheduler: {type: asha, grace_period: 2, reduction_factor: 3}
    searcher: {type: optuna, sampler: tpe, seed: 0}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0}
    params:
      method: gemtl                               # a constant
      p: {uniform: [-2.0, 4.0]}                   # a distribution
      lr: {loguniform: [1.0e-4, 3.0e-2]}
      cagrad_c: {uniform: [0.1, 0.9], when: {method: cagrad}}   # conditional (optuna only)

Distributions: ``uniform [lo, hi]``, ``loguniform [lo, hi]`` (0 < lo), ``quniform [lo, hi, q]``,
``randint [lo, hi)``, ``choice [values]``, ``grid [values]`` (every value, crossed with the samples,
under either searcher; not conditional), and ``simplex: tasks`` (a list of one weight per task of the
trial, uniform on the simplex: ``static_weights: {simplex: tasks, when: {method: static}}``; or
``simplex: N`` for N weights).  ``method: {choice: all}`` / ``{grid: all}`` is every registered
method; a method ``choice`` is dealt to the methods in turn, so each gets the same number of trials
(:mod:`mtlsearch.fairness`).  A constant may also be written ``{value: X, when: {...}}``.
Unknown keys, wrong types and impossible distributions raise :class:`ConfigError` naming the file,
the key and what is allowed.

Multi-objective search (Optuna's multi-objective sampling through Ray Tune): give lists instead of
one metric, or ``tasks`` for every validation metric of every task of the benchmark (directions from
the benchmark's ``lower_is_better``)::

    objective: {metrics: [val/left/accuracy, val/number/mae], modes: [max, min]}
    objective: {metrics: tasks}

Ray's schedulers prune on one scalar, so a multi-objective search has a *scalar* too: it orders the
progress lines and the results table and is what ASHA prunes on.  It is ``scheduler.metric`` /
``scheduler.mode`` (default ``val/delta_m``, ``max``).  Without a ``scheduler`` section a
multi-objective search runs FIFO (every trial to ``max_epochs``), because ASHA's partial results
would enter Optuna's Pareto front as if complete; ``scheduler: {type: asha}`` opts into pruning on
the scalar.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from mtlsearch import fairness
from mtlsearch.errors import ConfigError, choices

if TYPE_CHECKING:
    from importlib.abc import Traversable

    import optuna

SPACE_DIR = Path(__file__).resolve().parent.parent / "search_spaces"  # in a checkout

TOP_KEYS = {
    "name",
    "description",
    "benchmark",
    "objective",
    "budget",
    "scheduler",
    "searcher",
    "resources",
    "params",
    "data_root",
    "final",
    "protocol",
}
FINAL_KEYS = {"seeds", "per", "top"}
OBJECTIVE_KEYS = {"metric", "mode", "metrics", "modes"}
ALL_TASKS = "tasks"  # objective.metrics: every validation metric of every task
BUDGET_KEYS = {"num_samples", "max_epochs", "max_concurrent_trials", "seeds"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor", "brackets", "metric", "mode"}
SCHEDULER_TYPES = ("asha", "fifo")
SEARCHER_KEYS = {"type", "sampler", "seed"}
SEARCHER_TYPES = ("optuna", "random")
SAMPLERS = ("tpe", "random", "cmaes", "qmc", "nsga2")
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial"}
DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice", "grid", "simplex")
ALL_METHODS = "all"  # method: {choice: all} / {grid: all}: every registered method

#: Upper bounds of a search's budget (docs/faults.md).  Ray Tune keeps every trial of a search in the
#: driver's memory and MLflow logs a run per trial, so a typo such as ``num_samples: 1000000000`` would
#: grow the driver until it is killed; the bounds are far above any real search on one cluster and can be
#: raised through the environment for the rare search that needs more.
MAX_NUM_SAMPLES = int(os.environ.get("MTLSEARCH_MAX_NUM_SAMPLES", "10000"))
MAX_EPOCHS = int(os.environ.get("MTLSEARCH_MAX_EPOCHS", "10000"))
MAX_FINAL_SEEDS = 100


def check_limit(value: int, limit: int, env: str | None, *, source: str | None = None, field: str) -> None:
    """Refuse a budget value above its documented bound (one line naming the field and the limit)."""
    if value > limit:
        how = f" (raise it with {env}=N if you really mean it)" if env else ""
        raise ConfigError(
            f"{value} is above the limit of {limit}{how}: Ray Tune keeps every trial in the driver's memory; "
            "see docs/faults.md for the limits",
            source=source,
            field=field,
        )


class _SetLoader(yaml.SafeLoader):
    """YAML for a ``--set`` value: a number written as on a command line (``1e-4``, ``1E5``) is a number, not
    the text YAML 1.1 reads it as (it needs ``1.0e-4``); a quoted ``'1e-4'`` stays text."""


_SetLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Param:
    """One entry of ``params``: a constant (``kind == "value"``) or a distribution."""

    name: str
    kind: str  # "value" or one of DISTRIBUTIONS
    args: Any
    when: Mapping[str, Any] = field(default_factory=dict)

    def active(self, values: Mapping[str, Any]) -> bool:
        return all((values.get(k) in w) if isinstance(w, list) else values.get(k) == w for k, w in self.when.items())

    def candidates(self) -> list[Any]:
        """A few representative values, used to validate every combination before a search starts."""
        if self.kind == "value":
            return [self.args]
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "simplex":
            return [None]  # sized per trial: see SearchSpace.probe_configs
        return [self.args[0]]


def simplex_size(p: Param, values: Mapping[str, Any], bench_tasks: int | None, params: Sequence[Param] = ()) -> int:
    """How many weights a ``simplex`` parameter samples for a trial: N, or one per task of the
    trial (its ``tasks`` subset when set, else every task of the benchmark).  ``params``: the space's
    parameters, for a constant ``tasks`` written after the simplex parameter."""
    if isinstance(p.args, int):
        return p.args
    tasks = values.get("tasks") or next((q.args for q in params if q.name == "tasks" and q.kind == "value" and not q.when), None)
    if tasks:
        return len(tasks)
    assert bench_tasks is not None
    return bench_tasks


def simplex_from_uniforms(u: list[float]) -> list[float]:
    """Uniform draws in [0, 1] -> a point uniform on the simplex (normalised exponentials = Dirichlet(1))."""
    e = [-math.log(max(1.0 - x, 1e-300)) for x in u]
    total = sum(e)
    return [x / total for x in e] if total > 0 else [1.0 / len(u)] * len(u)


def _tune_domain(p: Param) -> Any:
    from ray import tune

    if p.kind == "value":
        return p.args
    return {
        "uniform": lambda: tune.uniform(*p.args),
        "loguniform": lambda: tune.loguniform(*p.args),
        "quniform": lambda: tune.quniform(*p.args),
        "randint": lambda: tune.randint(*p.args),
        "choice": lambda: tune.choice(list(p.args)),
    }[p.kind]()


class ConditionalSample:
    """``tune.sample_from`` body of a conditional parameter (picklable, seeded)."""

    def __init__(self, param: Param, domain: Any, seed: int, bench_tasks: int | None = None):
        import numpy as np

        self.param, self.domain = param, domain
        self.rng = np.random.RandomState(seed)
        self.bench_tasks = bench_tasks

    def __call__(self, spec: Any) -> Any:  # Ray Tune's spec: the trial's config so far in spec.config
        if not self.param.active(spec.config):
            return None
        if self.param.kind == "value":
            return self.domain
        if self.param.kind == "simplex":
            n = simplex_size(self.param, spec.config, self.bench_tasks)
            return [float(x) for x in self.rng.dirichlet([1.0] * n)]
        value = self.domain.sample(random_state=self.rng)
        return value.item() if hasattr(value, "item") else value


class DefineByRun:
    """Samples the space's parameters with an Optuna trial; returns the constants (Ray's contract)."""

    def __init__(self, params: list[Param], base: dict[str, Any], bench_tasks: int | None = None):
        self.params = params
        self.base = base
        self.bench_tasks = bench_tasks

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.base)
        constants: dict[str, Any] = dict(self.base)
        for p in self.params:
            if not p.active(values):
                continue
            if p.kind == "value":
                values[p.name] = constants[p.name] = p.args
            elif p.kind == "uniform":
                values[p.name] = trial.suggest_float(p.name, *p.args)
            elif p.kind == "loguniform":
                values[p.name] = trial.suggest_float(p.name, *p.args, log=True)
            elif p.kind == "quniform":
                lo, hi, q = p.args
                values[p.name] = trial.suggest_float(p.name, lo, hi, step=q)
            elif p.kind == "randint":
                values[p.name] = trial.suggest_int(p.name, p.args[0], p.args[1] - 1)
            elif p.kind in ("choice", "grid"):
                # A grid value (and a method choice) is fixed per trial by the searcher's enqueue_trial
                # (mtlsearch.fairness.strata); the study still sees the whole categorical distribution.
                values[p.name] = trial.suggest_categorical(p.name, list(p.args))
            elif p.kind == "simplex":
                # One uniform per weight, named "<name>/<i>"; the weights themselves are returned as a
                # constant.  Ray's OptunaSearch merges {**sampled, **constants} and unflattens on "/",
                # so the list (the later key) replaces the sampled "<name>/..." entries in the config.
                n = simplex_size(p, values, self.bench_tasks, self.params)
                u = [trial.suggest_float(f"{p.name}/{i}", 0.0, 1.0) for i in range(n)]
                values[p.name] = constants[p.name] = simplex_from_uniforms(u)
            else:
                raise AssertionError(p.kind)
        return constants


@dataclass
class SearchSpace:
    name: str
    path: Path
    text: str
    description: str
    benchmark: str
    metric: str
    mode: str
    num_samples: int
    max_epochs: int
    max_concurrent_trials: int | None
    scheduler: dict[str, Any]
    searcher: dict[str, Any]
    resources: dict[str, float]
    params: list[Param]
    data_root: str | None = None
    #: After the search, re-run the best ``top`` configs of each group (``per``: a parameter name, or
    #: None for one group) with every seed of ``seeds``: ``{"seeds": [...], "per": str|None, "top": int}``.
    final: dict[str, Any] | None = None
    #: Multi-objective search: metric names (or ``"tasks"``) and their modes; None = one objective
    #: (``metric``/``mode``).  When set, ``metric``/``mode`` are the scalar of the scheduler and tables.
    objective_metrics: list[str] | str | None = None
    objective_modes: list[str] | None = None
    #: The published protocol applied (``NAME@VERSION``, see :func:`with_protocol`), the names of the
    #: parameters it added, and whether ``budget.max_epochs`` was given (else the protocol's epochs).
    protocol: str | None = None
    protocol_params: tuple[str, ...] = ()
    epochs_given: bool = True
    #: Seeds each trial trains (``budget.seeds``): the trial reports their mean under the usual metric
    #: names, and ``seed<s>/...``, ``std/...``, ``sem/...`` (:mod:`mtlsearch.multiseed`).
    seeds: int = 1

    # ------------------------------------------------------------------ objectives
    @property
    def multi_objective(self) -> bool:
        return self.objective_metrics is not None

    def objectives(self) -> list[tuple[str, str]]:
        """The searched ``(metric, mode)`` pairs: the one objective, or every one of a multi-objective
        search (``tasks`` expanded from the benchmark's task metrics)."""
        if self.objective_metrics is None:
            return [(self.metric, self.mode)]
        if self.objective_metrics == ALL_TASKS:
            tasks = next((p.args for p in self.params if p.name == "tasks" and p.kind == "value" and not p.when), None)
            return task_objectives(self.benchmark, self.data_root, tasks=tasks)
        return list(zip(self.objective_metrics, self.objective_modes or []))

    def validate_objectives(self) -> None:
        """Every objective of a multi-objective search must be a metric the benchmark reports
        (``<split>/<task>/<metric>`` or ``<split>/delta_m``): Optuna would otherwise receive nothing."""
        if not self.multi_objective:
            return
        from mtlsearch.benchmarks import get_benchmark
        from mtlsearch.metrics import reported_metrics

        specs = get_benchmark(self.benchmark, data_root=self.data_root).task_specs()
        known = {m for m in reported_metrics(specs) if not m.startswith("weights/")}  # a task's weight is no objective
        for metric, _ in self.objectives():
            if metric not in known:
                raise ConfigError(
                    f"{metric!r} is not reported by benchmark {self.benchmark!r}; allowed: {choices(known)}",
                    source=str(self.path),
                    field="objective.metrics",
                )

    # ------------------------------------------------------------------ translation
    def constants(self) -> dict[str, Any]:
        return {p.name: p.args for p in self.params if p.kind == "value" and not p.when}

    def base_config(self) -> dict[str, Any]:
        """Keys every trial gets from the space itself (benchmark, budget, data folder)."""
        out: dict[str, Any] = {"benchmark": self.benchmark, "max_epochs": self.max_epochs}
        if self.seeds > 1:  # one seed: the trial config is what it was before seeds existed
            out["seeds"] = self.seeds
        if self.data_root:
            out["data_root"] = self.data_root
        return out

    def benchmark_tasks(self) -> int | None:
        """The number of tasks of the benchmark, where a ``simplex: tasks`` parameter needs it."""
        if not any(p.kind == "simplex" and p.args == ALL_TASKS for p in self.params):
            return None
        from mtlsearch.benchmarks import BENCHMARKS, get_benchmark

        known = getattr(BENCHMARKS.get(self.benchmark), "options", {})
        options = {k: v for k, v in self.constants().items() if k in known}  # e.g. CelebA's verify_md5
        try:
            return len(get_benchmark(self.benchmark, data_root=self.data_root, **options).task_specs())
        except ConfigError as err:
            raise err.with_source(str(self.path)) from None

    def define_by_run(self) -> "DefineByRun":
        """An Optuna define-by-run function (conditional parameters allowed; picklable for resume)."""
        return DefineByRun(list(self.params), self.base_config(), self.benchmark_tasks())

    def tune_param_space(self) -> dict[str, Any]:
        """A Ray Tune ``param_space`` for the random/grid searcher (Ray's variant generator).

        A conditional parameter becomes a ``tune.sample_from`` that samples its distribution when its
        ``when`` holds for the trial and gives ``None`` (= not set) otherwise."""
        from ray import tune

        out: dict[str, Any] = dict(self.base_config())
        bench_tasks = self.benchmark_tasks()
        for p in self.params:
            if p.kind == "grid":
                out[p.name] = tune.grid_search(list(p.args))
                continue
            if p.kind == "simplex":
                out[p.name] = tune.sample_from(ConditionalSample(p, None, self.searcher["seed"], bench_tasks))
                continue
            if p is fairness.method_axis(self):  # a method choice: the methods in turn (equal budget)
                grids = [g.name for g in self.params if g.kind == "grid"]
                out[p.name] = tune.sample_from(fairness.RoundRobinMethod(p.args, grids, self.searcher["seed"]))
                continue
            domain = _tune_domain(p)
            out[p.name] = tune.sample_from(ConditionalSample(p, domain, self.searcher["seed"])) if p.when else domain
        return out

    def probe_configs(self) -> list[dict[str, Any]]:
        """Representative trial configs covering every combination of choice/grid values."""
        cands = [p.candidates() for p in self.params]
        bench_tasks = self.benchmark_tasks()
        probes = []
        for combo in itertools.product(*cands):
            values: dict[str, Any] = dict(self.base_config())
            for p, v in zip(self.params, combo):
                if p.active(values):
                    if p.kind == "simplex":  # equal weights, as many as the trial samples
                        n = simplex_size(p, values, bench_tasks, self.params)
                        v = [1.0 / n] * n
                    values[p.name] = v
            probes.append(values)
            if len(probes) >= 512:
                break
        return probes

    def validate_trials(self) -> None:
        """Validate representative trial configs, so that a bad space fails before any trial starts."""
        from mtlsearch.config import TrialConfig

        for probe in self.probe_configs():
            TrialConfig.from_dict(probe, source=str(self.path))
        self.validate_objectives()


def task_objectives(
    benchmark: str, data_root: str | None = None, *, tasks: Sequence[str] | None = None, split: str = "val"
) -> list[tuple[str, str]]:
    """``(<split>/<task>/<metric>, "min"|"max")`` for every metric of every task of ``benchmark``."""
    from mtlsearch.benchmarks import get_benchmark

    specs = get_benchmark(benchmark, data_root=data_root).task_specs()
    return [
        (f"{split}/{spec.name}/{metric}", "min" if lower else "max")
        for spec in specs
        if tasks is None or spec.name in tasks
        for metric, lower in spec.metrics.items()
    ]


# ---------------------------------------------------------------------- loading
def _bundled_dir() -> Traversable | None:
    try:
        return resources.files("mtlsearch.search_spaces")
    except ModuleNotFoundError:  # pragma: no cover - running from a checkout without the package
        return None


def available_spaces() -> list[str]:
    names: set[str] = set()
    if SPACE_DIR.is_dir():
        names.update(p.stem for p in SPACE_DIR.glob("*.yaml"))
    bundled = _bundled_dir()
    if bundled is not None:
        names.update(Path(str(e.name)).stem for e in bundled.iterdir() if str(e.name).endswith(".yaml"))
    return sorted(names)


def find_space(name_or_path: str) -> Path:
    """``NAME`` -> ``search_spaces/NAME.yaml`` (checkout, then installed package); else a file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not path.is_file():
            raise ConfigError(f"no such file {name_or_path!r}", field="--space")
        return path.resolve()
    local = SPACE_DIR / f"{name_or_path}.yaml"
    if local.is_file():
        return local
    bundled = _bundled_dir()
    if bundled is not None:
        entry = bundled.joinpath(f"{name_or_path}.yaml")
        if entry.is_file():
            return Path(str(entry))
    raise ConfigError(
        f"unknown search space {name_or_path!r}; available: {', '.join(available_spaces())} (or give the path of a .yaml file)",
        field="--space",
    )


def _check_keys(section: Mapping[str, Any], allowed: set[str], where: str, source: str) -> None:
    unknown = set(section) - allowed
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}", source=source, field=f"{where}{key}")


def _mapping(value: Any, field_name: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {type(value).__name__} {value!r}", source=source, field=field_name)
    return dict(value)


def _number(value: Any, field_name: str, source: str, *, integer: bool = False, positive: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        raise ConfigError(f"expected {'an integer' if integer else 'a finite number'}, got {value!r}", source=source, field=field_name)
    if positive and value <= 0:
        raise ConfigError(f"must be > 0, got {value!r}", source=source, field=field_name)
    return value


def _parse_param(name: str, spec: Any, source: str) -> Param:
    field_name = f"params.{name}"
    if not isinstance(spec, Mapping):
        if isinstance(spec, float) and not math.isfinite(spec):
            raise ConfigError(f"must be a finite number, got {spec!r}", source=source, field=field_name)
        return Param(name, "value", spec)
    spec = dict(spec)
    when = spec.pop("when", {}) or {}
    if not isinstance(when, Mapping):
        raise ConfigError(f"'when' must map parameter names to values, got {when!r}", source=source, field=field_name)
    if len(spec) != 1:
        raise ConfigError(
            f"a parameter is a constant or exactly one distribution of {choices(DISTRIBUTIONS)} "
            f"(optionally with 'when'); got keys {sorted(spec)}",
            source=source,
            field=field_name,
        )
    ((kind, args),) = spec.items()
    if kind == "value":
        return Param(name, "value", args, dict(when))
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"unknown distribution {kind!r}; allowed: {choices(DISTRIBUTIONS)} or 'value'", source=source, field=field_name)
    if kind == "simplex":
        if args != ALL_TASKS and (isinstance(args, bool) or not isinstance(args, int) or args < 1):
            raise ConfigError(
                f"simplex takes 'tasks' (one weight per task of the trial) or a number of weights >= 1, got {args!r}",
                source=source,
                field=field_name,
            )
        return Param(name, kind, args, dict(when))
    if kind in ("choice", "grid") and args == ALL_METHODS:
        if name != "method":
            raise ConfigError(f"{kind}: all (every registered method) applies only to params.method", source=source, field=field_name)
        from mtlsearch.balancing import METHODS

        args = list(METHODS)
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(
                f"{kind} needs a non-empty list of values{' or all' if name == 'method' else ''}, got {args!r}",
                source=source,
                field=field_name,
            )
        for v in args:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{kind} values must be finite, got {v!r}", source=source, field=field_name)
        return Param(name, kind, list(args), dict(when))
    want = 3 if kind == "quniform" else 2
    if not isinstance(args, list) or len(args) != want:
        raise ConfigError(
            f"{kind} needs a list of {want} numbers {'[low, high, q]' if want == 3 else '[low, high]'}, got {args!r}",
            source=source,
            field=field_name,
        )
    integer = kind == "randint"
    args = [_number(a, field_name, source, integer=integer) for a in args]
    lo, hi = args[0], args[1]
    if not lo < hi:
        raise ConfigError(f"{kind} needs low < high, got {args!r}", source=source, field=field_name)
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"loguniform needs 0 < low < high, got {args!r}", source=source, field=field_name)
    if kind == "quniform" and args[2] <= 0:
        raise ConfigError(f"quniform needs q > 0, got {args!r}", source=source, field=field_name)
    if kind in ("uniform", "loguniform", "quniform"):
        args = [float(a) for a in args]
    return Param(name, kind, args, dict(when))


def _protocol_epochs(data: Mapping[str, Any], default: int) -> int:
    """The epochs of the space's protocol for its benchmark (the budget's default), else ``default``;
    a bad protocol is reported by :func:`with_protocol`."""
    benchmark = data.get("benchmark")
    if data.get("protocol") is None or not isinstance(benchmark, str):
        return default
    from mtlsearch.protocols import get_protocol

    try:
        return get_protocol(data["protocol"]).epochs(benchmark)
    except ConfigError:
        return default


def parse_space(data: Any, source: str, text: str = "", path: Path | None = None) -> SearchSpace:
    if not isinstance(data, Mapping):
        raise ConfigError(f"a search space is a YAML mapping with keys {', '.join(sorted(TOP_KEYS))}", source=source)
    _check_keys(data, TOP_KEYS, "", source)
    for required in ("benchmark", "params"):
        if required not in data:
            raise ConfigError(f"missing required key {required!r}", source=source, field=required)

    objective = _mapping(data.get("objective"), "objective", source)
    _check_keys(objective, OBJECTIVE_KEYS, "objective.", source)
    metric = objective.get("metric", "val/delta_m")
    mode = objective.get("mode", "max")
    objective_metrics, objective_modes = _parse_objectives(objective, source)
    if objective_metrics is not None and objective_modes is not None and len(objective_metrics) == 1 and objective_metrics != ALL_TASKS:
        (metric,), (mode,) = objective_metrics, objective_modes  # a list of one is one objective
        objective_metrics = objective_modes = None
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"expected a metric name such as 'val/delta_m', got {metric!r}", source=source, field="objective.metric")
    if mode not in ("min", "max"):
        raise ConfigError(f"expected 'min' or 'max', got {mode!r}", source=source, field="objective.mode")

    budget = _mapping(data.get("budget"), "budget", source)
    _check_keys(budget, BUDGET_KEYS, "budget.", source)
    num_samples = _number(budget.get("num_samples", 10), "budget.num_samples", source, integer=True, positive=True)
    max_epochs = _number(budget.get("max_epochs", _protocol_epochs(data, 10)), "budget.max_epochs", source, integer=True, positive=True)
    check_limit(num_samples, MAX_NUM_SAMPLES, "MTLSEARCH_MAX_NUM_SAMPLES", source=source, field="budget.num_samples")
    check_limit(max_epochs, MAX_EPOCHS, "MTLSEARCH_MAX_EPOCHS", source=source, field="budget.max_epochs")
    mct = budget.get("max_concurrent_trials")
    if mct is not None:
        mct = _number(mct, "budget.max_concurrent_trials", source, integer=True, positive=True)
    trial_seeds = budget.get("seeds", 1)
    if type(trial_seeds) is not int or trial_seeds != 1:
        from mtlsearch.config import MAX_SEEDS  # the core's bound (imports torch: only when seeds are asked for)

        if isinstance(trial_seeds, bool) or not isinstance(trial_seeds, int) or not 1 <= trial_seeds <= MAX_SEEDS:
            raise ConfigError(
                f"expected an integer from 1 to {MAX_SEEDS} (seeds trained in each trial), got {trial_seeds!r}",
                source=source,
                field="budget.seeds",
            )

    multi = objective_metrics is not None
    # A multi-objective search without a scheduler section runs FIFO (see the module docstring).
    scheduler: dict[str, Any] = {
        "type": "fifo" if multi and "scheduler" not in data else "asha",
        "grace_period": 1,
        "reduction_factor": 3,
        "brackets": 1,
    }
    sched_in = _mapping(data.get("scheduler"), "scheduler", source)
    _check_keys(sched_in, SCHEDULER_KEYS, "scheduler.", source)
    if not multi and ("metric" in sched_in or "mode" in sched_in):
        raise ConfigError(
            "scheduler.metric/mode set the scalar of a multi-objective search; a single-objective search "
            "prunes on its objective (set objective.metric/mode instead)",
            source=source,
            field="scheduler.metric" if "metric" in sched_in else "scheduler.mode",
        )
    if multi:
        metric, mode = sched_in.pop("metric", "val/delta_m"), sched_in.pop("mode", "max")
        if not isinstance(metric, str) or not metric:
            raise ConfigError(f"expected a metric name such as 'val/delta_m', got {metric!r}", source=source, field="scheduler.metric")
        if mode not in ("min", "max"):
            raise ConfigError(f"expected 'min' or 'max', got {mode!r}", source=source, field="scheduler.mode")
    scheduler.update(sched_in)
    if scheduler["type"] not in SCHEDULER_TYPES:
        raise ConfigError(
            f"unknown scheduler {scheduler['type']!r}; allowed: {choices(SCHEDULER_TYPES)}", source=source, field="scheduler.type"
        )
    for key in ("grace_period", "brackets"):
        _number(scheduler[key], f"scheduler.{key}", source, integer=True, positive=True)
    _number(scheduler["reduction_factor"], "scheduler.reduction_factor", source, positive=True)
    if scheduler["reduction_factor"] <= 1:
        raise ConfigError("must be > 1", source=source, field="scheduler.reduction_factor")
    if scheduler["grace_period"] > max_epochs:
        raise ConfigError(
            f"grace_period {scheduler['grace_period']} exceeds budget.max_epochs {max_epochs}",
            source=source,
            field="scheduler.grace_period",
        )

    searcher = {"type": "optuna", "sampler": "tpe", "seed": 0}
    search_in = _mapping(data.get("searcher"), "searcher", source)
    _check_keys(search_in, SEARCHER_KEYS, "searcher.", source)
    searcher.update(search_in)
    if searcher["type"] not in SEARCHER_TYPES:
        raise ConfigError(
            f"unknown searcher {searcher['type']!r}; allowed: {choices(SEARCHER_TYPES)}", source=source, field="searcher.type"
        )
    if searcher["sampler"] not in SAMPLERS:
        raise ConfigError(f"unknown sampler {searcher['sampler']!r}; allowed: {choices(SAMPLERS)}", source=source, field="searcher.sampler")
    _number(searcher["seed"], "searcher.seed", source, integer=True)
    if multi and searcher["type"] == "optuna" and searcher["sampler"] in SINGLE_OBJECTIVE_SAMPLERS:
        raise ConfigError(
            f"sampler {searcher['sampler']!r} optimises one objective; a multi-objective search needs one of "
            f"{choices(s for s in SAMPLERS if s not in SINGLE_OBJECTIVE_SAMPLERS)}",
            source=source,
            field="searcher.sampler",
        )

    res = {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0}
    res_in = _mapping(data.get("resources"), "resources", source)
    _check_keys(res_in, RESOURCE_KEYS, "resources.", source)
    for key, value in res_in.items():
        _number(value, f"resources.{key}", source)
        if value < 0:
            raise ConfigError(f"must be >= 0, got {value!r}", source=source, field=f"resources.{key}")
        res[key] = float(value)

    raw_params = _mapping(data.get("params"), "params", source)
    params = [_parse_param(str(k), v, source) for k, v in raw_params.items()]
    known = {"benchmark", "max_epochs", "data_root", "seeds"}
    for p in params:
        known.add(p.name)
    for p in params:
        for key in p.when:
            if key not in known:
                raise ConfigError(f"'when' refers to unknown parameter {key!r}", source=source, field=f"params.{p.name}.when")
        if p.kind == "grid" and p.when:
            raise ConfigError(
                "a grid is crossed with every sample, so it cannot depend on another parameter ('when'); "
                "use 'choice' for a conditional parameter",
                source=source,
                field=f"params.{p.name}",
            )
        if p.name in ("benchmark", "max_epochs", "seeds"):
            raise ConfigError(f"set {p.name!r} at the top level / in budget, not in params", source=source, field=f"params.{p.name}")

    final = None
    if data.get("final") is not None:
        final = {"seeds": [1, 2], "per": None, "top": 1}
        final_in = _mapping(data["final"], "final", source)
        _check_keys(final_in, FINAL_KEYS, "final.", source)
        final.update(final_in)
        seeds = final["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
            raise ConfigError(f"expected a non-empty list of integer seeds, got {seeds!r}", source=source, field="final.seeds")
        check_limit(len(seeds), MAX_FINAL_SEEDS, None, source=source, field="final.seeds")
        _number(final["top"], "final.top", source, integer=True, positive=True)
        if final["per"] is not None and final["per"] not in known:
            raise ConfigError(
                f"'per' must name a parameter of the space ({', '.join(sorted(known))}), got {final['per']!r}",
                source=source,
                field="final.per",
            )

    benchmark = data["benchmark"]
    if not isinstance(benchmark, str):
        raise ConfigError(f"expected a benchmark name, got {benchmark!r}", source=source, field="benchmark")
    name = data.get("name") or (path.stem if path else "search")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"a name of letters, digits, '_' and '-', got {name!r}", source=source, field="name")
    space = SearchSpace(
        name=name,
        path=path or Path(source),
        text=text,
        description=str(data.get("description", "")),
        benchmark=benchmark,
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        max_epochs=max_epochs,
        max_concurrent_trials=mct,
        scheduler=scheduler,
        searcher=searcher,
        resources=res,
        params=params,
        data_root=data.get("data_root"),
        objective_metrics=objective_metrics,
        objective_modes=objective_modes,
        final=final,
        epochs_given="max_epochs" in budget,
        seeds=trial_seeds,
    )
    if data.get("protocol") is not None:
        space = with_protocol(space, data["protocol"], source=source)
    return space


def with_protocol(
    space: SearchSpace, tag: Any, *, benchmark: str | None = None, source: str | None = None, field_name: str = "protocol"
) -> SearchSpace:
    """The space under a published protocol (:mod:`mtlsearch.protocols`): the protocol's settings for
    the benchmark become constant parameters beneath the space's own (which win), its method
    settings constants conditional on ``method``, ``budget.max_epochs`` the protocol's unless given,
    and every trial gets ``protocol: NAME@VERSION``.  Applying it again (another benchmark or
    protocol) first removes what the previous one added."""
    from mtlsearch.protocols import get_protocol

    benchmark = benchmark or space.benchmark
    try:
        protocol = get_protocol(tag)
        settings = protocol.settings(benchmark)
        epochs = protocol.epochs(benchmark)
    except ConfigError as err:
        raise ConfigError(err.message, source=source, field=field_name) from None
    own = [p for p in space.params if p.name not in space.protocol_params]
    names = {p.name for p in own}
    if space.metric.startswith("val/") and settings.get("val_fraction") == 0 and "val_fraction" not in names:
        settings["val_fraction"] = 0.1  # a search selects on validation: hold out part of the training folder
    added = [Param(k, "value", v) for k, v in settings.items() if k not in names]
    if "protocol" not in names:
        added.append(Param("protocol", "value", protocol.tag))
    # Conditional on ``method``, so after the space's own parameters (conditions see earlier values).
    # One parameter per (name, value), conditional on the list of methods it applies to: parameters
    # are keyed by name in Ray's param_space, so per-method copies of one name (``grad_mode``) would
    # overwrite each other.
    grouped: dict[tuple[str, str], tuple[Any, list[str]]] = {}
    for m in protocol.methods:
        for k, v in protocol.method_settings(m, benchmark).items():
            if k not in names:
                grouped.setdefault((k, repr(v)), (v, []))[1].append(m)
    per_method = [Param(k, "value", v, {"method": ms if len(ms) > 1 else ms[0]}) for (k, _), (v, ms) in grouped.items()]
    if len({p.name for p in per_method}) != len(per_method):
        raise ConfigError(
            f"protocol {protocol.tag}: a setting takes different values for different methods, which a search space cannot hold",
            source=source,
            field=field_name,
        )
    import dataclasses

    return dataclasses.replace(
        space,
        benchmark=benchmark,
        params=added + own + per_method,
        protocol=protocol.tag,
        protocol_params=tuple(dict.fromkeys(p.name for p in added + per_method)),
        max_epochs=space.max_epochs if space.epochs_given else epochs,
    )


def _parse_objectives(objective: Mapping[str, Any], source: str) -> tuple[Any, list[str] | None]:
    """``objective.metrics``/``modes`` (multi-objective) -> (metrics or "tasks", modes); (None, None) if absent."""
    if "metrics" not in objective and "modes" not in objective:
        return None, None
    if "metric" in objective or "mode" in objective:
        raise ConfigError(
            "give either metric/mode (one objective) or metrics/modes (several), not both",
            source=source,
            field="objective",
        )
    metrics = objective.get("metrics")
    if metrics == ALL_TASKS:
        if "modes" in objective:
            raise ConfigError(
                "'metrics: tasks' takes every task metric's direction from the benchmark; remove 'modes'",
                source=source,
                field="objective.modes",
            )
        return ALL_TASKS, None
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError(
            f"expected a list of metric names (e.g. [val/left/accuracy, val/number/mae]) or 'tasks', got {metrics!r}",
            source=source,
            field="objective.metrics",
        )
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"a metric appears twice in {metrics!r}", source=source, field="objective.metrics")
    modes = objective.get("modes")
    if not isinstance(modes, list) or len(modes) != len(metrics):
        raise ConfigError(
            f"expected a list of {len(metrics)} modes ('min' or 'max'), one per metric, got {modes!r}",
            source=source,
            field="objective.modes",
        )
    for m in modes:
        if m not in ("min", "max"):
            raise ConfigError(f"expected 'min' or 'max', got {m!r}", source=source, field="objective.modes")
    return list(metrics), list(modes)


def apply_sets(data: Any, sets: Any) -> Any:
    """``--set KEY.PATH=VALUE`` overrides applied to the parsed YAML (values are YAML: ``[1e-4, 1e-2]``).

    ``budget.num_samples=50`` sets one key; ``params.lr.loguniform=[1e-4,1e-2]`` makes ``lr`` that
    distribution (replacing its constant or other distribution, keeping its ``when``);
    ``params.lr=0.001`` a constant.  The result is validated like the file."""
    if not sets:
        return data
    data = dict(data) if isinstance(data, Mapping) else data
    if not isinstance(data, dict):
        return data
    for item in sets:
        key, sep, text = str(item).partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"expected KEY.PATH=VALUE such as budget.num_samples=50, got {item!r}", field="--set")
        if not text.strip():
            raise ConfigError(
                f"{item!r}: no value after '=' (an unset shell variable?); give one, as in {key.strip()}=VALUE",
                field="--set",
            )
        try:
            value = yaml.load(text, Loader=_SetLoader)  # a SafeLoader that reads 1e-4 as a number
        except yaml.YAMLError:
            raise ConfigError(f"{item!r}: the value is not valid YAML", field="--set") from None
        if parts[0] not in TOP_KEYS:
            raise ConfigError(f"{item!r}: unknown key {parts[0]!r}; allowed: {', '.join(sorted(TOP_KEYS))}", field="--set")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if parts[0] == "params" and i == 1 and parts[-1] in (*DISTRIBUTIONS, "value"):
                # params.NAME.DIST=ARGS replaces the parameter's distribution, keeping its condition
                when = child.get("when") if isinstance(child, Mapping) else None
                child = {"when": when} if when else {}
            elif not isinstance(child, Mapping):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def load_space(name_or_path: str, *, validate: bool = True, sets: Any = ()) -> SearchSpace:
    """Load and validate a space by name or path (with ``--set`` overrides); raises :class:`ConfigError`."""
    path = find_space(name_or_path)
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"YAML syntax error at {where}{problem}", source=str(path)) from None
    if sets:
        data = apply_sets(data, sets)
        text = text.rstrip("\n") + "\n" + "".join(f"# --set {item}\n" for item in sets)
    try:
        space = parse_space(data, str(path), text, path)
        if validate:
            space.validate_trials()
    except ConfigError as err:
        raise blame_set(err, sets) from None
    return space


def blame_set(err: ConfigError, sets: Any) -> ConfigError:
    """The error attributed to the ``--set KEY=VALUE`` (the last one) that wrote the key it is about,
    e.g. ``--set params.method=nope: unknown method 'nope'; ...``; else unchanged (the file's)."""
    if not err.field:
        return err
    field = err.field
    for item in reversed(list(sets or ())):
        key = str(item).partition("=")[0].strip()
        parts = key.split(".")
        names = {key, ".".join(parts[:2])} | ({parts[1]} if parts[0] == "params" and len(parts) > 1 else set())
        if field in names or key.startswith(field + ".") or field.startswith(key + "."):
            what = "" if field in names else f"{field}: "
            return ConfigError(what + err.message, field=f"--set {item}")
    return err


def override(space: SearchSpace, **changes: Any) -> SearchSpace:
    """A copy with CLI overrides applied (None means keep)."""
    import dataclasses

    return dataclasses.replace(space, **{k: v for k, v in changes.items() if v is not None})
