"""Figures of a search (matplotlib, Agg): Δm against p and lr, Δm per method, learning curves of the
best trials, the task-dominance heatmap and the Pareto front of each pair of task metrics; and the
searched parameters: p x lr (joint), parallel coordinates, parameter importance (at the end).

The searched-parameter figures are computed as data first (``joint_data``, ``parallel_data``: plain
dicts a test can read) and then drawn.  Early-stopped trials carry partial values (their objective
after fewer epochs), so the colour scale comes from the trials that reached ``max_epochs`` when there
are at least two of them, else from robust limits (the values within 1.5 interquartile ranges of the
quartiles, Tukey's fences); values outside are clipped to the ends of the scale, which the figure's
title says.  The axes of the joint figure are the space's ranges, not the trials' values.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Sequence, TypeGuard

from mtlsearch.report.analysis import P_BUCKETS, metric_modes, pareto_set, task_metrics
from mtlsearch.report.load import Search, Trial
from mtlsearch import results
from mtlsearch.results import pareto_mask
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mtlsearch.report.importance import Importance
    from mtlsearch.report.trials import SearchedParam


def _plt() -> Any:  # matplotlib.pyplot, imported on first use
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(t: Trial, several_optimizers: bool) -> str:
    m = str(t.params.get("method", "?"))
    return f"{m}+{t.params.get('optimizer')}" if several_optimizers and t.params.get("optimizer") else m


def _scatter_status(ax: Axes, xs: Sequence[float], ys: Sequence[float], statuses: Sequence[str], color: Any, label: str | None) -> None:
    done = [(x, y) for x, y, s in zip(xs, ys, statuses) if s == STATUS_COMPLETED]
    part = [(x, y) for x, y, s in zip(xs, ys, statuses) if s != STATUS_COMPLETED]
    if done:
        done_x, done_y = zip(*done)
        ax.scatter(done_x, done_y, color=color, s=36, label=label, zorder=3)
    if part:
        part_x, part_y = zip(*part)
        ax.scatter(
            part_x, part_y, facecolors="none", edgecolors=color, s=36, zorder=3, label=f"{label} (stopped early)" if not done else None
        )


def fig_delta_vs_param(
    search: Search, out: Path, param: str, *, methods: Collection[str] | None = None, log: bool = False, filename: str
) -> Path | None:
    plt = _plt()
    dm = search.delta_metric()
    pts = [
        t
        for t in search.trials
        if isinstance(t.params.get(param), (int, float))
        and not isinstance(t.params.get(param), bool)
        and dm in t.final
        and (methods is None or t.params.get("method") in methods)
    ]
    if not pts:
        return None
    several = len({t.params.get("optimizer") for t in search.trials}) > 1
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels = sorted({_label(t, several) for t in pts})
    colors = plt.get_cmap("tab10")
    for i, lab in enumerate(labels):
        sel = [t for t in pts if _label(t, several) == lab]
        _scatter_status(ax, [t.params[param] for t in sel], [t.final[dm] for t in sel], [t.status for t in sel], colors(i % 10), lab)
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
        ax.boxplot([d if d else [float("nan")] for d in done], positions=range(1, len(labels) + 1), widths=0.5, showfliers=False)
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
    for ax in list(axes.flat)[len(metrics) :]:
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
    sign = results.sign(search.mode)
    with_dom = [t for t in search.trials if any(k.startswith("dominance/") for k in t.final)]
    if not with_dom:
        return None
    from mtlsearch.dominance import table_from_metrics
    from mtlsearch.dominance.heatmap import draw_heatmaps

    best: dict[str, Trial] = {}
    for t in sorted(
        with_dom, key=lambda t: (t.status == STATUS_COMPLETED, sign * t.final.get(search.metric, -math.inf * sign)), reverse=True
    ):
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
        ax.scatter([x for x, k in zip(xs, mask) if not k], [y for y, k in zip(ys, mask) if not k], color="0.7", s=22, label="dominated")
        ax.scatter(
            [x for x, k in zip(xs, mask) if k],
            [y for y, k in zip(ys, mask) if k],
            color="C3",
            s=36,
            label="Pareto set (all task metrics)",
            zorder=3,
        )
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
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        f"Pareto front: {sum(mask)} of {len(cands)} trials that reached {search.max_epochs} epochs are not dominated on every task metric",
        fontsize=10,
    )
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


# ======================================================================================= searched parameters
def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def colour_limits(search: Search) -> tuple[float, float, str] | None:
    """(low, high, how) of the objective's colour scale (see the module docstring)."""
    done = [t.final[search.metric] for t in search.trials if t.status == STATUS_COMPLETED and _finite(t.final.get(search.metric))]
    if len(done) >= 2 and min(done) < max(done):
        return min(done), max(done), f"colour scale: the {len(done)} trials that reached {search.max_epochs} epochs"
    values = sorted(t.final[search.metric] for t in search.trials if t.status != STATUS_ERRORED and _finite(t.final.get(search.metric)))
    if not values:
        return None
    if len(values) >= 4:  # Tukey's fences: the values within 1.5 IQR of the quartiles
        import statistics

        q1, _, q3 = statistics.quantiles(values, n=4)
        inside = [v for v in values if q1 - 1.5 * (q3 - q1) <= v <= q3 + 1.5 * (q3 - q1)]
        lo, hi = min(inside), max(inside)
    else:
        lo, hi = values[0], values[-1]
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi, "colour scale: robust limits (the values within 1.5 IQR of the quartiles)"


def joint_axes(params: Sequence[SearchedParam], importance: Importance | None = None) -> tuple[Any, Any] | None:
    """(x, y) parameters of the joint figure: lr and p when both are searched numbers, else lr (or the most
    important numeric parameter) against the next most important one; None without two numeric ones."""
    numeric = {p.name: p for p in params if p.numeric}
    if len(numeric) < 2:
        return None
    order = list(numeric)
    if importance is not None and importance.ok:
        ranked = importance.values.get("fANOVA") or next(iter(importance.values.values()))
        order = sorted(order, key=lambda k: -ranked.get(k, -1.0))
    if "lr" in numeric:
        x = "lr"
        y = "p" if "p" in numeric else next(k for k in order if k != "lr")
    else:
        x, y = order[0], order[1]
    return numeric[x], numeric[y]


def joint_data(search: Search, params: Sequence[SearchedParam], importance: Importance | None = None) -> dict[str, Any] | None:
    """The joint figure as data: axes, colour scale and one point per trial (``hollow``: stopped early by
    ASHA, ``errored``: drawn as a grey cross, without a colour)."""
    axes = joint_axes(params, importance)
    if axes is None:
        return None
    px, py = axes
    limits = colour_limits(search)
    points = []
    for t in search.trials:
        x, y = t.params.get(px.name), t.params.get(py.name)
        if not (_finite(x) and _finite(y)):
            continue
        value = t.final.get(search.metric)
        points.append(
            {
                "trial": t.trial_id,
                "x": float(x),
                "y": float(y),
                "status": t.status,
                "epochs": t.epochs,
                "value": float(value) if _finite(value) else None,
                "hollow": t.status == STATUS_STOPPED,
                "errored": t.status == STATUS_ERRORED,
            }
        )
    if not points:
        return None
    return {
        "x": px,
        "y": py,
        "points": points,
        "limits": limits,
        "metric": search.metric,
        "mode": search.mode,
        "max_epochs": search.max_epochs,
    }


def _axis_limits(p: SearchedParam, values: list[float]) -> tuple[float, float]:
    lo = min([p.low, *values]) if p.low is not None else min(values)
    hi = max([p.high, *values]) if p.high is not None else max(values)
    if p.log and lo > 0:
        pad = (hi / lo) ** 0.04
        return lo / pad, hi * pad
    pad = (hi - lo) * 0.04 or 0.5
    return lo - pad, hi + pad


def fig_joint(data: dict[str, Any] | None, out: Path, filename: str = "joint_params.png") -> Path | None:
    if data is None:
        return None
    plt = _plt()
    from matplotlib.colors import Normalize

    px, py, pts = data["x"], data["y"], data["points"]
    fig, ax = plt.subplots(figsize=(6.6, 4.8))
    cmap = plt.get_cmap("viridis" if data["mode"] == "max" else "viridis_r")
    norm = Normalize(*data["limits"][:2]) if data["limits"] else Normalize(0, 1)
    for kind in ("done", "hollow"):
        sel = [p for p in pts if not p["errored"] and p["value"] is not None and p["hollow"] == (kind == "hollow")]
        if not sel:
            continue
        colours = cmap(norm([p["value"] for p in sel]))
        if kind == "done":
            ax.scatter(
                [p["x"] for p in sel],
                [p["y"] for p in sel],
                c=colours,
                s=60,
                edgecolors="k",
                linewidths=0.5,
                zorder=3,
                label="reached the last epoch" if any(p["status"] == STATUS_COMPLETED for p in sel) else "running",
            )
        else:
            ax.scatter(
                [p["x"] for p in sel],
                [p["y"] for p in sel],
                facecolors="none",
                edgecolors=colours,
                s=60,
                linewidths=1.6,
                zorder=3,
                label="stopped early by ASHA (hollow; partial value)",
            )
    err = [p for p in pts if p["errored"] or p["value"] is None]
    if err:
        ax.scatter([p["x"] for p in err], [p["y"] for p in err], marker="x", color="0.45", s=50, zorder=3, label="errored / no value")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, extend="both", label=f"{data['metric']} ({'higher' if data['mode'] == 'max' else 'lower'} is better)")
    if px.log:
        ax.set_xscale("log")
    if py.log:
        ax.set_yscale("log")
    ax.set_xlim(*_axis_limits(px, [p["x"] for p in pts]))
    ax.set_ylim(*_axis_limits(py, [p["y"] for p in pts]))
    if py.name == "p":
        for yv in (0.0, 1.0):
            ax.axhline(yv, color="0.6", ls=":", lw=1)
    ax.set_xlabel(f"{px.name}{' (log scale)' if px.log else ''}")
    ax.set_ylabel(f"{py.name}{' (log scale)' if py.log else ''}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    how = data["limits"][2] if data["limits"] else "no values"
    ax.set_title(f"{data['metric']} over {px.name} x {py.name} ({len(pts)} trials)\n{how}; values outside are clipped", fontsize=9)
    fig.tight_layout()
    path = out / filename
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _position(p: SearchedParam, v: Any) -> float | None:
    """A parameter value on its parallel axis, in [0, 1] (None: the trial has no value)."""
    if v is None:
        return None
    if p.kind == "categorical":
        choices = [str(c) for c in p.choices] or [str(v)]
        idx = choices.index(str(v)) if str(v) in choices else len(choices) - 1
        return 0.5 if len(choices) == 1 else idx / (len(choices) - 1)
    if not _finite(v) or p.low is None or p.high is None or p.low == p.high:
        return 0.5
    if p.log and p.low > 0 and v > 0:
        return (math.log(v) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
    return (float(v) - p.low) / (p.high - p.low)


def parallel_data(search: Search, params: Sequence) -> dict[str, Any] | None:
    """Parallel coordinates as data: one axis per searched parameter (log where the space samples
    log-uniform, categories for a choice) and one for the objective; one line per trial (``faint``:
    stopped early by ASHA, ``errored``: no objective)."""
    axes = []
    for p in params:
        if p.simplex:
            continue
        if p.kind == "categorical" and not p.choices:
            continue
        if p.numeric and (p.low is None or p.high is None):
            continue
        axes.append(p)
    if not axes:
        return None
    # Categorical axes list only the choices the trials used, when the space offers many (method: all).
    shown = []
    for p in axes:
        if p.kind == "categorical" and len(p.choices) > 12:
            used = [c for c in p.choices if any(str(t.params.get(p.name)) == str(c) for t in search.trials)]
            from dataclasses import replace

            p = replace(p, choices=tuple(used))
        shown.append(p)
    limits = colour_limits(search)
    lines = []
    for t in search.trials:
        value = t.final.get(search.metric)
        ys = [_position(p, t.params.get(p.name)) for p in shown]
        obj = None
        if _finite(value) and limits:
            lo, hi, _ = limits
            obj = min(1.05, max(-0.05, (value - lo) / (hi - lo)))
        lines.append(
            {
                "trial": t.trial_id,
                "ys": ys,
                "objective": obj,
                "value": float(value) if _finite(value) else None,
                "status": t.status,
                "faint": t.status != STATUS_COMPLETED,
                "errored": t.status == STATUS_ERRORED,
            }
        )
    return {"axes": shown, "lines": lines, "limits": limits, "metric": search.metric, "mode": search.mode}


def fig_parallel(data: dict[str, Any] | None, out: Path, filename: str = "parallel_coordinates.png") -> Path | None:
    if data is None:
        return None
    plt = _plt()
    from matplotlib.colors import Normalize

    axes, lines = data["axes"], data["lines"]
    n = len(axes) + 1
    fig, ax = plt.subplots(figsize=(max(5.5, 1.9 * n + 1.5), 4.6))
    cmap = plt.get_cmap("viridis" if data["mode"] == "max" else "viridis_r")
    lo, hi = data["limits"][:2] if data["limits"] else (0.0, 1.0)
    norm = Normalize(lo, hi)
    order = sorted(lines, key=lambda ln: (not ln["faint"], ln["value"] if ln["value"] is not None else -math.inf))
    if data["mode"] == "min":
        order = sorted(lines, key=lambda ln: (not ln["faint"], -(ln["value"] if ln["value"] is not None else math.inf)))
    for ln in order:
        ys = [*ln["ys"], ln["objective"]]
        colour = "0.5" if ln["value"] is None else cmap(norm(ln["value"]))
        style = dict(color=colour, lw=0.8, alpha=0.22) if ln["faint"] else dict(color=colour, lw=1.8, alpha=0.95)
        if ln["errored"]:
            style = dict(color="0.5", lw=0.8, alpha=0.4, ls="--")
        # A conditional parameter the trial does not have: the line passes its axis dotted.
        present = [(i, y) for i, y in enumerate(ys) if y is not None]
        for (i0, y0), (i1, y1) in zip(present, present[1:]):
            ax.plot([i0, i1], [y0, y1], **{**style, **({} if i1 == i0 + 1 else {"ls": ":"})})
        if len(present) == 1:
            ax.plot(*zip(*present), marker="o", ms=3, **style)
    for i, p in enumerate(axes):
        ax.axvline(i, color="k", lw=0.8)
        if p.kind == "categorical":
            choices = [str(c) for c in p.choices]
            ticks = [0.5] if len(choices) == 1 else [j / (len(choices) - 1) for j in range(len(choices))]
            labels = choices
        else:
            ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
            if p.log and p.low > 0:
                labels = [f"{math.exp(math.log(p.low) + t * (math.log(p.high) - math.log(p.low))):.1e}" for t in ticks]
            else:
                labels = [f"{p.low + t * (p.high - p.low):.3g}" for t in ticks]
        for tick, label in zip(ticks, labels):
            ax.text(i - 0.04, tick, label, ha="right", va="center", fontsize=7)
    ax.axvline(len(axes), color="k", lw=0.8)
    for t in (0.0, 0.5, 1.0):
        ax.text(len(axes) + 0.04, t, f"{lo + t * (hi - lo):.3g}", ha="left", va="center", fontsize=7)
    ax.set_xticks(range(n), [f"{p.name}{' (log)' if p.log else ''}" for p in axes] + [data["metric"]], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(-0.1, 1.1)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    how = data["limits"][2] if data["limits"] else "no values"
    ax.set_title(
        f"Searched parameters of {len(lines)} trials, coloured by {data['metric']} (last axis)\n"
        f"faint: stopped early by ASHA; dashed grey: errored; dotted: passes a parameter the trial does "
        f"not have\n{how}; values outside clipped",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / filename
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fig_importance(result: Importance | None, metric: str, out: Path, filename: str = "param_importance.png") -> Path | None:
    """Horizontal bars, one group per parameter, one bar per evaluator (labelled with its evaluator)."""
    if result is None or not result.ok:
        return None
    plt = _plt()
    from mtlsearch.report.importance import EVALUATORS

    labels = [label for label, _ in EVALUATORS if label in result.values]
    first = result.values[labels[0]]
    names = sorted(result.params, key=lambda k: first.get(k, 0.0))
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.55 * len(names) * len(labels)))
    h = 0.8 / len(labels)
    for j, label in enumerate(labels):
        ys = [i + (j - (len(labels) - 1) / 2) * h for i in range(len(names))]
        vals = [result.values[label].get(k, 0.0) for k in names]
        ax.barh(ys, vals, height=h * 0.9, color=f"C{j}", label=f"{label} ({dict(EVALUATORS)[label].split('(')[0]})")
        for y, v in zip(ys, vals):
            ax.text(v + 0.01, y, f"{v:.2f}", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("importance (normalised to sum 1)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Parameter importance of {metric} at epoch {result.epoch} (the {result.trials} trials that reached it)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / filename
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
