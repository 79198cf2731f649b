"""The searched parameters of a search, with their distributions, and the per-trial table.

Where a search's parameters come from, best first: the space file the search ran (the parent run's
``space/`` artifact, or ``mtlsearch.json`` in a Ray results folder, ``--set`` overrides included), else
what the trials' values show (numbers: linear, or log when positive over two decades or more; text and
booleans: categories).  ``simplex`` parameters (a list of weights per trial) are listed in the CSV as JSON
text and left out of the figures and the importance.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TypeGuard

from mtlsearch.report.analysis import HIDDEN_KEYS, task_metrics
from mtlsearch.report.load import Search, Trial

if TYPE_CHECKING:
    from mtlsearch.spaces import Param


@dataclass(frozen=True)
class SearchedParam:
    """One searched parameter: ``kind`` is ``float``, ``int`` or ``categorical``."""

    name: str
    kind: str
    log: bool = False
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    conditional: bool = False
    simplex: bool = False

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")


def _from_space_param(p: Param) -> SearchedParam | None:
    """The axis Optuna samples the parameter on; without one (``simplex``: a list per trial), a list."""
    cond = bool(p.when)
    axis = p.dist.axis()
    if axis is None:
        return SearchedParam(p.name, "categorical", conditional=cond, simplex=True)
    return SearchedParam(p.name, axis.kind, axis.log, axis.low, axis.high, axis.step, axis.choices, conditional=cond)


def params_from_space_text(text: str, source: str = "space") -> list[SearchedParam] | None:
    """The searched parameters of a space file's text (``# --set`` lines re-applied); None if unreadable."""
    import yaml

    from mtlsearch.space_sections import parse_param
    from mtlsearch.spaces import apply_sets

    try:
        data = yaml.safe_load(text)
        sets = [line[len("# --set ") :].strip() for line in text.splitlines() if line.startswith("# --set ")]
        if sets:
            data = apply_sets(data, sets)
        params = [parse_param(name, spec, source) for name, spec in (data.get("params") or {}).items()]
    except Exception:  # a space this checkout cannot read: infer from the trials instead
        return None
    return [s for s in (_from_space_param(p) for p in params if p.kind != "value") if s is not None]


def _number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def params_from_trials(search: Search) -> list[SearchedParam]:
    """Parameters whose value differs between trials, described from their values."""
    values: dict[str, list[Any]] = {}
    for t in search.trials:
        for k, v in t.params.items():
            values.setdefault(k, []).append(v)
    out = []
    for k in sorted(values):
        if k in HIDDEN_KEYS:
            continue
        vals = values[k]
        seen = {json.dumps(v, sort_keys=True, default=str) for v in vals}
        if len(seen) < 2 and len(vals) == len(search.trials):
            continue
        present = [v for v in vals if v is not None]
        if present and all(_number(v) for v in present):
            lo, hi = min(present), max(present)
            integer = all(isinstance(v, int) for v in present)
            log = lo > 0 and hi / lo >= 100
            out.append(SearchedParam(k, "int" if integer else "float", log, lo, hi, conditional=len(present) < len(search.trials)))
        elif present and all(isinstance(v, list) for v in present):
            out.append(SearchedParam(k, "categorical", simplex=True))
        else:
            out.append(
                SearchedParam(
                    k, "categorical", choices=tuple(sorted({str(v) for v in present})), conditional=len(present) < len(search.trials)
                )
            )
    return out


def searched_params(search: Search, space_text: str | None) -> list[SearchedParam]:
    """The search's searched parameters (see the module docstring for where they come from)."""
    from_space = params_from_space_text(space_text) if space_text else None
    return from_space if from_space is not None else params_from_trials(search)


# ======================================================================================= per-trial table
def objective_value(search: Search, trial: Trial) -> float | None:
    value = trial.final.get(search.metric)
    return float(value) if _number(value) and math.isfinite(value) else None


def trial_table(search: Search, params: Sequence[SearchedParam]) -> tuple[list[str], list[list[Any]]]:
    """One row per trial: trial, status, epochs, one column per searched parameter, the objective (at the
    trial's last epoch), Δm and every per-task metric of val and test, time, MLflow run id."""
    metrics = [*task_metrics(search, "val"), *task_metrics(search, "test")]
    extra = [m for m in ("val/delta_m", "test/delta_m") if m != search.metric and any(m in t.final for t in search.trials)]
    header = [
        "trial",
        "status",
        "epochs",
        *[p.name for p in params],
        search.metric,
        *extra,
        *[m for m in metrics if m != search.metric],
        "time_total_s",
        "run_id",
    ]
    rows = []
    for t in search.trials:
        cells: list[Any] = [t.trial_id, t.status, t.epochs]
        for p in params:
            v = t.params.get(p.name)
            cells.append(json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
        cells.append("" if objective_value(search, t) is None else objective_value(search, t))
        for m in [*extra, *[m for m in metrics if m != search.metric]]:
            cells.append(t.final.get(m, ""))
        cells += ["" if t.time_total_s is None else round(t.time_total_s, 2), t.run_id or ""]
        rows.append(cells)
    return header, rows


def write_trials_csv(path: Path, search: Search, params: Sequence[SearchedParam]) -> Path:
    header, rows = trial_table(search, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
