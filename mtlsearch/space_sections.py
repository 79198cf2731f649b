"""The sections of a search-space file, one parser each: the top level, ``objective``, ``budget``,
``scheduler``, ``searcher``, ``resources``, ``params`` and ``final`` (:func:`mtlsearch.spaces.parse_space`
calls them in that order and builds the :class:`~mtlsearch.spaces.SearchSpace`), then ``protocol``
(:func:`with_protocol`, also the launcher's ``--protocol``).  Each checks its keys
and values and raises one :class:`~mtlsearch.errors.ConfigError` naming the file, the field and what is
allowed; the distributions of ``params`` are :mod:`mtlsearch.distributions`'."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from mtlsearch import distributions
from mtlsearch.distributions import ALL_TASKS, CONSTANT, Param, Where, check_number
from mtlsearch.errors import ConfigError, choices

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace

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
BUDGET_KEYS = {"num_samples", "max_epochs", "max_concurrent_trials", "seeds"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor", "brackets", "metric", "mode"}
SCHEDULER_TYPES = ("asha", "fifo")
SEARCHER_KEYS = {"type", "sampler", "seed"}
SEARCHER_TYPES = ("optuna", "random")
#: The Optuna samplers by their name in ``searcher.sampler``: the class of ``optuna.samplers`` each makes
#: (:func:`mtlsearch.optuna_search.make_sampler`).
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
}
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial"}
#: Trial keys a space sets outside ``params`` (the top level, the budget): a ``when`` or ``final.per`` may name them.
BASE_KEYS = {"benchmark", "max_epochs", "data_root", "seeds"}

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


def _section(data: Mapping[str, Any], key: str, allowed: set[str], source: str) -> dict[str, Any]:
    """The section ``key`` of the file (a mapping of known keys; absent: empty)."""
    section = _mapping(data.get(key), key, source)
    _check_keys(section, allowed, f"{key}.", source)
    return section


def _metric_and_mode(metric: Any, mode: Any, section: str, source: str) -> None:
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"expected a metric name such as 'val/delta_m', got {metric!r}", source=source, field=f"{section}.metric")
    if mode not in ("min", "max"):
        raise ConfigError(f"expected 'min' or 'max', got {mode!r}", source=source, field=f"{section}.mode")


# ------------------------------------------------------------------------------ the top level
def check_top(data: Any, source: str) -> None:
    """The file is a mapping of known keys with ``benchmark`` and ``params``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a search space is a YAML mapping with keys {', '.join(sorted(TOP_KEYS))}", source=source)
    _check_keys(data, TOP_KEYS, "", source)
    for required in ("benchmark", "params"):
        if required not in data:
            raise ConfigError(f"missing required key {required!r}", source=source, field=required)


def parse_benchmark(data: Mapping[str, Any], source: str) -> str:
    benchmark = data["benchmark"]
    if not isinstance(benchmark, str):
        raise ConfigError(f"expected a benchmark name, got {benchmark!r}", source=source, field="benchmark")
    return benchmark


def parse_name(data: Mapping[str, Any], path: Path | None, source: str) -> str:
    name = data.get("name") or (path.stem if path else "search")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"a name of letters, digits, '_' and '-', got {name!r}", source=source, field="name")
    return name


# ------------------------------------------------------------------------------ objective
class Objective(NamedTuple):
    metric: Any
    mode: Any
    #: Multi-objective: metric names (or ``"tasks"``) and their modes; None = one objective.
    metrics: Any = None
    modes: list[str] | None = None

    @property
    def multi(self) -> bool:
        return self.metrics is not None


def parse_objective(data: Mapping[str, Any], source: str) -> Objective:
    """``objective``: one ``metric``/``mode``, or ``metrics``/``modes`` (a list of one is one objective)."""
    objective = _section(data, "objective", OBJECTIVE_KEYS, source)
    metric = objective.get("metric", "val/delta_m")
    mode = objective.get("mode", "max")
    metrics, modes = _parse_objectives(objective, source)
    if metrics is not None and modes is not None and len(metrics) == 1 and metrics != ALL_TASKS:
        (metric,), (mode,) = metrics, modes  # a list of one is one objective
        metrics = modes = None
    _metric_and_mode(metric, mode, "objective", source)
    return Objective(metric, mode, metrics, modes)


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


# ------------------------------------------------------------------------------ budget
class Budget(NamedTuple):
    num_samples: int
    max_epochs: int
    max_concurrent_trials: int | None
    seeds: int
    epochs_given: bool  # budget.max_epochs was given (else the protocol's epochs, or 10)


def _protocol_epochs(data: Mapping[str, Any], default: int) -> int:
    """The epochs of the space's protocol for its benchmark (the budget's default), else ``default``;
    a bad protocol is reported by :func:`mtlsearch.spaces.with_protocol`."""
    benchmark = data.get("benchmark")
    if data.get("protocol") is None or not isinstance(benchmark, str):
        return default
    from mtlsearch.protocols import get_protocol

    try:
        return get_protocol(data["protocol"]).epochs(benchmark)
    except ConfigError:
        return default


def parse_budget(data: Mapping[str, Any], source: str) -> Budget:
    """``budget``: trials, epochs per trial (each under its limit), concurrent trials, seeds per trial."""
    budget = _section(data, "budget", BUDGET_KEYS, source)
    num_samples = check_number(budget.get("num_samples", 10), "budget.num_samples", source, integer=True, positive=True)
    max_epochs = check_number(
        budget.get("max_epochs", _protocol_epochs(data, 10)), "budget.max_epochs", source, integer=True, positive=True
    )
    check_limit(num_samples, MAX_NUM_SAMPLES, "MTLSEARCH_MAX_NUM_SAMPLES", source=source, field="budget.num_samples")
    check_limit(max_epochs, MAX_EPOCHS, "MTLSEARCH_MAX_EPOCHS", source=source, field="budget.max_epochs")
    mct = budget.get("max_concurrent_trials")
    if mct is not None:
        mct = check_number(mct, "budget.max_concurrent_trials", source, integer=True, positive=True)
    seeds = budget.get("seeds", 1)
    if type(seeds) is not int or seeds != 1:
        from mtlsearch.config import MAX_SEEDS  # the core's bound (imports torch: only when seeds are asked for)

        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(
                f"expected an integer from 1 to {MAX_SEEDS} (seeds trained in each trial), got {seeds!r}",
                source=source,
                field="budget.seeds",
            )
    return Budget(num_samples, max_epochs, mct, seeds, "max_epochs" in budget)


# ------------------------------------------------------------------------------ scheduler
def parse_scheduler(data: Mapping[str, Any], objective: Objective, max_epochs: int, source: str) -> tuple[dict[str, Any], Any, Any]:
    """``scheduler`` -> (its settings, the scalar metric and mode): the objective's, or for a
    multi-objective search ``scheduler.metric``/``mode``.  A multi-objective search without a
    ``scheduler`` section runs FIFO (see :mod:`mtlsearch.spaces`)."""
    scheduler: dict[str, Any] = {
        "type": "fifo" if objective.multi and "scheduler" not in data else "asha",
        "grace_period": 1,
        "reduction_factor": 3,
        "brackets": 1,
    }
    sched_in = _section(data, "scheduler", SCHEDULER_KEYS, source)
    metric, mode = _scalar(sched_in, objective, source)
    scheduler.update(sched_in)
    if scheduler["type"] not in SCHEDULER_TYPES:
        raise ConfigError(
            f"unknown scheduler {scheduler['type']!r}; allowed: {choices(SCHEDULER_TYPES)}", source=source, field="scheduler.type"
        )
    for key in ("grace_period", "brackets"):
        check_number(scheduler[key], f"scheduler.{key}", source, integer=True, positive=True)
    check_number(scheduler["reduction_factor"], "scheduler.reduction_factor", source, positive=True)
    if scheduler["reduction_factor"] <= 1:
        raise ConfigError("must be > 1", source=source, field="scheduler.reduction_factor")
    if scheduler["grace_period"] > max_epochs:
        raise ConfigError(
            f"grace_period {scheduler['grace_period']} exceeds budget.max_epochs {max_epochs}",
            source=source,
            field="scheduler.grace_period",
        )
    return scheduler, metric, mode


def _scalar(sched_in: dict[str, Any], objective: Objective, source: str) -> tuple[Any, Any]:
    """The scalar the scheduler prunes on (``metric``/``mode`` popped from ``sched_in``)."""
    if not objective.multi:
        if "metric" in sched_in or "mode" in sched_in:
            raise ConfigError(
                "scheduler.metric/mode set the scalar of a multi-objective search; a single-objective search "
                "prunes on its objective (set objective.metric/mode instead)",
                source=source,
                field="scheduler.metric" if "metric" in sched_in else "scheduler.mode",
            )
        return objective.metric, objective.mode
    metric, mode = sched_in.pop("metric", "val/delta_m"), sched_in.pop("mode", "max")
    _metric_and_mode(metric, mode, "scheduler", source)
    return metric, mode


# ------------------------------------------------------------------------------ searcher, resources
def parse_searcher(data: Mapping[str, Any], multi: bool, source: str) -> dict[str, Any]:
    """``searcher``: Optuna (one of :data:`SAMPLERS`) or Ray's random/grid variant generator, and its seed."""
    searcher = {"type": "optuna", "sampler": "tpe", "seed": 0}
    searcher.update(_section(data, "searcher", SEARCHER_KEYS, source))
    if searcher["type"] not in SEARCHER_TYPES:
        raise ConfigError(
            f"unknown searcher {searcher['type']!r}; allowed: {choices(SEARCHER_TYPES)}", source=source, field="searcher.type"
        )
    if searcher["sampler"] not in SAMPLERS:
        raise ConfigError(f"unknown sampler {searcher['sampler']!r}; allowed: {choices(SAMPLERS)}", source=source, field="searcher.sampler")
    check_number(searcher["seed"], "searcher.seed", source, integer=True)
    if multi and searcher["type"] == "optuna" and searcher["sampler"] in SINGLE_OBJECTIVE_SAMPLERS:
        raise ConfigError(
            f"sampler {searcher['sampler']!r} optimises one objective; a multi-objective search needs one of "
            f"{choices(s for s in SAMPLERS if s not in SINGLE_OBJECTIVE_SAMPLERS)}",
            source=source,
            field="searcher.sampler",
        )
    return searcher


def parse_resources(data: Mapping[str, Any], source: str) -> dict[str, float]:
    """``resources``: CPUs and GPUs per trial (numbers >= 0)."""
    res = {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0}
    for key, value in _section(data, "resources", RESOURCE_KEYS, source).items():
        check_number(value, f"resources.{key}", source)
        if value < 0:
            raise ConfigError(f"must be >= 0, got {value!r}", source=source, field=f"resources.{key}")
        res[key] = float(value)
    return res


# ------------------------------------------------------------------------------ params
def parse_param(name: str, spec: Any, source: str) -> Param:
    """One entry of ``params``: a constant, ``{value: X, when: ...}`` or one distribution (``when`` optional)."""
    where = Where(name, source)
    if not isinstance(spec, Mapping):
        if isinstance(spec, float) and not math.isfinite(spec):
            raise where.error(f"must be a finite number, got {spec!r}")
        return Param(name, CONSTANT, spec)
    spec = dict(spec)
    when = spec.pop("when", {}) or {}
    if not isinstance(when, Mapping):
        raise where.error(f"'when' must map parameter names to values, got {when!r}")
    if len(spec) != 1:
        raise where.error(
            f"a parameter is a constant or exactly one distribution of {choices(distributions.kinds())} "
            f"(optionally with 'when'); got keys {sorted(spec)}"
        )
    ((kind, args),) = spec.items()
    if kind == CONSTANT:
        return Param(name, CONSTANT, args, dict(when))
    if kind not in distributions.REGISTRY:
        raise where.error(f"unknown distribution {kind!r}; allowed: {choices(distributions.kinds())} or 'value'")
    return Param(name, kind, distributions.REGISTRY[kind].parse(args, where), dict(when))


def parse_params(data: Mapping[str, Any], source: str) -> list[Param]:
    """``params``: every entry parsed; a ``when`` names a known key, a grid is unconditional, and the
    keys the space sets elsewhere are not parameters."""
    params = [parse_param(str(k), v, source) for k, v in _mapping(data.get("params"), "params", source).items()]
    known = known_keys(params)
    for p in params:
        for key in p.when:
            if key not in known:
                raise ConfigError(f"'when' refers to unknown parameter {key!r}", source=source, field=f"params.{p.name}.when")
        if p.dist.crossed and p.when:
            raise ConfigError(
                "a grid is crossed with every sample, so it cannot depend on another parameter ('when'); "
                "use 'choice' for a conditional parameter",
                source=source,
                field=f"params.{p.name}",
            )
        if p.name in ("benchmark", "max_epochs", "seeds"):
            raise ConfigError(f"set {p.name!r} at the top level / in budget, not in params", source=source, field=f"params.{p.name}")
    return params


def known_keys(params: list[Param]) -> set[str]:
    """The trial keys a ``when`` or ``final.per`` may name: the space's own and its parameters."""
    return BASE_KEYS | {p.name for p in params}


# ------------------------------------------------------------------------------ final
def parse_final(data: Mapping[str, Any], known: set[str], source: str) -> dict[str, Any] | None:
    """``final``: the seeds the best configurations re-run with, ``per`` group (a parameter) and ``top``."""
    if data.get("final") is None:
        return None
    final: dict[str, Any] = {"seeds": [1, 2], "per": None, "top": 1}
    final.update(_section(data, "final", FINAL_KEYS, source))
    seeds = final["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise ConfigError(f"expected a non-empty list of integer seeds, got {seeds!r}", source=source, field="final.seeds")
    check_limit(len(seeds), MAX_FINAL_SEEDS, None, source=source, field="final.seeds")
    check_number(final["top"], "final.top", source, integer=True, positive=True)
    if final["per"] is not None and final["per"] not in known:
        raise ConfigError(
            f"'per' must name a parameter of the space ({', '.join(sorted(known))}), got {final['per']!r}",
            source=source,
            field="final.per",
        )
    return final


# ------------------------------------------------------------------------------ protocol
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
