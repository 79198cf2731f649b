"""The task-dominance heatmap: one panel of layers x tasks rAU per run, side by side (the
``python -m mtlsearch.dominance`` command and the report's ``task_dominance.png`` both draw it)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping


def draw_heatmaps(panels: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | Path, title: str | None = None) -> Path:
    """Draw ``{panel title: {layer: {task: rAU}}}`` to a PNG at ``path``: layers and tasks in order of
    first appearance over all panels, a cell a panel lacks (or a NaN) left blank; each panel's title
    says what perfect balance (1/T) is.  Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    titles = list(panels)
    layers = list(dict.fromkeys(layer for table in panels.values() for layer in table))
    tasks = list(dict.fromkeys(task for table in panels.values() for row in table.values() for task in row))
    fig = Figure(figsize=(2.2 + 1.0 * max(len(tasks), 3) * len(titles), 1.8 + 0.55 * len(layers)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(titles), squeeze=False)[0]
    image = None
    for ax, panel in zip(axes, titles):
        data = [[panels[panel].get(layer, {}).get(task, float("nan")) for task in tasks] for layer in layers]
        image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(f"{panel}\nbalanced = {1 / max(len(tasks), 1):.2f}", fontsize=9)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_yticks(range(len(layers)), layers if ax is axes[0] else [""] * len(layers))
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                if v == v:  # not NaN
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    assert image is not None  # one panel at least
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="relative update share rAU")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    return Path(path)
