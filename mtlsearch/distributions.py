"""The entries of a search space's ``params``: one class per distribution kind, and their registry.

A parameter (:class:`Param`) is a constant (``kind == "value"``) or one distribution, written
``NAME: {KIND: ARGS}`` (optionally with ``when: {...}``).  Each kind is one subclass of
:class:`Distribution` in :data:`REGISTRY` (added by :func:`register`), the one place that knows the
kind: how its YAML is checked (``parse``, errors naming the file and field), its ``--dry-run`` line
(``describe``), what Optuna samples (``axis`` / ``suggest``, also the report's axes), what Ray Tune's
variant generator samples (``tune_domain`` / ``tune_sample``), the values the pre-flight validates
(``candidates`` / ``probe``), the perf scripts' grid and fixed value (``grid`` / ``middle``), and
whether it is a choice among listed values (``categorical``: a method axis, a stratum) or crossed with
every sample (``crossed``: a grid).  :mod:`mtlsearch.spaces` translates a whole space with them.

Kinds: ``uniform [lo, hi]``, ``loguniform [lo, hi]`` (0 < lo), ``quniform [lo, hi, q]``,
``randint [lo, hi)``, ``choice [values]``, ``grid [values]`` (every value, crossed with the samples,
under either searcher; not conditional), and ``simplex: tasks`` (a list of one weight per task of the
trial, uniform on the simplex: ``static_weights: {simplex: tasks, when: {method: static}}``) or
``simplex: N`` for N weights.  ``method: {choice: all}`` / ``{grid: all}`` is every registered method.
Adding a kind: one class here and its test (docs/contributing-distribution.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence, TypeVar

from mtlsearch.errors import ConfigError
from mtlsearch.results import fmt  # a value in --dry-run is written as in a results table

if TYPE_CHECKING:
    import numpy as np
    import optuna

CONSTANT = "value"  # the kind of a constant: ``NAME: VALUE`` or ``NAME: {value: VALUE, when: {...}}``
ALL_TASKS = "tasks"  # every task: simplex: tasks (one weight per task of the trial), objective.metrics: tasks
ALL_METHODS = "all"  # method: {choice: all} / {grid: all}: every registered method


def check_number(value: Any, field_name: str, source: str | None, *, integer: bool = False, positive: bool = False) -> Any:
    """``value`` if it is a finite number (an integer where asked; > 0 where asked), else a ConfigError."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        raise ConfigError(f"expected {'an integer' if integer else 'a finite number'}, got {value!r}", source=source, field=field_name)
    if positive and value <= 0:
        raise ConfigError(f"must be > 0, got {value!r}", source=source, field=field_name)
    return value


@dataclass(frozen=True)
class Where:
    """The parameter being parsed, which its errors name: ``FILE: params.NAME: message``."""

    name: str
    source: str | None = None

    @property
    def field(self) -> str:
        return f"params.{self.name}"

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, field=self.field)


@dataclass(frozen=True)
class Axis:
    """What Optuna samples: a ``float``/``int`` range (``log``, ``step``) or ``categorical`` choices (the report's axis too)."""

    kind: str  # "float", "int" or "categorical"
    log: bool = False
    low: Any = None
    high: Any = None  # included
    step: Any = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class TrialContext:
    """What a distribution may read while one trial is sampled or probed."""

    values: Mapping[str, Any]  # the trial's values so far (the space's base keys, earlier parameters)
    bench_tasks: int | None = None  # the benchmark's number of tasks, where a parameter needs it
    params: Sequence[Param] = ()  # the space's parameters (a constant ``tasks`` written after this one)


class Distribution:
    """One kind of ``params`` entry, holding its parsed ``args``.  A subclass sets ``kind`` and ``example`` and implements
    :meth:`parse`, :meth:`tune_domain`, :meth:`candidates` and :meth:`axis` (or :meth:`suggest`); the rest has defaults."""

    #: The key in the YAML: ``NAME: {KIND: ARGS}``.
    kind: ClassVar[str] = ""
    #: Valid YAML arguments (the registry's tests sample every kind with them: tests/unit/test_distributions.py).
    example: ClassVar[Any] = None
    #: A choice among the listed values ``args`` (a method axis, strata, the values a ``when`` can see).
    categorical: ClassVar[bool] = False
    #: Every value is crossed with the samples (a grid): never conditional, a stratum of an Optuna search.
    crossed: ClassVar[bool] = False
    #: Ray Tune samples it per trial from the trial's config (``tune.sample_from``) even when unconditional.
    tune_per_trial: ClassVar[bool] = False
    #: The define-by-run function hands the value to Ray as a constant (not an Optuna parameter itself).
    optuna_constant: ClassVar[bool] = False

    def __init__(self, args: Any) -> None:
        self.args = args

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args!r})"

    @classmethod
    def parse(cls, args: Any, where: Where) -> Any:
        """The YAML's arguments checked and normalised (``Param.args``); a ConfigError from ``where.error``."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for ``--dry-run``, after ``NAME: ``."""
        return f"{self.kind} {fmt(self.args)}"

    def axis(self) -> Axis | None:
        """What Optuna samples (and the report's axis); None where :meth:`suggest` samples otherwise."""
        return None

    def suggest(self, trial: optuna.Trial, name: str, ctx: TrialContext) -> Any:
        """The trial's value, sampled by Optuna (define-by-run)."""
        axis = self.axis()
        if axis is None:
            raise NotImplementedError(f"{type(self).__name__} has no axis: it must implement suggest")
        return axis.suggest(trial, name)

    def tune_domain(self) -> Any:
        """What Ray Tune's ``param_space`` holds for it (a ``tune`` domain or ``tune.grid_search``)."""
        raise NotImplementedError

    def tune_sample(self, domain: Any, rng: np.random.RandomState, ctx: TrialContext) -> Any:
        """One draw of a parameter that Ray Tune samples per trial (``domain``: :meth:`tune_domain`)."""
        value = domain.sample(random_state=rng)
        return value.item() if hasattr(value, "item") else value

    def candidates(self) -> list[Any]:
        """A few representative values: the pre-flight validates every combination of them."""
        raise NotImplementedError

    def probe(self, candidate: Any, ctx: TrialContext) -> Any:
        """A candidate as a probe configuration holds it (sized for the trial where needed)."""
        return candidate

    def needs_task_count(self) -> bool:
        """Whether sampling needs the benchmark's number of tasks (``TrialContext.bench_tasks``)."""
        return False

    def grid(self, points: int) -> list[Any]:
        """About ``points`` values spanning it (``perf/search_efficiency.py``); NotImplementedError: none."""
        raise NotImplementedError

    def middle(self) -> Any:
        """One central value (``perf/overhead.py``'s fixed trial); NotImplementedError: none."""
        raise NotImplementedError


#: Every distribution kind by its YAML key (``value``, a constant, is not one).
REGISTRY: dict[str, type[Distribution]] = {}

D = TypeVar("D", bound=type[Distribution])


def register(cls: D) -> D:
    """Class decorator: make ``cls.kind`` a distribution of ``params`` (``--set params.NAME.KIND=ARGS`` too)."""
    if not cls.kind or cls.kind in (CONSTANT, "when") or cls.kind in REGISTRY:
        raise ValueError(f"distribution kind {cls.kind!r} is empty, reserved or registered already")
    REGISTRY[cls.kind] = cls
    return cls


def kinds() -> list[str]:
    return list(REGISTRY)  # in registration order


def distribution_class(kind: str) -> type[Distribution]:
    """The class of ``kind`` (``value``: :class:`Constant`); KeyError if unknown."""
    return Constant if kind == CONSTANT else REGISTRY[kind]


def _round(x: float) -> float:
    return float(f"{x:.4g}")


# ------------------------------------------------------------------------------ the kinds
class Constant(Distribution):
    """``NAME: VALUE``: every trial gets the value (not registered: it is no distribution)."""

    kind = CONSTANT
    optuna_constant = True

    @classmethod
    def parse(cls, args: Any, where: Where) -> Any:
        return args

    def suggest(self, trial: optuna.Trial, name: str, ctx: TrialContext) -> Any:
        return self.args

    def tune_domain(self) -> Any:
        return self.args

    def tune_sample(self, domain: Any, rng: np.random.RandomState, ctx: TrialContext) -> Any:
        return domain

    def candidates(self) -> list[Any]:
        return [self.args]


class Range(Distribution):
    """Numbers ``[low, high]`` (``names`` more where a kind has them), low < high."""

    names: ClassVar[tuple[str, ...]] = ("low", "high")
    integer: ClassVar[bool] = False

    @classmethod
    def parse(cls, args: Any, where: Where) -> Any:
        want = len(cls.names)
        if not isinstance(args, list) or len(args) != want:
            raise where.error(f"{cls.kind} needs a list of {want} numbers [{', '.join(cls.names)}], got {args!r}")
        args = [check_number(a, where.field, where.source, integer=cls.integer) for a in args]
        if not args[0] < args[1]:
            raise where.error(f"{cls.kind} needs low < high, got {args!r}")
        cls.check(args, where)
        return args if cls.integer else [float(a) for a in args]

    @classmethod
    def check(cls, args: list[Any], where: Where) -> None:
        """A kind's own conditions on its numbers (after low < high)."""

    def describe(self) -> str:
        extra = f" step {self.args[2]}" if len(self.args) > 2 else ""
        return f"{self.kind} [{fmt(self.args[0])}, {fmt(self.args[1])}]{extra}"

    def candidates(self) -> list[Any]:
        return [self.args[0]]

    def cells(self, points: int) -> list[float]:
        """The centres of ``points`` equal cells of ``[low, high]``."""
        lo, hi = self.args[0], self.args[1]
        return [lo + (i + 0.5) * (hi - lo) / points for i in range(points)]


@register
class Uniform(Range):
    """``uniform: [low, high]``."""

    kind = "uniform"
    example = [-2.0, 4.0]

    def axis(self) -> Axis:
        return Axis("float", False, self.args[0], self.args[1])

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.uniform(*self.args)

    def grid(self, points: int) -> list[Any]:
        return [_round(x) for x in self.cells(points)]

    def middle(self) -> Any:
        return (self.args[0] + self.args[1]) / 2


@register
class LogUniform(Range):
    """``loguniform: [low, high]``, 0 < low."""

    kind = "loguniform"
    example = [1e-4, 1e-2]

    @classmethod
    def check(cls, args: list[Any], where: Where) -> None:
        if args[0] <= 0:
            raise where.error(f"loguniform needs 0 < low < high, got {args!r}")

    def axis(self) -> Axis:
        return Axis("float", True, self.args[0], self.args[1])

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.loguniform(*self.args)

    def grid(self, points: int) -> list[Any]:
        lo, hi = math.log(self.args[0]), math.log(self.args[1])
        return [_round(math.exp(lo + (i + 0.5) * (hi - lo) / points)) for i in range(points)]

    def middle(self) -> Any:
        return float(f"{math.sqrt(self.args[0] * self.args[1]):.4g}")


@register
class QUniform(Range):
    """``quniform: [low, high, q]``: multiples of q, q > 0."""

    kind = "quniform"
    names = ("low", "high", "q")
    example = [0.0, 1.0, 0.25]

    @classmethod
    def check(cls, args: list[Any], where: Where) -> None:
        if args[2] <= 0:
            raise where.error(f"quniform needs q > 0, got {args!r}")

    def axis(self) -> Axis:
        return Axis("float", False, self.args[0], self.args[1], self.args[2])

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.quniform(*self.args)

    def grid(self, points: int) -> list[Any]:
        q = self.args[2]
        return sorted({_round(round(x / q) * q) for x in self.cells(points)})

    def middle(self) -> Any:
        lo, hi, q = self.args
        return round((lo + hi) / 2 / q) * q


@register
class RandInt(Range):
    """``randint: [low, high)``: integers, high excluded."""

    kind = "randint"
    integer = True
    example = [1, 10]

    def axis(self) -> Axis:
        return Axis("int", False, self.args[0], self.args[1] - 1, 1)

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.randint(*self.args)

    def grid(self, points: int) -> list[Any]:
        lo, hi = self.args[0], self.args[1] - 1
        return sorted({round(lo + i * (hi - lo) / max(points - 1, 1)) for i in range(points)})

    def middle(self) -> Any:
        return (self.args[0] + self.args[1] - 1) // 2


class Values(Distribution):
    """A non-empty list of values (finite where numbers); ``all`` for ``method``: every registered method."""

    categorical = True

    @classmethod
    def parse(cls, args: Any, where: Where) -> Any:
        if args == ALL_METHODS:
            if where.name != "method":
                raise where.error(f"{cls.kind}: all (every registered method) applies only to params.method")
            from mtlsearch.balancing import METHODS

            args = list(METHODS)
        if not isinstance(args, list) or not args:
            raise where.error(f"{cls.kind} needs a non-empty list of values{' or all' if where.name == 'method' else ''}, got {args!r}")
        for v in args:
            if isinstance(v, float) and not math.isfinite(v):
                raise where.error(f"{cls.kind} values must be finite, got {v!r}")
        return list(args)

    def describe(self) -> str:
        return f"{self.kind} {{{', '.join(fmt(v) for v in self.args)}}}"

    def axis(self) -> Axis:
        # A grid value (and a method choice) is fixed per trial by the searcher's enqueue_trial
        # (mtlsearch.fairness.strata); the study still sees the whole categorical distribution.
        return Axis("categorical", choices=tuple(self.args))

    def candidates(self) -> list[Any]:
        return list(self.args)

    def grid(self, points: int) -> list[Any]:
        return list(self.args)

    def middle(self) -> Any:
        return self.args[0]


@register
class Choice(Values):
    """``choice: [values]``: one value per trial."""

    kind = "choice"
    example = ["adam", "sgd", 0.5]

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.choice(list(self.args))


@register
class Grid(Values):
    """``grid: [values]``: every value, crossed with the samples, under either searcher."""

    kind = "grid"
    crossed = True
    example = [1, 2, 3]

    def tune_domain(self) -> Any:
        from ray import tune

        return tune.grid_search(list(self.args))


@register
class Simplex(Distribution):
    """``simplex: tasks`` (one weight per task of the trial: its ``tasks`` subset, else every task of the
    benchmark) or ``simplex: N``: a list of weights uniform on the simplex.  Optuna sees N uniforms
    ``NAME/0``, ... mapped to the simplex; Ray Tune draws a Dirichlet(1)."""

    kind = "simplex"
    example = 3
    tune_per_trial = True
    optuna_constant = True

    @classmethod
    def parse(cls, args: Any, where: Where) -> Any:
        if args != ALL_TASKS and (isinstance(args, bool) or not isinstance(args, int) or args < 1):
            raise where.error(f"simplex takes 'tasks' (one weight per task of the trial) or a number of weights >= 1, got {args!r}")
        return args

    def size(self, ctx: TrialContext) -> int:
        """How many weights the trial gets (``ctx.params``: for a constant ``tasks`` written after this one)."""
        if isinstance(self.args, int):
            return self.args
        tasks = ctx.values.get("tasks") or next(
            (q.args for q in ctx.params if q.name == "tasks" and q.kind == CONSTANT and not q.when), None
        )
        if tasks:
            return len(tasks)
        assert ctx.bench_tasks is not None
        return ctx.bench_tasks

    def suggest(self, trial: optuna.Trial, name: str, ctx: TrialContext) -> Any:
        # One uniform per weight, named "<name>/<i>"; the weights themselves are returned as a
        # constant.  Ray's OptunaSearch merges {**sampled, **constants} and unflattens on "/",
        # so the list (the later key) replaces the sampled "<name>/..." entries in the config.
        return simplex_from_uniforms([trial.suggest_float(f"{name}/{i}", 0.0, 1.0) for i in range(self.size(ctx))])

    def tune_domain(self) -> Any:
        return None  # drawn per trial by tune_sample

    def tune_sample(self, domain: Any, rng: np.random.RandomState, ctx: TrialContext) -> Any:
        return [float(x) for x in rng.dirichlet([1.0] * self.size(ctx))]

    def candidates(self) -> list[Any]:
        return [None]  # sized per trial: see probe

    def probe(self, candidate: Any, ctx: TrialContext) -> Any:
        n = self.size(ctx)
        return [1.0 / n] * n  # equal weights, as many as the trial samples

    def needs_task_count(self) -> bool:
        return self.args == ALL_TASKS


def simplex_from_uniforms(u: list[float]) -> list[float]:
    """Uniform draws in [0, 1] -> a point uniform on the simplex (normalised exponentials = Dirichlet(1))."""
    e = [-math.log(max(1.0 - x, 1e-300)) for x in u]
    total = sum(e)
    return [x / total for x in e] if total > 0 else [1.0 / len(u)] * len(u)


# ------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class Param:
    """One entry of ``params``: a constant (``kind == "value"``) or a distribution (a key of :data:`REGISTRY`)."""

    name: str
    kind: str  # "value" or a key of REGISTRY
    args: Any
    when: Mapping[str, Any] = field(default_factory=dict)

    def active(self, values: Mapping[str, Any]) -> bool:
        return all((values.get(k) in w) if isinstance(w, list) else values.get(k) == w for k, w in self.when.items())

    @property
    def dist(self) -> Distribution:
        """Its distribution (:class:`Constant` for a constant)."""
        return distribution_class(self.kind)(self.args)

    def candidates(self) -> list[Any]:
        """A few representative values, used to validate every combination before a search starts."""
        return self.dist.candidates()
