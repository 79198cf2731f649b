"""Ranking results: the one place that orders trials, picks the best one, computes the Pareto set and
formats results tables.  Every ranking carries its uncertainty: a configuration's value is the mean over
its seeds with a 95% interval, and the configurations that the seeds cannot tell from the best are
marked tied (the statistics: :mod:`mtlsearch.uncertainty`); every row says its status (completed,
stopped early by ASHA, errored), and an errored trial is never best.  The launcher (after a search)
and the report (from MLflow or a Ray results folder) both use it, so they cannot disagree on which
trial is best.

Nothing here imports Ray or MLflow: a "row" is a plain dict (``_metrics``: the trial's last result,
``epochs``, ...), a Ray ``ResultGrid`` is only iterated.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

from mtlsearch import uncertainty

if TYPE_CHECKING:
    from ray.tune import ResultGrid

    from mtlsearch.spaces import SearchSpace


T = TypeVar("T")

__all__ = [
    "best",
    "best_standing",
    "fmt",
    "format_table",
    "markdown_table",
    "pareto_mask",
    "pareto_rows",
    "rank",
    "rank_with_uncertainty",
    "results_table",
    "seed_values",
    "seed_values_of",
    "sign",
    "status_counts",
    "summarize",
    "summarize_trials",
    "table_notes",
    "tie_mark",
    "value_cell",
]


# ======================================================================================= ranking
def sign(mode: str) -> float:
    """+1 when the objective is maximised, -1 when minimised: ``sign * value`` is "higher is better"."""
    return 1.0 if mode == "max" else -1.0


def rank(items: Iterable[T], score: Callable[[T], float], mode: str) -> list[T]:
    """``items`` best first by ``score`` (stable: equal scores keep their order)."""
    return sorted(items, key=score, reverse=mode == "max")


def best(items: Iterable[T], score: Callable[[T], float], mode: str) -> T | None:
    """The best of ``items`` by ``score`` (the first of equals), None if there are none."""
    ranked = rank(items, score, mode)
    return ranked[0] if ranked else None


# ======================================================================================= seeds, status, ties
#: A trial's state in every table (the MLflow tag's words, mtlsearch.tracking, for the first three).
COMPLETED, STOPPED, ERRORED, RUNNING = "completed", "stopped early by ASHA", "errored", "running"
_STATUS_ORDER = {COMPLETED: 0, STOPPED: 1, RUNNING: 2, "interrupted": 2, ERRORED: 3}
SEED_KEY = re.compile(r"^seed(\d+)/(.+)$")

RANK_RULE = (
    "completed trials are ranked first by their mean; trials stopped early by ASHA follow, ranked among themselves by "
    "their value at the epoch they stopped (not final); errored trials come last and are never best"
)


def trial_status(epochs: int, max_epochs: int, *, errored: bool = False) -> str:
    """``errored``, ``completed`` (reached ``max_epochs``) or ``stopped early by ASHA``."""
    if errored:
        return ERRORED
    return COMPLETED if epochs >= max_epochs else STOPPED


def status_label(status: str, epochs: int | None = None) -> str:
    """A status as a table shows it: ``completed``, ``stopped (ASHA, epoch 2)``, ``errored``."""
    if status == STOPPED:
        return f"stopped (ASHA, epoch {epochs})" if epochs is not None else "stopped (ASHA)"
    return status


def seed_values(metrics: Mapping[str, Any], metric: str) -> list[float]:
    """Each seed's value of ``metric`` in one trial's result: the ``seed<s>/<metric>`` keys of a k-seed
    trial (by seed), else the one value under ``metric``; [] if the trial has neither."""
    per_seed = []
    for key, value in metrics.items():
        found = SEED_KEY.match(key)
        if found and found.group(2) == metric and isinstance(value, (int, float)) and not isinstance(value, bool):
            per_seed.append((int(found.group(1)), float(value)))
    if per_seed:
        return [v for _, v in sorted(per_seed)]
    value = metrics.get(metric)
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def rank_with_uncertainty(entries: Iterable[dict[str, Any]], mode: str, *, seeds_key: str = "_seeds") -> list[dict[str, Any]]:
    """``entries`` (dicts with ``status`` and ``seeds_key``: the objective's value per seed) best first,
    each given its standing: ``mean``, ``seeds`` (how many), ``ci95`` ((low, high), or None for one seed),
    ``p_best`` (bootstrap probability of being at least as good as the best, :mod:`mtlsearch.uncertainty`),
    ``tied`` (True / False / None: untestable) and ``best`` (True for the first row unless it errored).

    Order (:data:`RANK_RULE`): completed by mean, then stopped by mean, then running, then errored; rows
    without a value after those with one.  The tie test compares rows of the best row's status only: a
    stopped trial's partial value is not tested against final ones (``tied`` None)."""
    s = sign(mode)
    ranked = []
    for entry in entries:
        stats = uncertainty.interval(entry.get(seeds_key) or [])
        entry["mean"] = stats.mean if stats else None
        entry["seeds"] = stats.n if stats else 0
        entry["ci95"] = (stats.low, stats.high) if stats and stats.low is not None else None
        ranked.append(entry)
    ranked.sort(key=lambda e: (_STATUS_ORDER.get(e.get("status", COMPLETED), 2), e["mean"] is None, -s * (e["mean"] or 0.0)))
    top = ranked[0] if ranked and ranked[0].get("status") != ERRORED and ranked[0]["mean"] is not None else None
    mixed = any(e["seeds"] > 1 for e in ranked)  # some rows have seeds: a one-seed row among them is untested, not "not tied"
    for entry in ranked:
        entry["best"] = entry is top
        entry["p_best"] = None
        entry["tied"] = None
        entry["untested"] = False
        if top is None or entry["mean"] is None or entry.get("status") != top.get("status"):
            continue
        if entry is top:
            entry["tied"] = True
            continue
        entry["p_best"] = uncertainty.prob_outperforms(entry[seeds_key], top[seeds_key], mode)
        entry["tied"] = uncertainty.tied(entry[seeds_key], top[seeds_key], mode)
        entry["untested"] = entry["p_best"] is None and mixed
    return ranked


def tie_mark(row: Mapping[str, Any]) -> str:
    """The ``tied`` column: ``best``, ``=`` (tied with the best), ``?`` (one seed beside several: untested)
    or blank (not tied, or not comparable: another status, or a search of one seed per trial)."""
    if row.get("best"):
        return "best"
    if row.get("tied"):
        return "="
    return "?" if row.get("untested") else ""


def seed_values_of(row: Mapping[str, Any], metric: str) -> list[float]:
    """Every seed's value of ``metric`` in a table row: over its runs (``_seed_metrics``: one result per
    run of the configuration), else in its one result (``_metrics``)."""
    runs = row.get("_seed_metrics")
    if runs:
        return [v for run in runs for v in seed_values(run, metric)]
    return seed_values(row.get("_metrics") or {}, metric)


def value_cell(row: Mapping[str, Any], metric: str) -> str:
    """``metric`` of a row as ``mean ± 95% interval`` over the row's seeds (:func:`seed_values_of`),
    digits following the interval; the plain value for one seed; ``-`` if absent."""
    values = seed_values_of(row, metric)
    if len(values) < 2:
        value = row.get(metric, (row.get("_metrics") or {}).get(metric))
        return fmt(value) if value not in (None, "") else "-"
    stats = uncertainty.interval(values)
    assert stats is not None
    return uncertainty.fmt_interval(stats.mean, stats.half)


def status_counts(rows: Iterable[Mapping[str, Any]]) -> str:
    """``N trials (a completed, b stopped early by ASHA, c errored)``, running/interrupted when any."""
    statuses = [r.get("status", COMPLETED) for r in rows]
    count = {s: statuses.count(s) for s in set(statuses)}
    others = [f"{n} {s}" for s, n in sorted(count.items()) if s not in (COMPLETED, STOPPED, ERRORED)]
    return (
        f"{len(statuses)} trials ({count.get(COMPLETED, 0)} completed, {count.get(STOPPED, 0)} stopped early by ASHA, "
        f"{count.get(ERRORED, 0)} errored" + "".join(f", {o}" for o in others) + ")"
    )


def table_notes(rows: Sequence[Mapping[str, Any]], *, final: bool = False, what: str = "trial") -> list[str]:
    """The lines under a ranked table: what ``±`` and the tie marks mean, the order of statuses, and for
    a one-seed ranking that it is untested and how to test it (``final``: the space has a final stage)."""
    notes = []
    many = [r for r in rows if (r.get("seeds") or 0) > 1]
    if many:
        notes.append(f"± : {uncertainty.INTERVAL_METHOD} (seeds column); digits follow the interval.")
        untested = "; '?': one seed beside several, untested" if any(r.get("untested") for r in rows) else ""
        notes.append(f"tied '=': {uncertainty.TIE_TEST}{untested}.")
        top = next((r for r in rows if r.get("best")), None)
        if top is not None and top.get("seeds") == 1:
            notes.append(f"The best {what} has one seed: it may be a lucky one; re-run it with more seeds before trusting it.")
    if any(r.get("status") not in (None, COMPLETED) for r in rows):
        notes.append(f"Order: {RANK_RULE}.")
    if rows and not many:
        how = (
            "the final stage below re-runs the best configurations with more seeds"
            if final
            else (
                "re-run with --set budget.seeds=3 (each trial trains 3 seeds) or add a final: section (the best "
                "configurations re-run with more seeds)"
            )
        )
        notes.append(f"One seed per {what}: this ranking is untested by seeds (a lucky seed can top it); to test it, {how}.")
    return notes


def best_standing(rows: Sequence[Mapping[str, Any]], metric: str, *, id_key: str = "trial") -> dict[str, Any]:
    """What MLflow's parent run records of a ranking (:meth:`mtlsearch.tracking.Tracker.end_search`):
    the best row's ``best_interval`` text, ``ci95``, ``seeds``, the ids ``tied_with_best``, the
    ``ranking_test`` and the ``trial_counts``.  ``rows``: ranked by :func:`rank_with_uncertainty`."""
    top = next((r for r in rows if r.get("best")), None)
    out: dict[str, Any] = {"metric": metric, "trial_counts": status_counts(rows), "ranking_test": uncertainty.TIE_TEST}
    if top is None:
        return out
    half = (top["ci95"][1] - top["ci95"][0]) / 2 if top.get("ci95") else None
    out["best_interval"] = (
        f"{uncertainty.fmt_interval(top['mean'], half)} ({uncertainty.INTERVAL_METHOD}, {top['seeds']} seeds)"
        if half is not None
        else f"{fmt(top['mean'])} (one seed: no interval)"
    )
    out["ci95"] = top.get("ci95")
    out["seeds"] = top.get("seeds")
    out["tied_with_best"] = " ".join(str(r.get(id_key, "")) for r in rows if r.get("tied") and not r.get("best"))
    return out


def summarize(
    result_grid: ResultGrid, space: SearchSpace, top: int, *, unfinished: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every trial's last result (best first, :func:`rank_with_uncertainty`), with the searched
    parameters, its ``status`` (an errored trial: Ray's ``Result.error``) and seeds; and the columns of the
    launcher's table.  ``unfinished``: trials an interrupted search left running."""
    trials = [
        (result.metrics or {}, result.config or {}, result.error is not None)
        for result in result_grid  # type: ignore[attr-defined]  # ResultGrid iterates via __getitem__; Ray declares no __iter__
    ]
    return summarize_trials(trials, space, top, unfinished=unfinished)


def summarize_trials(
    trials: Iterable[tuple[Mapping[str, Any], Mapping[str, Any], bool]], space: SearchSpace, top: int, *, unfinished: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`summarize` of ``(last result, config, errored)`` per trial."""
    left = set(unfinished)
    rows = []
    for metrics, cfg, errored in trials:
        trial_id = metrics.get("trial_id", "")
        if space.metric not in metrics and not errored:
            continue
        epochs = int(metrics.get("epoch", 0))
        status = "interrupted" if trial_id in left else trial_status(epochs, space.max_epochs, errored=errored)
        row = {"trial": trial_id, "epochs": epochs, "status": status}
        row.update({p.name: cfg.get(p.name) for p in space.params if p.kind != "value" and p.name in cfg})
        row.update({k: v for k, v in metrics.items() if k.startswith("val/") or k == "test/delta_m"})
        row["_config"] = cfg
        row["_metrics"] = metrics
        row["_seeds"] = seed_values(metrics, space.metric)
        rows.append(row)
    rows = rank_with_uncertainty(rows, space.mode)
    searched = [p.name for p in space.params if p.kind != "value"]
    metric_cols = sorted({k for r in rows for k in r if k.startswith("val/") and not k.endswith("delta_m")})
    tail = [c for c in ("val/delta_m", "test/delta_m") if any(c in r for r in rows)]
    seeds = ["seeds"] if any(r["seeds"] > 1 for r in rows) else []
    columns = ["trial", *dict.fromkeys(searched), "status", *seeds, *metric_cols, *tail, "tied"]
    return rows[:top] if top else rows, columns


# ======================================================================================= Pareto
def pareto_mask(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[bool]:
    """True for each point that no other point dominates.

    ``a`` dominates ``b`` when ``a`` is at least as good on every objective and strictly better on one
    (``modes[k]`` says whether objective k is maximised or minimised).  Equal points do not dominate
    each other, so duplicates on the front are all kept.
    """
    signs = [sign(m) for m in modes]
    pts = [[s * float(v) for s, v in zip(signs, p)] for p in points]
    keep = []
    for i, a in enumerate(pts):
        dominated = any(all(bk >= ak for ak, bk in zip(a, b)) and any(bk > ak for ak, bk in zip(a, b)) for j, b in enumerate(pts) if j != i)
        keep.append(not dominated)
    return keep


def pareto_front(items: Sequence[T], values: Callable[[T], Sequence[float]], objectives: Sequence[tuple[str, str]]) -> list[T]:
    """The items on the Pareto front of ``objectives`` (``values(item)``: one value per objective),
    best first by the first objective."""
    if not objectives:
        return list(items)
    mask = pareto_mask([values(i) for i in items], [d for _, d in objectives])
    return rank([i for i, keep in zip(items, mask) if keep], lambda i: values(i)[0], objectives[0][1])


def pareto_rows(rows: list[dict[str, Any]], objectives: Sequence[tuple[str, str]], max_epochs: int) -> list[dict[str, Any]]:
    """The launcher's rows (``_metrics``, ``epochs``) on the Pareto front of ``objectives``, among the
    trials that reached ``max_epochs`` (an ASHA-stopped trial's values are partial) without an error."""
    full = [
        r
        for r in rows
        if r.get("epochs", 0) >= max_epochs
        and r.get("status") != ERRORED
        and all(isinstance(r["_metrics"].get(m), (int, float)) for m, _ in objectives)
    ]
    return pareto_front(full, lambda r: [r["_metrics"][m] for m, _ in objectives], objectives)


# ======================================================================================= tables
def fmt(value: Any) -> str:
    """A value in a table or progress line: short floats, file names of long paths, short lists."""
    from pathlib import Path

    if value is None:  # a conditional parameter that does not apply to this trial
        return "-"
    if isinstance(value, str) and ":" in value and "/" in value.partition(":")[0]:
        return Path(value).name  # a user's /long/path/file.py:Class
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, float) for v in value):
        # Per-task weights (static_weights): short, and at most 4 of the (up to 40) entries.
        shown = [f"{v:.3g}" for v in value[:4]]
        return "[" + ",".join(shown) + (f",...({len(value)})" if len(value) > 4 else "") + "]"
    return str(value)


def format_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A plain-text table: columns padded to their widest cell, two spaces apart, a dashed rule."""
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in b) + " |" for b in body]
    return "\n".join(lines)


def results_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The launcher's table: one row per trial (or confirmed configuration), ``columns`` of each row;
    metrics as ``mean ± interval`` where the row has seeds (:func:`value_cell`), ``status`` with the
    epoch an ASHA-stopped trial reached, ``tied`` as :func:`tie_mark`."""
    header = list(columns)

    def cell(row: Mapping[str, Any], column: str) -> str:
        if column == "tied":
            return tie_mark(row)
        if column == "status":
            return status_label(row.get("status", ""), row.get("epochs"))
        if column.startswith(("val/", "test/")):
            return value_cell(row, column)
        return fmt(row.get(column, ""))

    return format_table(header, [[cell(r, c) for c in header] for r in rows])
