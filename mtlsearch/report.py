"""``python -m mtlsearch.report``: compare the trials of a finished search.

Input: an MLflow experiment (``--experiment NAME [--tracking-uri URI] [--search ID]``, the latest
search of the experiment by default) or a Ray results folder (``--results DIR``).  Output:

* **Leaderboard**, one row per (method, optimizer, GeMTL p bucket).  GeMTL's exponent p is bucketed
  as ``p<0`` (weights grow as a task's loss shrinks: leans towards the *easiest* task; p -> -inf is
  the min), ``0<=p<1`` (from the geometric mean, p -> 0, up to the arithmetic mean) and ``p>=1``
  (the arithmetic mean = equal weighting at p = 1, leaning towards the *hardest* task, the max, as
  p grows).  In each row: the best configuration by the search's objective, where trials of one
  configuration that differ only in ``seed`` are pooled and shown as mean ± sample std (n = the
  number of seeds); its Δm and every task metric; the trials, epochs, GPU-hours and CPU-hours the
  row's trials spent (Ray's ``time_total_s`` x the resources per trial) and how many ASHA stopped.
  A configuration's statistics use only its trials that reached ``max_epochs``; a row whose trials
  were all stopped early shows the best partial one, marked ``(partial)``.
* **Pareto set** of all trials that reached ``max_epochs`` (ASHA-stopped trials carry partial values
  and are left out) on every validation task metric: the configurations that no other one beats or
  equals on every task metric while beating it on one.
* **Figures** (``--out DIR``, and logged to the search's parent run under ``report/``): Δm against
  p (GeMTL), Δm against lr, Δm per method (box + strip), per-task learning curves of the best trials,
  the AdaTask task-dominance heatmap where ``dominance/<layer>/<task>`` metrics exist, and the
  Pareto front for each pair of task metrics.
* The leaderboard as a terminal table, Markdown (``--markdown FILE``) and CSV (``--csv FILE``; mean
  and std in separate numeric columns).

``python -m mtlsearch.report sync --results DIR [--tracking-uri URI] [--experiment NAME]`` copies a
Ray results folder into MLflow (after a tracking outage, or into another store): runs are looked up
by tags and only missing (metric, epoch) points are written, so syncing twice changes nothing.
"""
from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mtlsearch import tracking
from mtlsearch.errors import ConfigError
from mtlsearch.tracking import (
    STATUS_COMPLETED, STATUS_ERRORED, STATUS_RUNNING, STATUS_STOPPED, TAG_CHECKPOINT, TAG_EPOCHS, TAG_KIND,
    TAG_SEARCH, TAG_STATUS, TAG_TIME, TAG_TRIAL,
)

EXIT_BAD_INPUT = 2
#: Config keys that are not hyperparameters of a configuration (pooled over / never shown).
SEED_KEYS = ("seed",)
HIDDEN_KEYS = {"seed", "data_root", "device", "benchmark", "max_epochs"}
P_BUCKETS = ("p<0", "0<=p<1", "p>=1")
LOWER_IS_BETTER_HINTS = ("loss", "mae", "mse", "rmse", "error", "err", "abs_rel", "rel", "angle", "nll")


def p_bucket(p: Any) -> str:
    """GeMTL's p bucket (see the module docstring): ``p<0``, ``0<=p<1`` or ``p>=1``."""
    p = float(p)
    return P_BUCKETS[0] if p < 0 else P_BUCKETS[1] if p < 1 else P_BUCKETS[2]


# ======================================================================================= data model
@dataclass
class Trial:
    trial_id: str
    params: dict[str, Any]
    status: str
    final: dict[str, float]
    epochs: int
    time_total_s: float | None = None
    run_id: str | None = None
    checkpoint: str | None = None
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)  # raw rows (Ray folder only)
    _loader: Callable[[], dict[str, list[tuple[int, float]]]] | None = None
    _history: dict[str, list[tuple[int, float]]] | None = None

    def history(self) -> dict[str, list[tuple[int, float]]]:
        """``{metric: [(epoch, value), ...]}`` sorted by epoch (fetched lazily from MLflow)."""
        if self._history is None:
            self._history = self._loader() if self._loader else {}
        return self._history


@dataclass
class Search:
    name: str
    source: str
    search_id: str | None
    metric: str  # the scalar: ranks the leaderboard
    mode: str
    objectives: list[tuple[str, str]]
    max_epochs: int
    gpus_per_trial: float
    cpus_per_trial: float
    benchmark: str | None
    trials: list[Trial]
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    resources_known: bool = True

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def finished(self) -> bool:
        return bool(self.trials) and all(t.status != STATUS_RUNNING for t in self.trials)

    def delta_metric(self) -> str:
        """The Δm to plot: ``val/delta_m`` if reported, else the scalar."""
        return "val/delta_m" if any("val/delta_m" in t.final for t in self.trials) else self.metric


def _parse_value(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


# ======================================================================================= loading
def _search_all(client, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None):
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000,
                                  order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_mlflow(tracking_uri: str, experiment: str, search: str | None = None) -> Search:
    """A search from MLflow: ``search`` = a parent run id or search id (default: the latest)."""
    from mlflow.tracking import MlflowClient

    tracking.check_reachable(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"no experiment {experiment!r} at {tracking_uri}; there are: {', '.join(names) or 'none'}",
                          field="--experiment")
    parents = _search_all(client, [exp.experiment_id], f"tags.`{TAG_KIND}` = 'search'",
                          order_by=["attributes.start_time DESC"])
    if search:
        parents = [r for r in parents if search in (r.info.run_id, r.data.tags.get(TAG_SEARCH), r.info.run_name)]
    if not parents:
        raise ConfigError(f"experiment {experiment!r} has no search{f' {search!r}' if search else ''} "
                          "(parent run tagged mtlsearch.kind=search)", field="--search" if search else "--experiment")
    parent = parents[0]
    params = parent.data.params
    search_id = parent.data.tags[TAG_SEARCH]
    metric = params.get("objective_metric") or params.get("scalar_metric") or "val/delta_m"
    mode = params.get("objective_mode") or params.get("scalar_mode") or "max"
    if "objective_metrics" in params:
        objectives = list(zip(json.loads(params["objective_metrics"]), json.loads(params["objective_modes"])))
    else:
        objectives = [(metric, mode)]
    resources = json.loads(params.get("resources", "{}") or "{}")
    max_epochs = int(params.get("override.max_epochs") or params.get("max_epochs") or 0)

    runs = _search_all(client, [exp.experiment_id],
                       f"tags.`{TAG_SEARCH}` = '{search_id}' and tags.`{TAG_KIND}` = 'trial'")
    trials = []
    for run in runs:
        tags = run.data.tags
        run_id = run.info.run_id
        keys = list(run.data.metrics)

        def loader(run_id=run_id, keys=keys):
            return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}

        trial = Trial(
            trial_id=tags.get(TAG_TRIAL, run_id), params={k: _parse_value(v) for k, v in run.data.params.items()},
            status=tags.get(TAG_STATUS, STATUS_RUNNING), final=dict(run.data.metrics),
            epochs=int(tags[TAG_EPOCHS]) if TAG_EPOCHS in tags else 0,
            time_total_s=float(tags[TAG_TIME]) if TAG_TIME in tags else None, run_id=run_id,
            checkpoint=tags.get(TAG_CHECKPOINT), error=tags.get("error"), _loader=loader,
        )
        if TAG_EPOCHS not in tags and keys:  # still running: count the epochs logged so far
            trial.epochs = max((s for s, _ in trial.history().get(keys[0], [])), default=0)
        trials.append(trial)
    trials.sort(key=lambda t: t.trial_id)
    return Search(
        name=parent.info.run_name or Path(search_id).name, source=f"MLflow {tracking_uri} experiment {experiment!r}",
        search_id=search_id, metric=metric, mode=mode, objectives=objectives, max_epochs=max_epochs,
        gpus_per_trial=float(resources.get("gpus_per_trial", 0.0)), cpus_per_trial=float(resources.get("cpus_per_trial", 1.0)),
        benchmark=params.get("override.benchmark") or params.get("benchmark"), trials=trials,
        parent_run_id=parent.info.run_id, tracking_uri=tracking_uri, experiment=experiment,
        resources_known="resources" in params,
    )


def _ray_trial_states(folder: Path) -> dict[str, str]:
    """trial id -> Ray's status (TERMINATED, ERROR, RUNNING, ...) from the latest experiment state."""
    states = sorted(folder.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        out = {}
        for entry in data.get("trial_data", []):
            head = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            out[str(head["trial_id"])] = str(head.get("status", ""))
        return out
    except (ValueError, KeyError, TypeError, IndexError):
        return {}


def load_results(folder: str | Path) -> Search:
    """A search from a Ray results folder (``<storage>/<name>``: ``trial_*/result.json``, ``params.json``)."""
    folder = Path(folder).expanduser().resolve()
    trial_dirs = sorted(d for d in folder.iterdir() if (d / "params.json").is_file()) if folder.is_dir() else []
    if not trial_dirs:
        raise ConfigError(f"{folder} is not a Ray results folder (no <trial>/params.json in it)", field="--results")
    info = tracking.read_search_info(folder) or {}
    states = _ray_trial_states(folder)
    trials = []
    for d in trial_dirs:
        config = tracking.trial_params(json.loads((d / "params.json").read_text()))  # defaults too, as in MLflow
        rows = []
        result_file = d / "result.json"
        if result_file.is_file():
            for line in result_file.read_text().splitlines():
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:  # a line cut short by a crash
                        pass
        trial_id = str(rows[-1]["trial_id"]) if rows and "trial_id" in rows[-1] else d.name.removeprefix("trial_")
        history: dict[str, dict[int, float]] = {}
        for row in rows:
            step = int(row.get("epoch", row.get("training_iteration", 0)))
            for key, value in tracking.select_metrics(row).items():
                history.setdefault(key, {})[step] = value  # a resumed trial re-reports epochs: keep the last
        last = rows[-1] if rows else {}
        epochs = int(last.get("epoch", 0))
        max_epochs = int(info.get("max_epochs") or config.get("max_epochs") or 0)
        error_file = next((d / n for n in ("error.txt",) if (d / n).is_file()), None)
        state = states.get(trial_id)
        if error_file is not None or (d / "error.pkl").is_file() or state == "ERROR":
            status = STATUS_ERRORED
        elif state in (None, "TERMINATED"):
            status = tracking.trial_status(epochs, max_epochs)
        else:
            status = STATUS_RUNNING
        checkpoints = sorted(d.glob("checkpoint_*"))
        trials.append(Trial(
            trial_id=trial_id, params=config, status=status,
            final={k: v[max(v)] for k, v in history.items()}, epochs=epochs, time_total_s=last.get("time_total_s"),
            checkpoint=str(checkpoints[-1]) if checkpoints else None,
            error=error_file.read_text() if error_file else None, results=rows,
            _history={k: sorted(v.items()) for k, v in history.items()},
        ))
    objectives = [tuple(o) for o in info.get("objectives", [])] or [(info.get("metric", "val/delta_m"), info.get("mode", "max"))]
    resources = info.get("resources") or {}
    return Search(
        name=folder.name, source=f"Ray results {folder}", search_id=info.get("search_id") or str(folder),
        metric=info.get("metric", "val/delta_m"), mode=info.get("mode", "max"), objectives=objectives,
        max_epochs=int(info.get("max_epochs") or max((int(t.params.get("max_epochs", 0)) for t in trials), default=0)),
        gpus_per_trial=float(resources.get("gpus_per_trial", 0.0)), cpus_per_trial=float(resources.get("cpus_per_trial", 1.0)),
        benchmark=info.get("benchmark") or trials[0].params.get("benchmark"), trials=trials,
        tracking_uri=info.get("tracking_uri"), experiment=info.get("experiment"), info=info,
        resources_known=bool(resources),
    )


# ======================================================================================= Pareto
def pareto_mask(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[bool]:
    """True for each point that no other point dominates.

    ``a`` dominates ``b`` when ``a`` is at least as good on every objective and strictly better on one
    (``modes[k]`` says whether objective k is maximised or minimised).  Equal points do not dominate
    each other, so duplicates on the front are all kept.
    """
    signs = [1.0 if m == "max" else -1.0 for m in modes]
    pts = [[s * float(v) for s, v in zip(signs, p)] for p in points]
    keep = []
    for i, a in enumerate(pts):
        dominated = any(
            all(bk >= ak for ak, bk in zip(a, b)) and any(bk > ak for ak, bk in zip(a, b))
            for j, b in enumerate(pts) if j != i
        )
        keep.append(not dominated)
    return keep


def pareto_rows(rows: list[dict[str, Any]], objectives: Sequence[tuple[str, str]], max_epochs: int) -> list[dict[str, Any]]:
    """The launcher's rows (``_metrics``, ``epochs``) on the Pareto front of ``objectives``, among the
    trials that reached ``max_epochs`` (an ASHA-stopped trial's values are partial)."""
    full = [r for r in rows if r.get("epochs", 0) >= max_epochs
            and all(isinstance(r["_metrics"].get(m), (int, float)) for m, _ in objectives)]
    mask = pareto_mask([[r["_metrics"][m] for m, _ in objectives] for r in full], [d for _, d in objectives])
    front = [r for r, keep in zip(full, mask) if keep]
    first, direction = objectives[0]
    return sorted(front, key=lambda r: r["_metrics"][first], reverse=direction == "max")


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
        except Exception:  # noqa: BLE001 - data moved, or a benchmark this checkout does not know
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
    return objectives, cands, pareto_mask([[t.final[m] for m in metrics] for t in cands], [d for _, d in objectives])


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


def group_of(trial: Trial) -> tuple[str, str, str]:
    method = str(trial.params.get("method", "?"))
    bucket = p_bucket(trial.params["p"]) if method == "gemtl" and isinstance(trial.params.get("p"), (int, float)) else ""
    return method, str(trial.params.get("optimizer", "")), bucket


def leaderboard(search: Search) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (method, optimizer, p bucket), best first; and the metric columns it fills."""
    sign = 1.0 if search.mode == "max" else -1.0
    val_metrics = task_metrics(search, "val")
    test_metrics = task_metrics(search, "test")
    metrics = [*val_metrics, *[m for m in ("val/delta_m",) if any(m in t.final for t in search.trials)],
               *test_metrics, *[m for m in ("test/delta_m",) if any(m in t.final for t in search.trials)]]
    if search.metric not in metrics:
        metrics.insert(0, search.metric)
    shown = searched_keys(search)
    groups: dict[tuple[str, str, str], list[Trial]] = {}
    for t in search.trials:
        groups.setdefault(group_of(t), []).append(t)

    rows = []
    for (method, optimizer, bucket), trials in groups.items():
        configs: dict[str, list[Trial]] = {}
        for t in trials:
            if t.status != STATUS_ERRORED and search.metric in t.final:
                configs.setdefault(_config_key(t), []).append(t)
        best = None  # (partial?, score, pool)
        for pool in configs.values():
            done = [t for t in pool if t.status == STATUS_COMPLETED]
            partial = not done
            pool = done or pool
            score = sum(t.final[search.metric] for t in pool) / len(pool)
            key = (not partial, sign * score)
            if best is None or key > best[0]:
                best = (key, pool)
        row: dict[str, Any] = {
            "method": method, "optimizer": optimizer, "p bucket": bucket, "trials": len(trials),
            "asha_stopped": sum(t.status == STATUS_STOPPED for t in trials),
            "errored": sum(t.status == STATUS_ERRORED for t in trials),
            "epochs_spent": sum(t.epochs for t in trials),
            "gpu_hours": sum(t.time_total_s or 0.0 for t in trials) * search.gpus_per_trial / 3600.0,
            "cpu_hours": sum(t.time_total_s or 0.0 for t in trials) * search.cpus_per_trial / 3600.0,
        }
        if best is not None:
            (complete, _), pool = best
            ref = pool[0]
            row["best_trials"] = " ".join(t.trial_id for t in pool)
            row["config"] = " ".join(f"{k}={_fmt(ref.params[k])}" for k in shown if k in ref.params)
            row["seeds"] = len(pool)
            row["epochs"] = max(t.epochs for t in pool)
            row["partial"] = not complete
            row["_pool"] = pool
            for m in metrics:
                values = [t.final[m] for t in pool if m in t.final]
                if values:
                    row[m], row[m + " std"] = _mean_std(values)
        rows.append(row)
    rows.sort(key=lambda r: (search.metric not in r, -sign * r.get(search.metric, 0.0)))
    return rows, metrics


def _fmt(value: Any) -> str:
    from mtlsearch.launch import _fmt as fmt

    return fmt(value)


def _cell(row: Mapping[str, Any], metric: str) -> str:
    if metric not in row:
        return "-"
    std = row.get(metric + " std")
    return _fmt(row[metric]) + (f" ± {_fmt(std)}" if std is not None else "")


def table_columns(search: Search, metrics: list[str], *, wide: bool = False) -> list[str]:
    """Columns of the terminal / Markdown table (``wide``: the test split's task metrics too)."""
    shown = [m for m in metrics if wide or not (m.startswith("test/") and m != "test/delta_m")]
    return ["method", "optimizer", "p bucket", "config", "seeds", *shown, "epochs", "trials", "ASHA-stopped",
            "errored", "epochs spent", "GPU-h", "CPU-h"]


def _row_cells(row: Mapping[str, Any], columns: list[str], metrics: list[str]) -> list[str]:
    out = []
    for c in columns:
        if c in metrics:
            out.append(_cell(row, c))
        elif c == "config":
            out.append(row.get("config", "") or "-")
        elif c == "epochs":
            out.append(f"{row['epochs']}{' (partial)' if row.get('partial') else ''}" if "epochs" in row else "-")
        elif c == "ASHA-stopped":
            out.append(str(row["asha_stopped"]))
        elif c == "epochs spent":
            out.append(str(row["epochs_spent"]))
        elif c == "GPU-h":
            out.append(f"{row['gpu_hours']:.3f}")
        elif c == "CPU-h":
            out.append(f"{row['cpu_hours']:.3f}")
        else:
            out.append(str(row.get(c, "")) or "-")
    return out


def format_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in b) + " |" for b in body]
    return "\n".join(lines)


def totals(search: Search) -> str:
    n = len(search.trials)
    count = lambda s: sum(t.status == s for t in search.trials)  # noqa: E731
    seconds = sum(t.time_total_s or 0.0 for t in search.trials)
    res = (f"{_fmt(search.gpus_per_trial)} GPU and {_fmt(search.cpus_per_trial)} CPU per trial"
           if search.resources_known else "resources per trial unknown: assumed 0 GPU, 1 CPU")
    return (f"{n} trials ({count(STATUS_COMPLETED)} completed, {count(STATUS_STOPPED)} stopped early by ASHA, "
            f"{count(STATUS_ERRORED)} errored" + (f", {count(STATUS_RUNNING)} running" if count(STATUS_RUNNING) else "")
            + f"); {sum(t.epochs for t in search.trials)} epochs; "
            f"{seconds * search.gpus_per_trial / 3600:.3f} GPU-hours, {seconds * search.cpus_per_trial / 3600:.3f} "
            f"CPU-hours ({res})")


def pareto_table(search: Search, *, markdown: bool = False) -> tuple[str, list[Trial]]:
    objectives, cands, mask = pareto_set(search)
    front = [t for t, keep in zip(cands, mask) if keep]
    if objectives:
        first, direction = objectives[0]
        front.sort(key=lambda t: t.final[first], reverse=direction == "max")
    shown = searched_keys(search)
    delta = [m for m in ("val/delta_m",) if any(m in t.final for t in front)]
    header = ["trial", "method", "optimizer", "config", *[f"{m} ({d})" for m, d in objectives], *delta]
    body = [[t.trial_id, str(t.params.get("method", "")), str(t.params.get("optimizer", "")),
             " ".join(f"{k}={_fmt(t.params[k])}" for k in shown if k in t.params) or "-",
             *[_fmt(t.final[m]) for m, _ in objectives], *[_fmt(t.final[m]) for m in delta]] for t in front]
    title = (f"Pareto set: {len(front)} of {len(cands)} trials that reached {search.max_epochs} epochs are not "
             f"dominated on {', '.join(m for m, _ in objectives) or '(no task metric)'}")
    table = markdown_table(header, body) if markdown else format_table(header, body)
    gap = "\n\n" if markdown else "\n"
    return f"{title}{gap}{table}" if front else f"{title}{gap}(none)", front


# ======================================================================================= figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(t: Trial, several_optimizers: bool) -> str:
    m = str(t.params.get("method", "?"))
    return f"{m}+{t.params.get('optimizer')}" if several_optimizers and t.params.get("optimizer") else m


def _scatter_status(ax, xs, ys, statuses, color, label):
    done = [(x, y) for x, y, s in zip(xs, ys, statuses) if s == STATUS_COMPLETED]
    part = [(x, y) for x, y, s in zip(xs, ys, statuses) if s != STATUS_COMPLETED]
    if done:
        ax.scatter(*zip(*done), color=color, s=36, label=label, zorder=3)
    if part:
        ax.scatter(*zip(*part), facecolors="none", edgecolors=color, s=36, zorder=3,
                   label=f"{label} (stopped early)" if not done else None)


def fig_delta_vs_param(search: Search, out: Path, param: str, *, methods: Iterable[str] | None = None, log: bool = False,
                       filename: str) -> Path | None:
    plt = _plt()
    dm = search.delta_metric()
    pts = [t for t in search.trials if isinstance(t.params.get(param), (int, float)) and not isinstance(t.params.get(param), bool)
           and dm in t.final and (methods is None or t.params.get("method") in methods)]
    if not pts:
        return None
    several = len({t.params.get("optimizer") for t in search.trials}) > 1
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels = sorted({_label(t, several) for t in pts})
    colors = plt.get_cmap("tab10")
    for i, lab in enumerate(labels):
        sel = [t for t in pts if _label(t, several) == lab]
        _scatter_status(ax, [t.params[param] for t in sel], [t.final[dm] for t in sel], [t.status for t in sel],
                        colors(i % 10), lab)
    if log:
        ax.set_xscale("log")
    if param == "p":
        for x in (0.0, 1.0):
            ax.axvline(x, color="0.6", ls=":", lw=1)
        lo, hi = ax.get_xlim()
        for name, x in zip(P_BUCKETS, ((lo + 0) / 2, 0.5, (1 + hi) / 2)):
            ax.text(x, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8, color="0.4")
    ax.set_xlabel(param + (" (log scale)" if log else ""))
    ax.set_ylabel(f"{dm} (%, higher is better)" if dm.endswith("delta_m") else dm)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    what = "GeMTL: " if methods else ""
    ax.set_title(f"{what}{dm} against {param} ({len(pts)} trials; hollow = stopped early by ASHA)", fontsize=9, pad=14)
    fig.tight_layout()
    path = out / filename
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig_delta_by_method(search: Search, out: Path) -> Path | None:
    plt = _plt()
    import random

    dm = search.delta_metric()
    pts = [t for t in search.trials if dm in t.final]
    if not pts:
        return None
    several = len({t.params.get("optimizer") for t in search.trials}) > 1
    labels = sorted({_label(t, several) for t in pts})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 2), 4.2))
    done = [[t.final[dm] for t in pts if _label(t, several) == lab and t.status == STATUS_COMPLETED] for lab in labels]
    if any(done):
        ax.boxplot([d if d else [float("nan")] for d in done], positions=range(1, len(labels) + 1), widths=0.5,
                   showfliers=False)
    rng = random.Random(0)
    for i, lab in enumerate(labels, 1):
        sel = [t for t in pts if _label(t, several) == lab]
        xs = [i + rng.uniform(-0.15, 0.15) for _ in sel]
        _scatter_status(ax, xs, [t.final[dm] for t in sel], [t.status for t in sel], "C0", None)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel(f"{dm} (%)" if dm.endswith("delta_m") else dm)
    ax.set_title(f"{dm} per method\nbox: trials that reached {search.max_epochs} epochs; hollow: stopped early", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "delta_m_by_method.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig_learning_curves(search: Search, rows: list[dict[str, Any]], out: Path, top: int = 6) -> Path | None:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    best = [(r, r["_pool"][0]) for r in rows if r.get("_pool")][:top]
    metrics = [*task_metrics(search, "val"), *[m for m in ("val/delta_m",) if any(m in t.final for t in search.trials)]]
    if not best or not metrics:
        return None
    modes = metric_modes(search, metrics)
    cols = min(len(metrics), 4)
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for i, (row, trial) in enumerate(best):
            hist = trial.history().get(m, [])
            if hist:
                label = f"{row['method']}{'+' + row['optimizer'] if row['optimizer'] else ''} {row['p bucket']} ({trial.trial_id})"
                ax.plot(*zip(*hist), marker="o", ms=3, color=f"C{i}", label=label)
        ax.set_title(f"{m} ({'lower' if modes[m] == 'min' else 'higher'} is better)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
    fig.suptitle("Learning curves of the best trial of each leaderboard row", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(labels) > 3), 1, 0.96))
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig_dominance(search: Search, out: Path) -> Path | None:
    """Task-dominance heatmap (rAU per shared layer and task, last epoch) of the best trial that
    logged it, one panel per optimizer (e.g. Adam vs Adam+AdaTask)."""
    sign = 1.0 if search.mode == "max" else -1.0
    with_dom = [t for t in search.trials if any(k.startswith("dominance/") for k in t.final)]
    if not with_dom:
        return None
    from mtlsearch.dominance import table_from_metrics
    from mtlsearch.dominance.heatmap import draw_heatmaps

    best: dict[str, Trial] = {}
    for t in sorted(with_dom, key=lambda t: (t.status == STATUS_COMPLETED, sign * t.final.get(search.metric, -math.inf * sign)),
                    reverse=True):
        best.setdefault(str(t.params.get("optimizer", "")), t)
    panels = {f"{t.params.get('method')} + {opt} ({t.trial_id})": table_from_metrics(t.final) for opt, t in best.items()}
    return draw_heatmaps(panels, out / "task_dominance.png", title="Task dominance of the shared layers (last epoch)")


def fig_pareto(search: Search, out: Path, max_pairs: int = 6) -> Path | None:
    plt = _plt()
    objectives, cands, mask = pareto_set(search)
    if len(objectives) < 2 or not cands:
        return None
    pairs = list(itertools.combinations(range(len(objectives)), 2))[:max_pairs]
    cols = min(3, len(pairs))
    nrows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 3.8 * nrows), squeeze=False)
    for ax, (a, b) in zip(axes.flat, pairs):
        (ma, da), (mb, db) = objectives[a], objectives[b]
        xs = [t.final[ma] for t in cands]
        ys = [t.final[mb] for t in cands]
        ax.scatter([x for x, k in zip(xs, mask) if not k], [y for y, k in zip(ys, mask) if not k], color="0.7", s=22,
                   label="dominated")
        ax.scatter([x for x, k in zip(xs, mask) if k], [y for y, k in zip(ys, mask) if k], color="C3", s=36,
                   label="Pareto set (all task metrics)", zorder=3)
        for t, x, y, k in zip(cands, xs, ys, mask):
            if k:
                ax.annotate(t.trial_id, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        pair_mask = pareto_mask(list(zip(xs, ys)), [da, db])  # the 2-D front of this pair, as a staircase
        front = sorted((x, y) for x, y, k in zip(xs, ys, pair_mask) if k)
        if len(front) > 1:
            # The border of the region the front dominates: vertical steps at a point when x is maximised.
            ax.step(*zip(*front), where="pre" if da == "max" else "post", color="C3", lw=1, alpha=0.6)
        ax.set_xlabel(f"{ma} ({'lower' if da == 'min' else 'higher'} is better)", fontsize=8)
        ax.set_ylabel(f"{mb} ({'lower' if db == 'min' else 'higher'} is better)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Pareto front: {sum(mask)} of {len(cands)} trials that reached {search.max_epochs} epochs are not "
                 "dominated on every task metric", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = out / "pareto.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_figures(search: Search, rows: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        fig_delta_vs_param(search, out, "p", methods={"gemtl"}, filename="delta_m_vs_p.png"),
        fig_delta_vs_param(search, out, "lr", log=True, filename="delta_m_vs_lr.png"),
        fig_delta_by_method(search, out),
        fig_learning_curves(search, rows, out),
        fig_dominance(search, out),
        fig_pareto(search, out),
    ]
    return [p for p in paths if p is not None]


# ======================================================================================= outputs
def write_csv(path: Path, rows: list[dict[str, Any]], metrics: list[str]) -> None:
    base = ["method", "optimizer", "p bucket", "config", "best_trials", "seeds", "epochs", "partial", "trials",
            "asha_stopped", "errored", "epochs_spent", "gpu_hours", "cpu_hours"]
    header = base + [c for m in metrics for c in (m, m + " std")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c, "") for c in header])


def render(search: Search, *, markdown: bool = False, wide: bool = False) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The report as text (terminal or Markdown): leaderboard, totals, Pareto set."""
    rows, metrics = leaderboard(search)
    columns = table_columns(search, metrics, wide=wide)
    body = [_row_cells(r, columns, metrics) for r in rows]
    objective = ", ".join(f"{m} ({d})" for m, d in search.objectives)
    head = (f"Search {search.name} ({search.source}); objective {objective}"
            + (f"; ranked by {search.metric} ({search.mode})" if search.multi_objective else "")
            + f"; max_epochs {search.max_epochs}")
    parts = []
    if markdown:
        parts += [f"**{head}**", "", markdown_table(columns, body), "", totals(search), ""]
    else:
        parts += [head, "", format_table(columns, body), "", totals(search), ""]
    ptable, _ = pareto_table(search, markdown=markdown)
    parts += [ptable]
    if not search.finished:
        parts += ["", "Note: some trials are still running; their values are partial."]
    return "\n".join(parts) + "\n", rows, metrics


def report(args: argparse.Namespace) -> int:
    if args.results:
        search = load_results(args.results)
    else:
        search = load_mlflow(args.tracking_uri or tracking.default_tracking_uri(), args.experiment, args.search)
    if not search.trials:
        raise ConfigError(f"search {search.name!r} has no trials yet", field="--experiment")
    text, rows, metrics = render(search)
    print(text, end="")
    if args.markdown:
        md, _, _ = render(search, markdown=True, wide=True)
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(md)
        print(f"Markdown: {args.markdown}")
    if args.csv:
        write_csv(Path(args.csv), rows, metrics)
        print(f"CSV: {args.csv}")
    if not args.no_figures:
        out = Path(args.out) if args.out else Path("mtlsearch_report") / search.name
        figures = make_figures(search, rows, out)
        print(f"Figures in {out}: {', '.join(p.name for p in figures) or 'none'}")
        if search.parent_run_id and not args.no_log:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=search.tracking_uri)
            client.log_text(search.parent_run_id, render(search, markdown=True, wide=True)[0], "report/leaderboard.md")
            for path in figures:
                client.log_artifact(search.parent_run_id, str(path), "report")
            print(f"Logged to MLflow run {search.parent_run_id} (artifacts report/)")
    return 0


# ======================================================================================= sync
def sync(results: str | Path, tracking_uri: str, experiment: str | None = None) -> dict[str, int]:
    """Copy a Ray results folder into MLflow, idempotently; returns counts of what was written."""
    from mlflow.tracking import MlflowClient

    search = load_results(results)
    tracking.check_reachable(tracking_uri)
    experiment = experiment or search.experiment or search.name.rsplit("-", 2)[0]
    before = 0
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        before = len(_search_all(client, [exp.experiment_id], f"tags.`{TAG_SEARCH}` = '{search.search_id}'"))
    tracker = tracking.Tracker(tracking_uri, experiment, search.search_id, tolerant=False)
    info = search.info or {"params": {"objective_metric": search.metric, "objective_mode": search.mode,
                                      "max_epochs": search.max_epochs}}
    tracker.start_search_from(info, reopen=False)
    written = 0
    for t in search.trials:
        tracker.trial_run(t.trial_id, t.params)
        written += tracker.log_results(t.trial_id, t.params, t.results)
        if t.status != STATUS_RUNNING:
            tracker.end_trial(t.trial_id, t.params, t.status, error=t.error, checkpoint=t.checkpoint, epochs=t.epochs,
                              time_total_s=t.time_total_s)
    if search.finished:
        sign = 1.0 if search.mode == "max" else -1.0
        ranked = sorted((t for t in search.trials if search.metric in t.final), key=lambda t: -sign * t.final[search.metric])
        best = None
        if ranked:
            top = ranked[0]
            best = {"trial_id": top.trial_id, "config": top.params, "metrics": top.final}
        pareto = None
        if search.multi_objective:
            rows = [{"trial": t.trial_id, "epochs": t.epochs, "_metrics": t.final} for t in search.trials
                    if t.status != STATUS_ERRORED]
            pareto = [r["trial"] for r in pareto_rows(rows, search.objectives, search.max_epochs)]
        tracker.end_search(best, pareto=pareto)
    after = len(_search_all(tracker.client, [tracker.experiment_id], f"tags.`{TAG_SEARCH}` = '{search.search_id}'"))
    return {"runs_created": after - before, "metric_values": written, "trials": len(search.trials),
            "experiment": experiment, "parent_run_id": tracker.parent_run_id}


# ======================================================================================= CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.report",
        description="Leaderboard, Pareto set and figures of a search (from MLflow or a Ray results folder). "
                    "`python -m mtlsearch.report sync --results DIR` copies a Ray results folder into MLflow.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", help="MLflow experiment of the search (the space's name by default in the launcher)")
    src.add_argument("--results", help="a Ray results folder (<storage>/<search name>) instead of MLflow")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--search", help="parent run id or search id within the experiment (default: the latest search)")
    p.add_argument("--out", help="folder for the figures (default: mtlsearch_report/<search name>)")
    p.add_argument("--markdown", help="write the leaderboard and Pareto set as Markdown to this file")
    p.add_argument("--csv", help="write the leaderboard as CSV to this file")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--no-log", action="store_true", help="do not log the figures to the search's parent run")
    return p


def build_sync_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.report sync",
        description="Copy a Ray results folder into MLflow: missing runs and (metric, epoch) points only.",
    )
    p.add_argument("--results", required=True, help="the Ray results folder of the search (<storage>/<name>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: the one the search was launched with)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["sync"]:
            args = build_sync_parser().parse_args(argv[1:])
            uri = args.tracking_uri or tracking.default_tracking_uri()
            counts = sync(args.results, uri, args.experiment)
            print(f"Synced {args.results} into {uri} (experiment {counts['experiment']!r}, parent run "
                  f"{counts['parent_run_id']}): {counts['trials']} trials, {counts['runs_created']} runs created, "
                  f"{counts['metric_values']} metric values written")
            return 0
        return report(build_parser().parse_args(argv))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
