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

Each entry of ``params`` is a constant or one distribution (``uniform``, ``loguniform``, ``quniform``,
``randint``, ``choice``, ``grid``, ``simplex``: :mod:`mtlsearch.distributions`, one class per kind), with
an optional ``when``; ``method: {choice: all}`` / ``{grid: all}`` is every registered method, and a
method ``choice`` is dealt to the methods in turn, so each gets the same number of trials
(:mod:`mtlsearch.fairness`).  The sections are parsed by :mod:`mtlsearch.space_sections`, one parser
each.  Unknown keys, wrong types and impossible distributions raise :class:`ConfigError` naming the
file, the key and what is allowed.

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
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from mtlsearch import fairness
from mtlsearch import space_sections as sections
from mtlsearch.distributions import ALL_TASKS, CONSTANT, Param, TrialContext, kinds
from mtlsearch.errors import ConfigError, choices
from mtlsearch.space_sections import (  # noqa: F401  (the schema's names, used as mtlsearch.spaces.*)
    MAX_EPOCHS,
    MAX_FINAL_SEEDS,
    MAX_NUM_SAMPLES,
    SAMPLERS,
    TOP_KEYS,
    check_limit,
    with_protocol,
)

if TYPE_CHECKING:
    from importlib.abc import Traversable

    import optuna

SPACE_DIR = Path(__file__).resolve().parent.parent / "search_spaces"  # in a checkout


class _SetLoader(yaml.SafeLoader):
    """YAML for a ``--set`` value: a number written as on a command line (``1e-4``, ``1E5``) is a number, not
    the text YAML 1.1 reads it as (it needs ``1.0e-4``); a quoted ``'1e-4'`` stays text."""


_SetLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class ConditionalSample:
    """``tune.sample_from`` body of a parameter Ray Tune samples per trial: a conditional one, or one whose
    kind draws from the trial's config (``simplex``); picklable, seeded."""

    def __init__(self, param: Param, domain: Any, seed: int, bench_tasks: int | None = None):
        import numpy as np

        self.param, self.domain = param, domain
        self.rng = np.random.RandomState(seed)
        self.bench_tasks = bench_tasks

    def __call__(self, spec: Any) -> Any:  # Ray Tune's spec: the trial's config so far in spec.config
        if not self.param.active(spec.config):
            return None
        return self.param.dist.tune_sample(self.domain, self.rng, TrialContext(spec.config, self.bench_tasks))


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
            dist = p.dist
            values[p.name] = dist.suggest(trial, p.name, TrialContext(values, self.bench_tasks, self.params))
            if dist.optuna_constant:
                constants[p.name] = values[p.name]
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
            tasks = next((p.args for p in self.params if p.name == "tasks" and p.kind == CONSTANT and not p.when), None)
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
        return {p.name: p.args for p in self.params if p.kind == CONSTANT and not p.when}

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
        if not any(p.dist.needs_task_count() for p in self.params):
            return None
        from mtlsearch.benchmarks import BENCHMARKS, get_benchmark

        known = getattr(BENCHMARKS.get(self.benchmark), "options", {})
        options = {k: v for k, v in self.constants().items() if k in known}  # e.g. CelebA's verify_md5
        try:
            return len(get_benchmark(self.benchmark, data_root=self.data_root, **options).task_specs())
        except ConfigError as err:
            raise err.with_source(str(self.path)) from None

    def define_by_run(self) -> DefineByRun:
        """An Optuna define-by-run function (conditional parameters allowed; picklable for resume)."""
        return DefineByRun(list(self.params), self.base_config(), self.benchmark_tasks())

    def tune_param_space(self) -> dict[str, Any]:
        """A Ray Tune ``param_space`` for the random/grid searcher (Ray's variant generator).

        A conditional parameter becomes a ``tune.sample_from`` that samples its distribution when its
        ``when`` holds for the trial and gives ``None`` (= not set) otherwise."""
        from ray import tune

        out: dict[str, Any] = dict(self.base_config())
        bench_tasks = self.benchmark_tasks()
        seed = self.searcher["seed"]
        for p in self.params:
            dist = p.dist
            if p is fairness.method_axis(self) and not dist.crossed:  # a method choice: the methods in turn (equal budget)
                grids = [g.name for g in self.params if g.dist.crossed]
                out[p.name] = tune.sample_from(fairness.RoundRobinMethod(p.args, grids, seed))
            elif p.when or dist.tune_per_trial:
                out[p.name] = tune.sample_from(ConditionalSample(p, dist.tune_domain(), seed, bench_tasks))
            else:
                out[p.name] = dist.tune_domain()
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
                    values[p.name] = p.dist.probe(v, TrialContext(values, bench_tasks, self.params))
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


def parse_space(data: Any, source: str, text: str = "", path: Path | None = None) -> SearchSpace:
    """The space of a parsed YAML file, its sections checked in the order of :mod:`mtlsearch.space_sections`."""
    sections.check_top(data, source)
    objective = sections.parse_objective(data, source)
    budget = sections.parse_budget(data, source)
    scheduler, metric, mode = sections.parse_scheduler(data, objective, budget.max_epochs, source)
    searcher = sections.parse_searcher(data, objective.multi, source)
    res = sections.parse_resources(data, source)
    params = sections.parse_params(data, source)
    final = sections.parse_final(data, sections.known_keys(params), source)
    benchmark = sections.parse_benchmark(data, source)
    space = SearchSpace(
        name=sections.parse_name(data, path, source),
        path=path or Path(source),
        text=text,
        description=str(data.get("description", "")),
        benchmark=benchmark,
        metric=metric,
        mode=mode,
        num_samples=budget.num_samples,
        max_epochs=budget.max_epochs,
        max_concurrent_trials=budget.max_concurrent_trials,
        scheduler=scheduler,
        searcher=searcher,
        resources=res,
        params=params,
        data_root=data.get("data_root"),
        objective_metrics=objective.metrics,
        objective_modes=objective.modes,
        final=final,
        epochs_given=budget.epochs_given,
        seeds=budget.seeds,
    )
    if data.get("protocol") is not None:
        space = with_protocol(space, data["protocol"], source=source)
    return space


def apply_sets(data: Any, sets: Any) -> Any:
    """``--set KEY.PATH=VALUE`` overrides applied to the parsed YAML (values are YAML: ``[1e-4, 1e-2]``).

    ``budget.num_samples=50`` sets one key; ``params.lr.loguniform=[1e-4,1e-2]`` makes ``lr`` that
    distribution (replacing its constant or other distribution, keeping its ``when``), as does
    ``params.lr={loguniform: [1e-4, 1e-2]}`` unless the mapping gives its own ``when``;
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
            if parts[0] == "params" and i == 1 and parts[-1] in (*kinds(), CONSTANT):
                # params.NAME.DIST=ARGS replaces the parameter's distribution, keeping its condition
                when = child.get("when") if isinstance(child, Mapping) else None
                child = {"when": when} if when else {}
            elif not isinstance(child, Mapping):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = _keep_condition(node.get(parts[-1]), value) if len(parts) == 2 and parts[0] == "params" else value
    return data


def _keep_condition(old: Any, new: Any) -> Any:
    """``params.NAME={KIND: ARGS}`` (a whole distribution, as ``mtlsearch.search(params__NAME=...)`` passes it)
    keeps the parameter's ``when`` unless it gives its own, as ``params.NAME.KIND=ARGS`` does."""
    when = old.get("when") if isinstance(old, Mapping) else None
    if when and isinstance(new, Mapping) and "when" not in new and set(new) <= set(kinds()):
        return {**new, "when": when}
    return new


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
