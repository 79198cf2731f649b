"""An equal budget per method: the strata a searcher fills in turn, ASHA's brackets dealt per method, and
the warning when a method still ends with less than the others.

A *method axis* is ``params.method`` given as ``{choice: [...]}`` or ``{grid: [...]}`` (``all``: every
registered method, plugins named ``module:Class`` included), without ``when``.  Whatever the searcher:

* ``grid`` (any unconditional parameter) is crossed with ``num_samples``: every combination of grid values
  gets ``num_samples`` trials (Ray's variant generator does so; the Optuna searcher fixes the grid values of
  each trial with ``study.enqueue_trial`` and lets its sampler fill in the rest);
* a method ``choice`` is *stratified*: the ``num_samples`` trials are dealt to the methods in turn (the
  one with the fewest trials so far next; ties in an order shuffled by the searcher's seed), so each method
  gets ``num_samples // k`` or one more.  Under Optuna the method is still a categorical parameter of the
  study (fixed per trial by ``enqueue_trial``), so TPE models it like any other;
* with ASHA ``brackets > 1`` each method's trials are dealt to the brackets in turn (Ray draws a bracket
  at random per trial), so every method has the same first rungs: the same epochs before the first stop.

:func:`budget_warning` is the one line printed (and tagged on the search's parent MLflow run) when a method
ends with fewer configurations than the others (beyond the one of a ``num_samples`` that is not a multiple
of the number of methods), or without a full-budget trial while another method has one.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from mtlsearch.spaces import Param, SearchSpace

METHOD = "method"


def method_axis(space: SearchSpace) -> Param | None:
    """The space's method axis (``params.method`` as an unconditional choice or grid), or None."""
    for p in space.params:
        if p.name == METHOD and p.dist.categorical and not p.when:
            return p
    return None


def methods_of(space: SearchSpace) -> list[Any]:
    """The methods compared by the space: its method axis's values, or its one method."""
    axis = method_axis(space)
    if axis is not None:
        return list(axis.args)
    return [p.args for p in space.params if p.name == METHOD and p.kind == "value" and not p.when][:1]


def total_trials(space: SearchSpace) -> int:
    """Trials a search runs under either searcher: grid parameters are crossed with ``num_samples``."""
    return space.num_samples * math.prod(len(p.args) for p in space.params if p.dist.crossed)


def strata(space: SearchSpace) -> list[dict[str, Any]]:
    """The cells an Optuna search fills in turn: every combination of the unconditional grid values and,
    when the method is a ``choice``, of the methods.  ``[]`` when there is nothing to stratify."""
    axes = [p for p in space.params if not p.when and (p.dist.crossed or p is method_axis(space))]
    if not axes:
        return []
    return [dict(zip([p.name for p in axes], combo)) for combo in itertools.product(*[list(p.args) for p in axes])]


def stratified_names(space: SearchSpace) -> list[str]:
    """The parameters whose values :func:`strata` fixes per trial."""
    return list(strata(space)[0]) if strata(space) else []


def next_stratum(cells: Sequence[Mapping[str, Any]], trials: Iterable[Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """The cell with the fewest trials so far (``trials``: the parameters of every trial already asked for);
    ties are broken in an order shuffled once by ``seed``, so the extra trial of a ``num_samples`` that is
    not a multiple does not always go to the first method."""
    keys = list(cells[0])
    counts = Counter(tuple(_key(t.get(k)) for k in keys) for t in trials)
    order = list(range(len(cells)))
    random.Random(seed).shuffle(order)
    best = min(order, key=lambda i: (counts[tuple(_key(cells[i][k]) for k in keys)], order.index(i)))
    return dict(cells[best])


def _key(value: Any) -> Any:
    return repr(value) if isinstance(value, (list, dict)) else value


class RoundRobinMethod:
    """``tune.sample_from`` body of a method ``choice`` under Ray's variant generator (``searcher: {type:
    random}``): the methods in turn, counted separately per combination of grid values of the trial (Ray
    resolves grid values first), so each method meets each grid cell equally often.  Picklable (the
    count travels in Ray's searcher checkpoint); deep copies share it."""

    def __init__(self, methods: Sequence[Any], grid_names: Sequence[str], seed: int):
        self.methods = list(methods)
        self.grid_names = list(grid_names)
        self.seed = seed
        self.seen: list[dict[str, Any]] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> RoundRobinMethod:
        return self  # Ray deep-copies the param space for every sample: the count must be shared

    def __call__(self, spec: Any) -> Any:
        config = getattr(spec, "config", {}) or {}
        cell = {k: config.get(k) for k in self.grid_names}
        mine = [t for t in self.seen if all(_key(t.get(k)) == _key(v) for k, v in cell.items())]
        method = next_stratum([{METHOD: m} for m in self.methods], mine, self.seed)[METHOD]
        self.seen.append({**cell, METHOD: method})
        return method


def make_asha(space: SearchSpace) -> Any:
    """Ray's ``ASHAScheduler`` with the space's settings; with several brackets and a method axis, each
    method's trials are dealt to the brackets in turn (:class:`FairASHA`)."""
    from ray.tune.schedulers import ASHAScheduler

    kwargs = {
        "time_attr": "training_iteration",
        "max_t": space.max_epochs,
        "grace_period": space.scheduler["grace_period"],
        "reduction_factor": space.scheduler["reduction_factor"],
        "brackets": space.scheduler["brackets"],
    }
    if space.scheduler["brackets"] > 1 and method_axis(space) is not None:
        return _fair_asha_class()(**kwargs)
    return ASHAScheduler(**kwargs)


def _fair_asha_class() -> type:
    from ray.tune.schedulers import ASHAScheduler

    class FairASHA(ASHAScheduler):
        """ASHA whose brackets are dealt per method in turn instead of drawn at random per trial."""

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            super().on_trial_add(tune_controller, trial)  # checks metric/mode, draws a bracket we replace
            if not hasattr(self, "_dealt"):
                self._dealt: Counter[Any] = Counter()
            dealt = self._dealt
            method = _key((trial.config or {}).get(METHOD))
            self._trial_info[trial.trial_id] = self._brackets[dealt[method] % len(self._brackets)]
            dealt[method] += 1

    return FairASHA


def method_budget(trials: Iterable[tuple[Any, int, bool]], max_epochs: int) -> dict[str, tuple[int, int]]:
    """Per method: (configurations that trained at least one epoch, trials that reached ``max_epochs``
    without error); ``trials``: (method, epochs reached, errored) per trial."""
    out: dict[str, list[int]] = {}
    for method, epochs, errored in trials:
        row = out.setdefault(str(method), [0, 0])
        if epochs > 0:
            row[0] += 1
        if epochs >= max_epochs and not errored:
            row[1] += 1
    return {m: (c, f) for m, (c, f) in out.items()}


def budget_warning(budget: Mapping[str, tuple[int, int]], methods: Sequence[Any] = ()) -> str | None:
    """One line naming the methods that ended with fewer configurations than the others (beyond the +-1
    of an uneven ``num_samples``) or with no full-budget trial while another method has one; None when the
    comparison was even.  ``methods``: every method of the axis (one without any trial counts as 0)."""
    full = {str(m): (0, 0) for m in methods}
    full.update(budget)
    if len(full) < 2:
        return None
    most_configs = max(c for c, _ in full.values())
    most_full = max(f for _, f in full.values())
    fewer = {m: c for m, (c, _) in full.items() if c < most_configs - 1 or (c == 0 < most_configs)}
    unfinished = [m for m, (_, f) in full.items() if f == 0 < most_full]
    if not fewer and not unfinished:
        return None
    parts = []
    if fewer:
        listed = ", ".join(f"{m} {c}" for m, c in sorted(fewer.items(), key=lambda kv: kv[1]))
        parts.append(f"fewer configurations than the others ({most_configs}): {listed}")
    if unfinished:
        parts.append(f"no trial trained the full budget: {', '.join(sorted(unfinished))} (ranked on a stopped or errored trial's value)")
    return "warning: unequal budget per method: " + "; ".join(parts)


def grid_budget(grid: Any, max_epochs: int) -> dict[str, tuple[int, int]]:
    """:func:`method_budget` of a Ray ``ResultGrid``."""
    rows = []
    for r in grid:
        config, metrics = r.config or {}, r.metrics or {}
        if METHOD not in config:
            continue
        rows.append((config[METHOD], int(metrics.get("epoch", metrics.get("training_iteration", 0)) or 0), r.error is not None))
    return method_budget(rows, max_epochs)
