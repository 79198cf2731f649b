"""Figures of a search (matplotlib, Agg): Δm against each searched number (a method's hyperparameter
over the trials of the methods that declare it, with its buckets marked), Δm per method, learning
curves of the best trials, the task-dominance heatmap and the Pareto front of each pair of task
metrics; and the searched parameters: two numbers jointly (a trial setting such as the learning rate x
a method's hyperparameter), parallel coordinates, parameter importance (at the end).  Parameter names,
buckets and the methods that own a hyperparameter come from the space (or the trials) and the methods'
declarations (:func:`mtlsearch.report.analysis.method_params`), never from a list kept here.

The searched-parameter figures are computed as data first (``joint_data``, ``parallel_data``: plain
dicts a test can read) and then drawn.  Early-stopped trials carry partial values (their objective
after fewer epochs), so the colour scale comes from the trials that reached ``max_epochs`` when there
are at least two of them, else from robust limits (the values within 1.5 interquartile ranges of the
quartiles, Tukey's fences).  No value is ever clipped or moved (:class:`Scale`): values outside that
main range keep their own colour, in bands at the ends of the colour map that the colour bar labels
(the colour is a monotone function of the value everywhere); on the parallel-coordinates objective axis
they sit in labelled bands below and above the main range; the Δm scatters draw them on a broken axis
(a panel of their own).  The axes of the joint figure are the space's ranges, not the trials' values.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Sequence

from mtlsearch.report.analysis import MethodParam, bucket_params, method_params, metric_modes, pareto_set, task_metrics
from mtlsearch.report.load import Search, Trial
from mtlsearch import results
from mtlsearch.results import pareto_mask
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mtlsearch.report.trials import SearchedParam
from mtlsearch.report.scale import Scale, is_finite, pyplot, save_figure, wrap_text, value_scale


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


def _padded(values: Sequence[float], share: float = 0.1) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = share * (hi - lo) or max(abs(hi) * 0.02, 0.5)
    return lo - pad, hi + pad


def _value_panels(
    scale: Scale | None, values: Sequence[float], width: float, height: float
) -> tuple[Any, list[tuple[Axes, float, float]], Axes]:
    """A figure whose y axis shows ``scale``'s main range, with a panel of its own below (and above) for the
    values outside it: a broken axis, so a cluster of early-stopped values neither squashes the main range nor
    is clipped.  Returns the figure, ``(axes, y low, y high)`` per panel top to bottom (disjoint, covering
    every value) and the main panel."""
    plt = pyplot()
    main = _padded([scale.lo, scale.hi], 0.08) if scale is not None else _padded(values)
    rows: list[tuple[str, tuple[float, float]]] = []
    above = [v for v in values if v > main[1]]
    below = [v for v in values if v < main[0]]
    if above:
        rows.append(("above", _padded(above)))
    rows.append(("main", main))
    if below:
        rows.append(("below", _padded(below)))
    ratios = [3.5 if kind == "main" else 1.2 for kind, _ in rows]
    fig, axs = plt.subplots(
        len(rows),
        1,
        sharex=True,
        figsize=(width, height + 0.9 * (len(rows) - 1)),
        gridspec_kw={"height_ratios": ratios, "hspace": 0.08},
        squeeze=False,
    )
    panels = []
    main_ax = axs[0, 0]
    for (kind, (lo, hi)), ax in zip(rows, axs[:, 0]):
        ax.set_ylim(lo, hi)
        ax.grid(alpha=0.3)
        panels.append((ax, lo, hi))
        if kind == "main":
            main_ax = ax
        else:
            n = len(above if kind == "above" else below)
            ax.text(
                0.01, 0.92, f"{n} value(s) {kind} the main range (broken axis)", transform=ax.transAxes, fontsize=7, va="top", color="0.35"
            )
    for upper, lower in zip(axs[:-1, 0], axs[1:, 0]):  # the break marks
        upper.spines["bottom"].set_visible(False)
        lower.spines["top"].set_visible(False)
        upper.tick_params(bottom=False)
        d = 0.012
        for ax, y in ((upper, 0.0), (lower, 1.0)):
            for x in (0.0, 1.0):
                ax.plot((x - d, x + d), (y - d, y + d), transform=ax.transAxes, color="k", clip_on=False, lw=0.8)
    return fig, panels, main_ax


def _scatter_panels(
    panels: Sequence[tuple[Axes, float, float]],
    xs: Sequence[float],
    ys: Sequence[float],
    statuses: Sequence[str],
    color: Any,
    label: str | None,
) -> None:
    """:func:`_scatter_status` of each point in the one panel whose y range holds it."""
    for ax, lo, hi in panels:
        inside = [i for i, y in enumerate(ys) if lo <= y <= hi]
        if inside:
            _scatter_status(ax, [xs[i] for i in inside], [ys[i] for i in inside], [statuses[i] for i in inside], color, label)


def _legend(panels: Sequence[tuple[Axes, float, float]], ax: Axes) -> None:
    """One legend on ``ax`` with every panel's labelled artists, each label once."""
    seen: dict[str, Any] = {}
    for panel, _, _ in panels:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        ax.legend(list(seen.values()), list(seen), fontsize=8, loc="best")


def fig_delta_vs_param(
    search: Search,
    out: Path,
    param: str,
    *,
    methods: Collection[str] | None = None,
    log: bool = False,
    filename: str | None = None,
    declared: MethodParam | None = None,
) -> Path | None:
    """Δm against ``param`` (``declared``: a method hyperparameter, drawn over the trials of the methods
    that declare it, its buckets marked and its owners named in the title)."""
    plt = pyplot()
    if declared is not None and methods is None:
        methods = set(declared.methods)
    dm = search.delta_metric()
    pts = [
        t
        for t in search.trials
        if isinstance(t.params.get(param), (int, float))
        and not isinstance(t.params.get(param), bool)
        and is_finite(t.final.get(dm))
        and t.status != STATUS_ERRORED
        and (methods is None or t.params.get("method") in methods)
    ]
    if not pts:
        return None
    several = len({t.params.get("optimizer") for t in search.trials}) > 1
    width = 6.4
    fig, panels, main = _value_panels(value_scale(search, dm), [t.final[dm] for t in pts], width, 4.2)
    labels = sorted({_label(t, several) for t in pts})
    colors = plt.get_cmap("tab10")
    for i, lab in enumerate(labels):
        sel = [t for t in pts if _label(t, several) == lab]
        _scatter_panels(panels, [t.params[param] for t in sel], [t.final[dm] for t in sel], [t.status for t in sel], colors(i % 10), lab)
    bottom = panels[-1][0]
    if log:
        bottom.set_xscale("log")
    top = panels[0][0]
    edges = list(declared.spec.buckets) if declared is not None else []
    if edges:
        for ax, _, _ in panels:
            for x in edges:
                ax.axvline(float(x), color="0.6", ls=":", lw=1)
        lo, hi = top.get_xlim()
        bounds = [lo, *edges, hi]
        for name, a, b in zip(declared.spec.bucket_labels() if declared else [], bounds, bounds[1:]):
            top.text((a + b) / 2, 1.0, name, transform=top.get_xaxis_transform(), ha="center", va="bottom", fontsize=8, color="0.4")
    bottom.set_xlabel(param + (" (log scale)" if log else ""))
    main.set_ylabel(f"{dm} (%, higher is better)" if dm.endswith("delta_m") else dm)
    _legend(panels, main)
    what = f"{'/'.join(declared.owners)}: " if declared is not None else ""
    top.set_title(
        wrap_text(f"{what}{dm} against {param} ({len(pts)} trials; hollow = stopped early by ASHA)", width, 9), fontsize=9, pad=14
    )
    return save_figure(fig, out / (filename or f"delta_m_vs_{param}.png"))


def fig_delta_by_method(search: Search, out: Path) -> Path | None:
    import random

    dm = search.delta_metric()
    pts = [t for t in search.trials if is_finite(t.final.get(dm)) and t.status != STATUS_ERRORED]
    if not pts:
        return None
    several = len({t.params.get("optimizer") for t in search.trials}) > 1
    labels = sorted({_label(t, several) for t in pts})
    width = max(4.0, 1.3 * len(labels) + 2)
    fig, panels, main = _value_panels(value_scale(search, dm), [t.final[dm] for t in pts], width, 4.2)
    done = [[t.final[dm] for t in pts if _label(t, several) == lab and t.status == STATUS_COMPLETED] for lab in labels]
    if any(done):
        for ax, _, _ in panels:
            ax.boxplot([d if d else [float("nan")] for d in done], positions=range(1, len(labels) + 1), widths=0.5, showfliers=False)
    rng = random.Random(0)
    for i, lab in enumerate(labels, 1):
        sel = [t for t in pts if _label(t, several) == lab]
        xs = [i + rng.uniform(-0.15, 0.15) for _ in sel]
        _scatter_panels(panels, xs, [t.final[dm] for t in sel], [t.status for t in sel], "C0", None)
    panels[-1][0].set_xticks(range(1, len(labels) + 1), labels)
    main.set_ylabel(f"{dm} (%)" if dm.endswith("delta_m") else dm)
    title = f"{dm} per method\nbox: trials that reached {search.max_epochs} epochs; hollow: stopped early"
    panels[0][0].set_title(wrap_text(title, width, 9), fontsize=9)
    return save_figure(fig, out / "delta_m_by_method.png")


def fig_learning_curves(search: Search, rows: list[dict[str, Any]], out: Path, top: int = 6) -> Path | None:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    best = [(r, r["_pool"][0]) for r in rows if r.get("_pool")][:top]
    metrics = [*task_metrics(search, "val"), *[m for m in ("val/delta_m",) if any(m in t.final for t in search.trials)]]
    if not best or not metrics:
        return None
    modes = metric_modes(search, metrics)
    buckets = [mp.column for mp in bucket_params(search)]
    cols = min(len(metrics), 4)
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for i, (row, trial) in enumerate(best):
            hist = trial.history().get(m, [])
            if hist:
                where = " ".join(str(row.get(c, "")) for c in buckets)
                label = f"{row['method']}{'+' + row['optimizer'] if row['optimizer'] else ''} {where} ({trial.trial_id})"
                ax.plot(*zip(*hist), marker="o", ms=3, color=f"C{i}", label=label)
        ax.set_title(f"{m} ({'lower' if modes[m] == 'min' else 'higher'} is better)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    # Every panel's curves (a trial may log a metric the first panel's trials do not), each label once.
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    labels = list(seen)
    if labels:
        fig.legend(list(seen.values()), labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
    fig.suptitle("Learning curves of the best trial of each leaderboard row", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(labels) > 3), 1, 0.96))
    return save_figure(fig, out / "learning_curves.png")


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
    plt = pyplot()
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
        n_metrics = len(objectives)
        pair_mask = pareto_mask(list(zip(xs, ys)), [da, db])  # the 2-D front of this pair
        ax.scatter(
            [x for x, k in zip(xs, mask) if not k],
            [y for y, k in zip(ys, mask) if not k],
            color="0.7",
            s=22,
            label="dominated on every metric",
        )
        on_both = [(x, y) for x, y, k, kp in zip(xs, ys, mask, pair_mask) if k and kp]
        only_all = [(x, y) for x, y, k, kp in zip(xs, ys, mask, pair_mask) if k and not kp]
        if on_both:
            ax.scatter(
                *zip(*on_both), color="C3", s=40, zorder=3, label=f"not dominated over all {n_metrics} metrics, on this pair's front"
            )
        if only_all:
            ax.scatter(
                *zip(*only_all),
                facecolors="none",
                edgecolors="C3",
                s=40,
                linewidths=1.4,
                zorder=3,
                label=f"not dominated over all {n_metrics} metrics (better on another metric; behind this pair's front)",
            )
        for t, x, y, k in zip(cands, xs, ys, mask):
            if k:
                ax.annotate(t.trial_id, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted((x, y) for x, y, k in zip(xs, ys, pair_mask) if k)
        if len(front) > 1:
            # The border of the region the front dominates: vertical steps at a point when x is maximised.
            ax.step(*zip(*front), where="pre" if da == "max" else "post", color="C3", lw=1, alpha=0.6, label="this pair's 2-D front")
        ax.set_xlabel(f"{ma} ({'lower' if da == 'min' else 'higher'} is better)", fontsize=8)
        ax.set_ylabel(f"{mb} ({'lower' if db == 'min' else 'higher'} is better)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=1, fontsize=8)
    title = (
        f"Pareto front: {sum(mask)} of {len(cands)} trials that reached {search.max_epochs} epochs are not dominated on every task metric"
    )
    fig.suptitle(wrap_text(title, 4.3 * cols, 10), fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * len(seen), 1, 0.95))
    return save_figure(fig, out / "pareto.png")


def make_figures(search: Search, rows: list[dict[str, Any]], out: Path, searched: Sequence[SearchedParam] | None = None) -> list[Path]:
    """The report's figures in ``out``: Δm against each searched number (``delta_m_vs_<name>.png``, in
    the space's order; ``searched``: :func:`~mtlsearch.report.trials.searched_params`, else what the
    trials' values show), Δm per method, learning curves, task dominance and the Pareto front."""
    from mtlsearch.report.trials import params_from_trials

    out.mkdir(parents=True, exist_ok=True)
    declared = method_params(search)
    params = searched if searched is not None else params_from_trials(search)
    paths = [
        *[fig_delta_vs_param(search, out, p.name, log=p.log, declared=declared.get(p.name)) for p in params if p.numeric and not p.simplex],
        fig_delta_by_method(search, out),
        fig_learning_curves(search, rows, out),
        fig_dominance(search, out),
        fig_pareto(search, out),
    ]
    return [p for p in paths if p is not None]
