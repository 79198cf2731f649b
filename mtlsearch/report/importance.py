"""Parameter importance of a search, from Optuna's evaluators: fANOVA and PED-ANOVA.

**Which value of a trial.**  ASHA stops trials at its rungs, so the trials' last values come from
different training lengths (3 epochs against 12): ranking parameters on them would mostly measure how long
a trial ran.  Every trial is therefore compared at one epoch ``E``: the latest epoch that at least half of
the trials that did not error reached (on ``gemtl_p``, ASHA's first rung, epoch 3, which every trial
reached), with its objective at that epoch; trials that stopped before ``E`` (errored) are left out.  With
FIFO (no early stopping) ``E`` is ``max_epochs``.

**Which study.**  An in-memory Optuna study is built from the search's trials (MLflow or a Ray folder):
the values at ``E`` and the distributions the space declares (so a log-uniform ``lr`` is a log-scale
distribution).  The search's own persistent study (``optuna-dashboard``) holds the stopped trials as PRUNED
and ranks its COMPLETE trials only (with FIFO: the same set as here).  Conditional parameters (``p`` only when
``method: gemtl``) are not in every trial, and Optuna's evaluators assess the parameters every trial has:
they are left out, and the report says so.

**One set, one answer with its spread.**  fANOVA and PED-ANOVA rank the same trials (those at ``E``), and
each importance comes with a bootstrap spread: the evaluators are run again on ``BOOTSTRAP`` resamples of
these trials (drawn with replacement, seeded; fANOVA with 16 trees per resample) and the spread is the standard deviation of the resampled
importances.  The report prints ``p: 0.62 ± 0.15 (fANOVA, 12 trials at epoch 9)``: a difference between
two parameters smaller than their spreads is not a ranking.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from mtlsearch import tracking
from mtlsearch.report.load import Search, Trial
from mtlsearch.results import format_table, markdown_table
from mtlsearch.tracking import STATUS_ERRORED

if TYPE_CHECKING:
    from optuna import Study
    from optuna.distributions import BaseDistribution

    from mtlsearch.report.trials import SearchedParam

MIN_TRIALS = 5
BOOTSTRAP = 20  # resamples of the trials for the spread of each importance
EVALUATORS = (
    ("fANOVA", "optuna.importance.FanovaImportanceEvaluator(seed=0)"),
    ("PED-ANOVA", "optuna.importance.PedAnovaImportanceEvaluator() (top 10% of trials against all)"),
)


@dataclass
class Importance:
    """``values[label][param]`` (each evaluator's normalised importances), or ``note`` why there are none."""

    epoch: int | None = None
    trials: int = 0
    params: list[str] = field(default_factory=list)
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    #: ``spread[label][param]``: the standard deviation of the importance over bootstrap resamples of the trials.
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def trial_set(self) -> str:
        """The set every importance is computed on, in a few words (``12 trials at epoch 9``)."""
        return f"{self.trials} trials at epoch {self.epoch}"

    def basis(self, metric: str) -> str:
        return f"each trial's {metric} at epoch {self.epoch}, the latest epoch at least half of the trials reached ({self.trials} trials)"


def comparison_epoch(search: Search) -> int | None:
    """``E``: the latest epoch reached by at least half (and at least 2) of the trials that did not error."""
    epochs = sorted((t.epochs for t in search.trials if t.status != STATUS_ERRORED and t.epochs > 0), reverse=True)
    if not epochs:
        return None
    need = max(2, math.ceil(len(epochs) / 2))
    return epochs[min(need, len(epochs)) - 1]


def value_at(search: Search, trial: Trial, metric: str, epoch: int) -> float | None:
    """``metric`` of ``trial`` at ``epoch`` (its final value when that is its last epoch)."""
    if trial.epochs == epoch and metric in trial.final:
        return float(trial.final[metric])
    if trial._history is not None:
        hist = trial._history.get(metric, [])
    elif trial.run_id and search.tracking_uri:  # one metric's history, not every metric's
        hist = tracking.metric_history(search.tracking_uri, trial.run_id, metric)
    else:
        hist = trial.history().get(metric, [])
    value = dict(hist).get(epoch)
    return float(value) if value is not None and math.isfinite(value) else None


def _distribution(p: SearchedParam, observed: list[Any]) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "categorical":
        choices = list(p.choices)
        for v in observed:
            if v not in choices:
                choices.append(v)
        return CategoricalDistribution(choices)
    low = min([p.low, *observed]) if p.low is not None else min(observed)
    high = max([p.high, *observed]) if p.high is not None else max(observed)
    if p.kind == "int":
        return IntDistribution(int(low), int(high), log=p.log and low > 0)
    step = p.step if p.step and not p.log else None
    if step is not None and any(abs((v - low) / step - round((v - low) / step)) > 1e-6 for v in observed):
        step = None
    return FloatDistribution(float(low), float(high), log=p.log and low > 0, step=step)


def build_study(search: Search, params: Sequence[SearchedParam], epoch: int) -> tuple[Study, list[str], dict[str, str]]:
    """An in-memory Optuna study of the trials' values at ``epoch`` over the searched ``params`` that every
    such trial has; returns (study, the parameter names, {left-out parameter: why})."""
    import optuna

    left_out = {p.name: "a list of weights (simplex)" for p in params if p.simplex}
    candidates = [p for p in params if not p.simplex]
    rows = []
    for t in search.trials:
        if t.status == STATUS_ERRORED or t.epochs < epoch:
            continue
        value = value_at(search, t, search.metric, epoch)
        if value is not None:
            rows.append((t, value))
    # In an order of their own, not MLflow's (random trial ids): the same trials give the same importances and
    # the same bootstrap resamples, however the store lists them (two runs of one search gave 0.67 and 0.60 ± before).
    rows.sort(key=lambda row: (json.dumps(row[0].params, sort_keys=True, default=repr), row[1]))
    usable = []
    for p in candidates:
        observed = [t.params.get(p.name) for t, _ in rows]
        if any(v is None for v in observed):
            left_out[p.name] = "conditional: not in every trial"
        elif len({repr(v) for v in observed}) < 2:
            left_out[p.name] = "one value in these trials"
        else:
            usable.append((p, _distribution(p, observed)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if search.mode == "max" else "minimize")
    for t, value in rows:
        study.add_trial(
            optuna.trial.create_trial(
                params={p.name: t.params[p.name] for p, _ in usable},
                distributions={p.name: d for p, d in usable},
                value=value,
                user_attrs={"trial": t.trial_id},
            )
        )
    return study, [p.name for p, _ in usable], left_out


def param_importance(search: Search, params: Sequence) -> Importance:
    """fANOVA and PED-ANOVA importances (see the module docstring), or an :class:`Importance` whose
    ``note`` says in one line why there are none (one searched parameter, too few trials, ...)."""
    searched = [p for p in params if not p.simplex]
    if len(searched) < 2:
        listed = ", ".join(p.name for p in params) or "none"
        return Importance(
            note=f"Parameter importance: not computed: the space searches one parameter ({listed}); nothing to compare it with"
        )
    epoch = comparison_epoch(search)
    if epoch is None:
        return Importance(note="Parameter importance: not computed: no trial reported an epoch")
    study, names, left_out = build_study(search, params, epoch)
    n = len(study.trials)
    result = Importance(epoch=epoch, trials=n, params=names, left_out=left_out)
    if n < MIN_TRIALS:
        result.note = (
            f"Parameter importance: not computed: {n} trial(s) have {search.metric} at epoch {epoch}; at least {MIN_TRIALS} are needed"
        )
        return result
    if len(names) < 2:
        why = "; ".join(f"{k}: {v}" for k, v in left_out.items())
        result.note = (
            f"Parameter importance: not computed: {len(names)} parameter(s) vary in every trial "
            f"({', '.join(names) or 'none'}){f'; left out {why}' if why else ''}"
        )
        return result
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    evaluators = {"fANOVA": FanovaImportanceEvaluator(seed=0), "PED-ANOVA": PedAnovaImportanceEvaluator()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning, "importances will be equal" (said below instead)
        for label, evaluator in evaluators.items():
            result.values[label] = dict(get_param_importances(study, evaluator=evaluator, params=names))
            # fANOVA's forest is the slow part: 16 trees per resample (64 for the value itself).
            resampled = FanovaImportanceEvaluator(n_trees=16, seed=0) if label == "fANOVA" else evaluator
            result.spread[label] = bootstrap_spread(study, resampled, names)
    return result


def bootstrap_spread(study: Study, evaluator: Any, names: Sequence[str], resamples: int = BOOTSTRAP, seed: int = 0) -> dict[str, float]:
    """Per parameter, the standard deviation of ``evaluator``'s normalised importance over ``resamples``
    bootstrap resamples of ``study``'s trials (a resample the evaluator refuses, e.g. one value of a
    parameter only, is skipped; fewer than 2 usable resamples give no spread)."""
    import random
    import statistics

    import optuna
    from optuna.importance import get_param_importances

    rng = random.Random(seed)
    trials = study.get_trials(deepcopy=False)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(resamples):
        resampled = optuna.create_study(directions=study.directions)
        resampled.add_trials([trials[rng.randrange(len(trials))] for _ in trials])
        try:
            values = get_param_importances(resampled, evaluator=evaluator, params=list(names))
        except Exception:  # a degenerate resample: skipped, counted by the spread's size
            continue
        for k in names:
            samples[k].append(float(values.get(k, 0.0)))
    return {k: statistics.stdev(v) for k, v in samples.items() if len(v) >= 2}


def _with_spread(result: Importance, label: str, param: str) -> str:
    value = result.values[label].get(param, 0.0)
    spread = result.spread.get(label, {}).get(param)
    return f"{value:.2f} ± {spread:.2f}" if spread is not None else f"{value:.2f}"


def importance_rows(result: Importance) -> tuple[list[str], list[list[str]]]:
    """A small table: one row per parameter, one column per evaluator (normalised to sum 1)."""
    labels = [label for label, _ in EVALUATORS if label in result.values]
    header = ["parameter", *[f"{label} importance ± bootstrap sd" for label in labels]]
    order = sorted(result.params, key=lambda k: -result.values[labels[0]].get(k, 0.0))
    return header, [[k, *[_with_spread(result, label, k) for label in labels]] for k in order]


def importance_lines(result: Importance) -> list[str]:
    """One line per parameter and evaluator: ``p: 0.62 ± 0.15 (fANOVA, 12 trials at epoch 9)``."""
    labels = [label for label, _ in EVALUATORS if label in result.values]
    order = sorted(result.params, key=lambda k: -result.values[labels[0]].get(k, 0.0)) if labels else []
    return [f"{k}: {_with_spread(result, label, k)} ({label}, {result.trial_set})" for label in labels for k in order]


def importance_text(result: Importance, metric: str, *, markdown: bool = False) -> str:
    """The text block of the report: the table with its evaluators and basis, or the one-line note."""
    if not result.ok:
        return result.note
    header, body = importance_rows(result)
    lines = [
        f"Parameter importance (Optuna, normalised to sum 1) of {result.basis(metric)}:",
        *([""] if markdown else []),
        (markdown_table if markdown else format_table)(header, body),
        *([""] if markdown else []),
    ]
    lines += [f"  {line}" for line in importance_lines(result)]
    lines.append(
        f"  one set for both evaluators: {result.trial_set}; ± = standard deviation over {BOOTSTRAP} bootstrap resamples of these trials"
    )
    lines += [f"  {label}: {how}" for label, how in EVALUATORS]
    if result.left_out:
        lines.append("  left out: " + "; ".join(f"{k} ({v})" for k, v in result.left_out.items()))
    return "\n".join(lines)
