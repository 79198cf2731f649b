"""Ranking results: the one place that orders trials, picks the best one, computes the Pareto set and
formats results tables.  The launcher (after a search) and the report (from MLflow or a Ray results
folder) both use it, so they cannot disagree on which trial is best.

Nothing here imports Ray or MLflow: a "row" is a plain dict (``_metrics``: the trial's last result,
``epochs``, ...), a Ray ``ResultGrid`` is only iterated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

if TYPE_CHECKING:
    from ray.tune import ResultGrid

    from mtlsearch.spaces import SearchSpace


T = TypeVar("T")

__all__ = ["best", "fmt", "format_table", "markdown_table", "pareto_mask", "pareto_rows", "rank", "results_table", "sign", "summarize"]


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


def summarize(result_grid: ResultGrid, space: SearchSpace, top: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (best first) of every trial's last result, with the searched parameters; and the columns of
    the launcher's table."""
    rows = []
    for result in result_grid:  # type: ignore[attr-defined]  # ResultGrid iterates via __getitem__; Ray declares no __iter__
        metrics = result.metrics or {}
        if space.metric not in metrics:
            continue
        cfg = result.config or {}
        row = {"trial": metrics.get("trial_id", ""), "epochs": int(metrics.get("epoch", 0))}
        row.update({p.name: cfg.get(p.name) for p in space.params if p.kind != "value" and p.name in cfg})
        row.update({k: v for k, v in metrics.items() if k.startswith("val/") or k == "test/delta_m"})
        row["_config"] = cfg
        row["_metrics"] = metrics
        rows.append(row)
    rows = rank(rows, lambda r: r["_metrics"][space.metric], space.mode)
    searched = [p.name for p in space.params if p.kind != "value"]
    metric_cols = sorted({k for r in rows for k in r if k.startswith("val/") and not k.endswith("delta_m")})
    tail = [c for c in ("val/delta_m", "test/delta_m") if any(c in r for r in rows)]
    columns = ["trial", *dict.fromkeys(searched), "epochs", *metric_cols, *tail]
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
    trials that reached ``max_epochs`` (an ASHA-stopped trial's values are partial)."""
    full = [
        r for r in rows if r.get("epochs", 0) >= max_epochs and all(isinstance(r["_metrics"].get(m), (int, float)) for m, _ in objectives)
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
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in b) + " |" for b in body]
    return "\n".join(lines)


def results_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The launcher's table: one row per trial (or confirmed configuration), ``columns`` of each row."""
    header = list(columns)
    return format_table(header, [[fmt(r.get(c, "")) for c in header] for r in rows])
