"""Figures of the searched parameters: two numbers jointly (a trial setting such as the learning rate x a
method's hyperparameter), parallel coordinates and parameter importance.

They are computed as data first (``joint_data``, ``parallel_data``: plain dicts a test can read) and then
drawn; the axes of the joint figure are the space's ranges, not the trials' values, and on the
parallel-coordinates objective axis values outside the main range sit in labelled bands
(:mod:`mtlsearch.report.scale`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Sequence

from mtlsearch.report.analysis import method_params
from mtlsearch.report.load import Search
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mtlsearch.report.importance import Importance
    from mtlsearch.report.trials import SearchedParam
from mtlsearch.report.scale import Scale, is_finite, pyplot, save_figure, wrap_text, colour_limits, value_scale


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
        if not (is_finite(x) and is_finite(y)):
            continue
        value = t.final.get(search.metric)
        points.append(
            {
                "trial": t.trial_id,
                "x": float(x),
                "y": float(y),
                "status": t.status,
                "epochs": t.epochs,
                "value": float(value) if is_finite(value) else None,
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
    plt = pyplot()
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
    ax.set_title(wrap_text(title, 5.4, 9), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out / filename)


def _scale_note(scale: Scale | None) -> str:
    if scale is None:
        return "no values"
    bands = [f"{len(scale._below)} below" if scale.below else "", f"{len(scale._above)} above" if scale.above else ""]
    outside = " and ".join(b for b in bands if b)
    return f"{scale.how}" + (f"; {outside} it keep their own colour (the colour bar's end bands)" if outside else "")


def _colour_bar(fig: Any, ax: Axes, scale: Scale | None, norm: Any, cmap: Any, metric: str, mode: str) -> None:
    """The colour bar of ``norm``: ticks at the main range's ends and middle and at each band's far end."""
    plt = pyplot()
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
    if not is_finite(v) or p.low is None or p.high is None or p.low == p.high:
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
        if is_finite(value) and scale is not None and t.status != STATUS_ERRORED:
            obj = scale.axis_position(float(value))
        lines.append(
            {
                "trial": t.trial_id,
                "ys": ys,
                "objective": obj,
                "value": float(value) if is_finite(value) else None,
                "status": t.status,
                "faint": t.status != STATUS_COMPLETED,
                "errored": t.status == STATUS_ERRORED,
            }
        )
    return {"axes": shown, "lines": lines, "limits": limits, "scale": scale, "metric": search.metric, "mode": search.mode}


def fig_parallel(data: dict[str, Any] | None, out: Path, filename: str = "parallel_coordinates.png") -> Path | None:
    if data is None:
        return None
    plt = pyplot()
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
    ax.set_title(wrap_text(title, width, 9), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out / filename)


def fig_importance(result: Importance | None, metric: str, out: Path, filename: str = "param_importance.png") -> Path | None:
    """Horizontal bars, one group per parameter, one bar per evaluator (labelled with its evaluator)."""
    if result is None or not result.ok:
        return None
    plt = pyplot()
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
    return save_figure(fig, out / filename)
