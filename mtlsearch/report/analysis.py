"""Analysis of a loaded search: the leaderboard (best configuration per method, optimizer and bucket of
a hyperparameter whose method declares buckets, e.g. GeMTL's p; seeds pooled), task metrics and their
directions, the Pareto set (through :mod:`mtlsearch.results`), and the hyperparameters the search's
methods declare (:func:`method_params`: the report takes names, buckets and owners from there)."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

from mtlsearch import results
from mtlsearch.report.load import Search, Trial
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED

if TYPE_CHECKING:
    from mtlsearch.hparams import HParam

#: Config keys that are not hyperparameters of a configuration (pooled over / never shown).
SEED_KEYS = ("seed",)
HIDDEN_KEYS = {"seed", "data_root", "device", "benchmark", "max_epochs"}
LOWER_IS_BETTER_HINTS = ("loss", "mae", "mse", "rmse", "error", "err", "abs_rel", "rel", "angle", "nll")


@dataclass(frozen=True)
class MethodParam:
    """A hyperparameter that methods of the search declare: its declaration (``spec``: rule, buckets),
    the methods as the trials name them, and their classes' names (``GeMTL``)."""

    name: str
    spec: HParam[Any]
    methods: tuple[str, ...]
    owners: tuple[str, ...]

    BUCKET: ClassVar[str] = " bucket"

    @property
    def column(self) -> str:
        """The leaderboard's column of its buckets (``p bucket``)."""
        return self.name + self.BUCKET


def method_params(search: Search) -> dict[str, MethodParam]:
    """The hyperparameters declared by the methods the search's trials ran, by name (a method this
    checkout cannot load, e.g. a user's file that moved, declares none)."""
    names = tuple(sorted({str(t.params["method"]) for t in search.trials if t.params.get("method")}))
    return dict(_method_params(names))


@functools.lru_cache(maxsize=32)
def _method_params(methods: tuple[str, ...]) -> tuple[tuple[str, MethodParam], ...]:
    from mtlsearch.balancing import get_method
    from mtlsearch.hparams import HParam

    found: dict[str, tuple[HParam[Any], list[str], list[str]]] = {}
    for method in methods:
        try:
            cls = get_method(method)
        except Exception:  # unknown here, or a plugin that no longer imports: the report goes on without
            continue
        for key, spec in cls.hyperparams.items():
            if isinstance(spec, HParam):
                _, users, owners = found.setdefault(key, (spec, [], []))
                users.append(method)
                owners.append(cls.__name__)
    return tuple((k, MethodParam(k, spec, tuple(users), tuple(dict.fromkeys(owners)))) for k, (spec, users, owners) in found.items())


def bucket_params(search: Search) -> list[MethodParam]:
    """The method hyperparameters whose buckets get leaderboard rows of their own (GeMTL's p: ``p<0``,
    ``0<=p<1``, ``p>=1``, where its weighting leans towards the easiest task, averages, or leans
    towards the hardest)."""
    return [mp for mp in method_params(search).values() if mp.spec.buckets]


def group_columns(search: Search) -> list[str]:
    """The leaderboard's group columns: method, optimizer and one per bucketed hyperparameter."""
    return ["method", "optimizer", *[mp.column for mp in bucket_params(search)]]


def benchmark_objectives(search: Search, split: str) -> list[tuple[str, str]]:
    """The benchmark's ``(<split>/<task>/<metric>, mode)`` in task order; a folder benchmark is opened
    with the trials' ``data_root`` (its tasks may come from the folder); [] if that cannot be done."""
    if not search.benchmark:
        return []
    roots = tuple(sorted({str(t.params["data_root"]) for t in search.trials if t.params.get("data_root")}))
    return list(_benchmark_objectives(search.benchmark, roots, split))


@functools.lru_cache(maxsize=32)
def _benchmark_objectives(benchmark: str, roots: tuple[str, ...], split: str) -> tuple[tuple[str, str], ...]:
    """Cached: opening a folder benchmark checks its files, and a report asks several times."""
    from mtlsearch.spaces import task_objectives

    for root in [*roots, None]:
        try:
            return tuple(task_objectives(benchmark, root, split=split))
        except Exception:  # data moved, or a benchmark this checkout does not know
            continue
    return ()


def metric_modes(search: Search, metrics: Iterable[str]) -> dict[str, str]:
    """Direction of each task metric: the search's objectives, the benchmark's ``lower_is_better``,
    else the metric's name (loss, mae, mse, rmse, error, ... are minimised)."""
    known = dict(search.objectives)
    for split in ("val", "test"):
        known.update(dict(benchmark_objectives(search, split)))
    out = {}
    for m in metrics:
        name = m.rsplit("/", 1)[-1].lower()
        out[m] = known.get(m) or ("min" if any(h in name for h in LOWER_IS_BETTER_HINTS) else "max")
    return out


def task_metrics(search: Search, split: str = "val") -> list[str]:
    """``<split>/<task>/<metric>`` reported by the search's trials, in the benchmark's task order."""
    seen = {k for t in search.trials for k in t.final if k.startswith(split + "/") and k.count("/") == 2}
    order = [m for m, _ in benchmark_objectives(search, split)]
    return [m for m in order if m in seen] + sorted(seen - set(order))


def pareto_set(search: Search) -> tuple[list[tuple[str, str]], list[Trial], list[bool]]:
    """(metrics with modes, candidate trials, mask): trials that reached ``max_epochs`` on every
    validation task metric."""
    metrics = task_metrics(search, "val")
    modes = metric_modes(search, metrics)
    objectives = [(m, modes[m]) for m in metrics]
    cands = [t for t in search.trials if t.status == STATUS_COMPLETED and all(m in t.final for m in metrics)]
    if not objectives:
        return objectives, cands, [True] * len(cands)
    return objectives, cands, results.pareto_mask([[t.final[m] for m in metrics] for t in cands], [d for _, d in objectives])


# ======================================================================================= leaderboard
def searched_keys(search: Search) -> list[str]:
    """Parameters whose value differs between trials (what the search varied), minus the seed."""
    keys: dict[str, set] = {}
    for t in search.trials:
        for k, v in t.params.items():
            keys.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    varied = [k for k, vals in keys.items() if len(vals) > 1 or any(k not in t.params for t in search.trials)]
    return [k for k in sorted(varied) if k not in HIDDEN_KEYS and k not in ("method", "optimizer")]


def _config_key(trial: Trial) -> str:
    return json.dumps({k: v for k, v in trial.params.items() if k not in SEED_KEYS}, sort_keys=True, default=str)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def row_group_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The group columns of leaderboard rows: method, optimizer and each bucket column they hold."""
    buckets = dict.fromkeys(k for row in rows for k in row if k.endswith(MethodParam.BUCKET))
    return ["method", "optimizer", *buckets]


def group_of(trial: Trial, buckets: Sequence[MethodParam] = ()) -> tuple[str, str, tuple[str, ...]]:
    """(method, optimizer, the trial's bucket of each of ``buckets``: "" where its method does not declare it)."""
    method = str(trial.params.get("method", "?"))
    cells = tuple(mp.spec.bucket(trial.params.get(mp.name)) if method in mp.methods else "" for mp in buckets)
    return method, str(trial.params.get("optimizer", "")), cells


def _pooled(pool: list[Trial], metric: str) -> list[float]:
    """Every seed's value of ``metric`` over the trials of one configuration (a k-seed trial's
    ``seed<s>/`` values, else its one value)."""
    return [v for t in pool for v in results.seed_values(t.final, metric)]


def leaderboard(search: Search) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (method, optimizer, bucket of each bucketed hyperparameter), best first
    (:func:`mtlsearch.results.rank_with_uncertainty`: completed configurations by their mean over
    seeds, then partial ones, errored groups last); each row is the group's best configuration with its
    seeds pooled (``mean``, ``ci95``, ``seeds``, ``tied`` with the best row, ``status``); and the metric
    columns it fills."""
    sign = results.sign(search.mode)
    val_metrics = task_metrics(search, "val")
    test_metrics = task_metrics(search, "test")
    metrics = [
        *val_metrics,
        *[m for m in ("val/delta_m",) if any(m in t.final for t in search.trials)],
        *test_metrics,
        *[m for m in ("test/delta_m",) if any(m in t.final for t in search.trials)],
    ]
    if search.metric not in metrics:
        metrics.insert(0, search.metric)
    shown = searched_keys(search)
    buckets = bucket_params(search)
    groups: dict[tuple[str, str, tuple[str, ...]], list[Trial]] = {}
    for t in search.trials:
        groups.setdefault(group_of(t, buckets), []).append(t)

    rows = []
    for (method, optimizer, cells), trials in groups.items():
        configs: dict[str, list[Trial]] = {}
        for t in trials:
            if t.status != STATUS_ERRORED and search.metric in t.final:
                configs.setdefault(_config_key(t), []).append(t)
        best = None  # (complete?, mean), pool
        for pool in configs.values():
            done = [t for t in pool if t.status == STATUS_COMPLETED]
            partial = not done
            pool = done or pool
            values = _pooled(pool, search.metric)
            key = (not partial, sign * sum(values) / len(values))
            if best is None or key > best[0]:
                best = (key, pool)
        row: dict[str, Any] = {
            "method": method,
            "optimizer": optimizer,
            **{mp.column: cell for mp, cell in zip(buckets, cells)},
            "trials": len(trials),
            "asha_stopped": sum(t.status == STATUS_STOPPED for t in trials),
            "errored": sum(t.status == STATUS_ERRORED for t in trials),
            "epochs_spent": sum(t.epochs for t in trials),
            "gpu_hours": sum(t.time_total_s or 0.0 for t in trials) * search.gpus_per_trial / 3600.0,
            "cpu_hours": sum(t.time_total_s or 0.0 for t in trials) * search.cpus_per_trial / 3600.0,
            "status": STATUS_ERRORED if all(t.status == STATUS_ERRORED for t in trials) else results.RUNNING,
            "_seeds": [],
        }
        if best is not None:
            (complete, _), pool = best
            ref = pool[0]
            row["best_trials"] = " ".join(t.trial_id for t in pool)
            row["config"] = " ".join(f"{k}={results.fmt(ref.params[k])}" for k in shown if k in ref.params)
            row["epochs"] = max(t.epochs for t in pool)
            row["partial"] = not complete
            row["status"] = STATUS_COMPLETED if complete else STATUS_STOPPED
            row["_pool"] = pool
            row["_seed_metrics"] = [t.final for t in pool]
            row["_seeds"] = _pooled(pool, search.metric)
            for m in metrics:
                values = _pooled(pool, m)
                if values:
                    row[m], row[m + " std"] = _mean_std(values)
        rows.append(row)
    return results.rank_with_uncertainty(rows, search.mode), metrics


def config_standings(search: Search) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every configuration of the search (trials pooled over seeds, the ``final`` stage's re-runs
    included) ranked with its uncertainty: ``({trial id: its configuration's standing}, ranked
    configurations)``.  A configuration's status is ``completed`` when one of its trials completed (its
    completed trials pooled), else that of its trials; errored trials are left out of every pool and
    get no standing."""
    configs: dict[str, list[Trial]] = {}
    for t in search.trials:
        if t.status != STATUS_ERRORED and search.metric in t.final:
            configs.setdefault(_config_key(t), []).append(t)
    entries = []
    for pool in configs.values():
        done = [t for t in pool if t.status == STATUS_COMPLETED]
        used = done or pool
        status = STATUS_COMPLETED if done else (STATUS_STOPPED if any(t.status == STATUS_STOPPED for t in pool) else results.RUNNING)
        entries.append({"trials": [t.trial_id for t in pool], "status": status, "_seeds": _pooled(used, search.metric)})
    ranked = results.rank_with_uncertainty(entries, search.mode)
    by_trial = {}
    for position, entry in enumerate(ranked, 1):
        entry["rank"] = position
        for trial_id in entry["trials"]:
            by_trial[trial_id] = entry
    return by_trial, ranked
