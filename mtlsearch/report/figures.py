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
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Sequence, TypeGuard

from mtlsearch.report.analysis import MethodParam, bucket_params, method_params, metric_modes, pareto_set, task_metrics
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


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to fit ``width_in`` inches at ``fontsize`` (each line as given is wrapped alone)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.56)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _save(fig: Any, path: Path) -> Path:
    """Save and close; ``bbox_inches="tight"`` keeps every title, label and legend whole."""
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.08)
    _plt().close(fig)
    return path


@dataclass(frozen=True)
class Scale:
    """A metric's scale on a figure: ``[lo, hi]`` the main range (see the module docstring), ``[vmin, vmax]``
    every finite value.  Values outside the main range are drawn in bands, never clipped."""

    lo: float
    hi: float
    vmin: float
    vmax: float
    how: str
    #: The share of the colour map (and of the parallel axis) each outer band takes.
    BAND = 0.15

    @property
    def below(self) -> bool:
        return self.vmin < self.lo

    @property
    def above(self) -> bool:
        return self.vmax > self.hi

    def _knots(self) -> tuple[list[float], list[float]]:
        xs, ys = [self.lo, self.hi], [self.BAND if self.below else 0.0, 1.0 - self.BAND if self.above else 1.0]
        if self.below:
            xs, ys = [self.vmin, *xs], [0.0, *ys]
        if self.above:
            xs, ys = [*xs, self.vmax], [*ys, 1.0]
        return xs, ys

    def colour_position(self, value: Any) -> Any:
        """Value -> [0, 1] on the colour map: piecewise linear, strictly increasing over [vmin, vmax]."""
        import numpy as np

        xs, ys = self._knots()
        return np.interp(value, xs, ys)

    def colour_value(self, position: Any) -> Any:
        import numpy as np

        xs, ys = self._knots()
        return np.interp(position, ys, xs)

    def norm(self) -> Any:
        """A matplotlib norm that maps values as :meth:`colour_position` (for colour bars too)."""
        from matplotlib.colors import FuncNorm

        return FuncNorm((self.colour_position, self.colour_value), vmin=self.vmin, vmax=self.vmax)

    def ticks(self) -> list[float]:
        """Colour-bar ticks: the main range's ends and middle, and each band's far end."""
        return sorted(
            {*([self.vmin] if self.below else []), self.lo, (self.lo + self.hi) / 2, self.hi, *([self.vmax] if self.above else [])}
        )

    def axis_position(self, value: float) -> float:
        """Value -> height on a parallel axis: [0, 1] for the main range, the bands [-0.16, -0.04] below
        and [1.04, 1.16] above (linear within each band, so the order of values is kept)."""
        if value < self.lo:
            a, b = self.band_values("below")
            return -0.10 if a == b else -0.16 + 0.12 * (value - a) / (b - a)
        if value > self.hi:
            a, b = self.band_values("above")
            return 1.10 if a == b else 1.04 + 0.12 * (value - a) / (b - a)
        return (value - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0.5

    def band_values(self, side: str) -> tuple[float, float]:
        """(lowest, highest) value inside the ``side`` band ("below" or "above")."""
        values = self._below if side == "below" else self._above
        return (min(values), max(values)) if values else (math.nan, math.nan)

    _below: tuple[float, ...] = ()
    _above: tuple[float, ...] = ()


def value_scale(search: Search, metric: str | None = None) -> Scale | None:
    """The :class:`Scale` of ``metric`` (default: the objective) over the trials that did not error."""
    metric = metric or search.metric
    limits = colour_limits(search, metric)
    if limits is None:
        return None
    lo, hi, how = limits
    values = [float(t.final[metric]) for t in search.trials if t.status != STATUS_ERRORED and _finite(t.final.get(metric))]
    return Scale(
        lo=lo,
        hi=hi,
        vmin=min([lo, *values]),
        vmax=max([hi, *values]),
        how=how,
        _below=tuple(v for v in values if v < lo),
        _above=tuple(v for v in values if v > hi),
    )


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
    plt = _plt()
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
    plt = _plt()
    if declared is not None and methods is None:
        methods = set(declared.methods)
    dm = search.delta_metric()
    pts = [
        t
        for t in search.trials
        if isinstance(t.params.get(param), (int, float))
        and not isinstance(t.params.get(param), bool)
        and _finite(t.final.get(dm))
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
    top.set_title(_wrap(f"{what}{dm} against {param} ({len(pts)} trials; hollow = stopped early by ASHA)", width, 9), fontsize=9, pad=14)
    return _save(fig, out / (filename or f"delta_m_vs_{param}.png"))


def fig_delta_by_method(search: Search, out: Path) -> Path | None:
    import random

    dm = search.delta_metric()
    pts = [t for t in search.trials if _finite(t.final.get(dm)) and t.status != STATUS_ERRORED]
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
    panels[0][0].set_title(_wrap(title, width, 9), fontsize=9)
    return _save(fig, out / "delta_m_by_method.png")


def fig_learning_curves(search: Search, rows: list[dict[str, Any]], out: Path, top: int = 6) -> Path | None:
    plt = _plt()
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
    return _save(fig, out / "learning_curves.png")


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
    fig.suptitle(_wrap(title, 4.3 * cols, 10), fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * len(seen), 1, 0.95))
    return _save(fig, out / "pareto.png")


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


# ======================================================================================= searched parameters
def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def colour_limits(search: Search, metric: str | None = None) -> tuple[float, float, str] | None:
    """(low, high, how) of the main range of ``metric``'s scale (default: the objective; see the module docstring)."""
    metric = metric or search.metric
    done = [t.final[metric] for t in search.trials if t.status == STATUS_COMPLETED and _finite(t.final.get(metric))]
    if len(done) >= 2 and min(done) < max(done):
        return min(done), max(done), f"colour scale: the {len(done)} trials that reached {search.max_epochs} epochs"
    values = sorted(t.final[metric] for t in search.trials if t.status != STATUS_ERRORED and _finite(t.final.get(metric)))
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


def joint_axes(
    params: Sequence[SearchedParam], importance: Importance | None = None, declared: Collection[str] = ()
) -> tuple[Any, Any] | None:
    """(x, y) parameters of the joint figure, None without two numeric ones.  x: the first searched
    number among the trial's own settings in :class:`~mtlsearch.config.TrialConfig`'s order (the
    learning rate before the weight decay, ...), else the most important number; y: the most important
    of the rest that is a method's hyperparameter (``declared``), else the most important of the rest."""
    import dataclasses

    from mtlsearch.config import TrialConfig

    numeric = {p.name: p for p in params if p.numeric}
    if len(numeric) < 2:
        return None
    order = list(numeric)
    if importance is not None and importance.ok:
        ranked = importance.values.get("fANOVA") or next(iter(importance.values.values()))
        order = sorted(order, key=lambda k: -ranked.get(k, -1.0))
    settings = [f.name for f in dataclasses.fields(TrialConfig) if f.name in numeric]
    x = settings[0] if settings else order[0]
    rest = [k for k in order if k != x]
    y = next((k for k in rest if k in declared), rest[0])
    return numeric[x], numeric[y]


def joint_data(search: Search, params: Sequence[SearchedParam], importance: Importance | None = None) -> dict[str, Any] | None:
    """The joint figure as data: axes, colour scale and one point per trial (``hollow``: stopped early by
    ASHA, ``errored``: drawn as a grey cross, without a colour)."""
    declared = method_params(search)
    axes = joint_axes(params, importance, declared)
    if axes is None:
        return None
    px, py = axes
    limits = colour_limits(search)
    scale = value_scale(search)
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
        "y_buckets": declared[py.name].spec.buckets if py.name in declared else (),
        "points": points,
        "limits": limits,
        "scale": scale,
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
    scale: Scale | None = data.get("scale")
    norm = scale.norm() if scale is not None else Normalize(0, 1)
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
    _colour_bar(fig, ax, scale, norm, cmap, data["metric"], data["mode"])
    if px.log:
        ax.set_xscale("log")
    if py.log:
        ax.set_yscale("log")
    ax.set_xlim(*_axis_limits(px, [p["x"] for p in pts]))
    ax.set_ylim(*_axis_limits(py, [p["y"] for p in pts]))
    for yv in data.get("y_buckets", ()):
        ax.axhline(float(yv), color="0.6", ls=":", lw=1)
    ax.set_xlabel(f"{px.name}{' (log scale)' if px.log else ''}")
    ax.set_ylabel(f"{py.name}{' (log scale)' if py.log else ''}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    title = f"{data['metric']} over {px.name} x {py.name} ({len(pts)} trials)\n{_scale_note(scale)}"
    ax.set_title(_wrap(title, 5.4, 9), fontsize=9)
    fig.tight_layout()
    return _save(fig, out / filename)


def _scale_note(scale: Scale | None) -> str:
    if scale is None:
        return "no values"
    bands = [f"{len(scale._below)} below" if scale.below else "", f"{len(scale._above)} above" if scale.above else ""]
    outside = " and ".join(b for b in bands if b)
    return f"{scale.how}" + (f"; {outside} it keep their own colour (the colour bar's end bands)" if outside else "")


def _colour_bar(fig: Any, ax: Axes, scale: Scale | None, norm: Any, cmap: Any, metric: str, mode: str) -> None:
    """The colour bar of ``norm``: ticks at the main range's ends and middle and at each band's far end."""
    plt = _plt()
    bar = fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"
    )
    if scale is not None:
        bar.set_ticks(scale.ticks())
        bar.set_ticklabels([f"{v:.3g}" for v in scale.ticks()])
        for edge in ([scale.lo] if scale.below else []) + ([scale.hi] if scale.above else []):
            bar.ax.axhline(edge, color="w", lw=1.2, ls="--")


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
    scale = value_scale(search)
    lines = []
    for t in search.trials:
        value = t.final.get(search.metric)
        ys = [_position(p, t.params.get(p.name)) for p in shown]
        obj = None
        if _finite(value) and scale is not None and t.status != STATUS_ERRORED:
            obj = scale.axis_position(float(value))
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
    return {"axes": shown, "lines": lines, "limits": limits, "scale": scale, "metric": search.metric, "mode": search.mode}


def fig_parallel(data: dict[str, Any] | None, out: Path, filename: str = "parallel_coordinates.png") -> Path | None:
    if data is None:
        return None
    plt = _plt()
    from matplotlib.colors import Normalize

    axes, lines = data["axes"], data["lines"]
    n = len(axes) + 1
    width = max(5.5, 1.9 * n + 1.5)
    fig, ax = plt.subplots(figsize=(width + 1.0, 4.8))
    cmap = plt.get_cmap("viridis" if data["mode"] == "max" else "viridis_r")
    scale: Scale | None = data.get("scale")
    norm = scale.norm() if scale is not None else Normalize(0.0, 1.0)
    sign = 1.0 if data["mode"] == "max" else -1.0
    # Faint (stopped, errored) lines first, then the others from worst to best: the best is drawn on top.
    order = sorted(lines, key=lambda ln: (not ln["faint"], sign * ln["value"] if ln["value"] is not None else -math.inf))
    for ln in order:
        ys = [*ln["ys"], ln["objective"]]
        colour = "0.5" if ln["value"] is None or ln["errored"] else cmap(norm(ln["value"]))
        style = dict(color=colour, lw=0.8, alpha=0.35) if ln["faint"] else dict(color=colour, lw=1.8, alpha=0.95)
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
    last = len(axes)
    ax.axvline(last, color="k", lw=0.8, ymin=0.0, ymax=1.0)
    if scale is not None:
        for t in (0.0, 0.5, 1.0):
            ax.text(last + 0.04, t, f"{scale.lo + t * (scale.hi - scale.lo):.3g}", ha="left", va="center", fontsize=7)
        for side, (y0, y1) in (("below", (-0.16, -0.04)), ("above", (1.04, 1.16))):
            if getattr(scale, side):
                lo_v, hi_v = scale.band_values(side)
                ax.axhspan(y0, y1, xmin=0.0, xmax=1.0, color="0.92", zorder=0)
                ax.text(
                    last + 0.04,
                    (y0 + y1) / 2,
                    f"{side} the scale:\n{lo_v:.3g} .. {hi_v:.3g} ({len(getattr(scale, '_' + side))})",
                    ha="left",
                    va="center",
                    fontsize=7,
                    color="0.25",
                )
    ax.set_xticks(range(n), [f"{p.name}{' (log)' if p.log else ''}" for p in axes] + [data["metric"]], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.5, n - 0.3)
    ax.set_ylim(-0.2, 1.2)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    _colour_bar(fig, ax, scale, norm, cmap, data["metric"], data["mode"])
    title = (
        f"Searched parameters of {len(lines)} trials, coloured by {data['metric']} (last axis)\n"
        "faint: stopped early by ASHA; dashed grey: errored; dotted: passes a parameter the trial does not have\n"
        f"{_scale_note(scale)}; grey bands on the last axis: values outside the main range, in order"
    )
    ax.set_title(_wrap(title, width, 9), fontsize=9)
    fig.tight_layout()
    return _save(fig, out / filename)


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
    return _save(fig, out / filename)
