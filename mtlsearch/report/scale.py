"""The value scale and colour limits of the report's figures, and matplotlib's setup (Agg, saving).

Early-stopped trials carry partial values (their objective after fewer epochs), so the colour scale comes from
the trials that reached ``max_epochs`` when there are at least two of them, else from robust limits (the values
within 1.5 interquartile ranges of the quartiles, Tukey's fences).  No value is ever clipped or moved
(:class:`Scale`): values outside that main range keep their own colour, in bands at the ends of the colour map
that the colour bar labels.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from mtlsearch.report.load import Search
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED

if TYPE_CHECKING:
    pass


def pyplot() -> Any:  # matplotlib.pyplot, imported on first use
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wrap_text(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to fit ``width_in`` inches at ``fontsize`` (each line as given is wrapped alone)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.56)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def save_figure(fig: Any, path: Path) -> Path:
    """Save and close; ``bbox_inches="tight"`` keeps every title, label and legend whole."""
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.08)
    pyplot().close(fig)
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
    values = [float(t.final[metric]) for t in search.trials if t.status != STATUS_ERRORED and is_finite(t.final.get(metric))]
    return Scale(
        lo=lo,
        hi=hi,
        vmin=min([lo, *values]),
        vmax=max([hi, *values]),
        how=how,
        _below=tuple(v for v in values if v < lo),
        _above=tuple(v for v in values if v > hi),
    )


def is_finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def colour_limits(search: Search, metric: str | None = None) -> tuple[float, float, str] | None:
    """(low, high, how) of the main range of ``metric``'s scale (default: the objective; see the module docstring)."""
    metric = metric or search.metric
    done = [t.final[metric] for t in search.trials if t.status == STATUS_COMPLETED and is_finite(t.final.get(metric))]
    if len(done) >= 2 and min(done) < max(done):
        return min(done), max(done), f"colour scale: the {len(done)} trials that reached {search.max_epochs} epochs"
    values = sorted(t.final[metric] for t in search.trials if t.status != STATUS_ERRORED and is_finite(t.final.get(metric)))
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
