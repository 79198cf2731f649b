"""Figures of a search (matplotlib, Agg): Δm against p and lr, Δm per method, learning curves of the
best trials, the task-dominance heatmap and the Pareto front of each pair of task metrics."""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Sequence

from mtlsearch.report.analysis import P_BUCKETS, metric_modes, pareto_set, task_metrics
from mtlsearch.report.load import Search, Trial
from mtlsearch import results
from mtlsearch.results import pareto_mask
from mtlsearch.tracking import STATUS_COMPLETED

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _plt() -> Any:  # matplotlib.pyplot, imported on first use
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(t: Trial, several_optimizers: bool) -> str:
    m = str(t.params.get("method", "?"))
    return f"{m}+{t.params.get('optimizer')}" if several_optimizers and t.params.get("optimizer") else m


def _scatter_status(ax: Axes, xs: Sequence[float], ys: Sequence[float], statuses: Sequence[str], color: Any,
                    label: str | None) -> None:
    done = [(x, y) for x, y, s in zip(xs, ys, statuses) if s == STATUS_COMPLETED]
    part = [(x, y) for x, y, s in zip(xs, ys, statuses) if s != STATUS_COMPLETED]
    if done:
        done_x, done_y = zip(*done)
        ax.scatter(done_x, done_y, color=color, s=36, label=label, zorder=3)
    if part:
        part_x, part_y = zip(*part)
        ax.scatter(part_x, part_y, facecolors="none", edgecolors=color, s=36, zorder=3,
                   label=f"{label} (stopped early)" if not done else None)


def fig_delta_vs_param(search: Search, out: Path, param: str, *, methods: Collection[str] | None = None, log: bool = False,
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
    sign = results.sign(search.mode)
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

