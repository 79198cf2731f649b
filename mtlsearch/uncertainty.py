"""How sure a ranking is: the statistics behind every "mean ± interval" and every tie mark (pure numpy).

A configuration's result is the mean of its seeds' values.  Two numbers say how far that mean can be
trusted:

* **the 95% interval**: a Student t-interval over the seeds, ``mean ± t(0.975, n-1) * s / sqrt(n)``
  (``s`` the seeds' sample standard deviation).  One seed has no interval.
* **the tie test** against the best configuration: a percentile bootstrap over seeds in the spirit of
  Bouthillier et al. 2021 ("Accounting for Variance in Machine Learning Benchmarks"): both
  configurations' seeds are resampled with replacement :data:`N_BOOT` times (a seeded generator, so a
  table is the same every time it is printed), and :func:`prob_outperforms` is the share of resamples in
  which the configuration's mean is at least as good as the best's (equal means count one half).
  With two or three seeds the bootstrap can only recombine the few values it has and sees less spread
  than there is (three seeds of one configuration all above three of another give it 0%, where the
  t-intervals overlap widely), so the configuration is **not tied** only when Welch's one-sided t-test
  (:func:`welch_p`, the same t distribution as the intervals) agrees: tied when either the bootstrap
  probability or Welch's p-value exceeds :data:`TIE_THRESHOLD` (5%).  A configuration with one seed (or
  a best with one seed) cannot be tested: ``None``.

Nothing here knows about trials, Ray or MLflow: lists of floats in, floats out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "LEVEL",
    "N_BOOT",
    "TEST_SEED",
    "TIE_THRESHOLD",
    "TIE_TEST",
    "Interval",
    "fmt_interval",
    "interval",
    "prob_outperforms",
    "t_quantile",
    "t_sf",
    "tied",
    "welch_p",
]

LEVEL = 0.95  #: the intervals' coverage
N_BOOT = 2000  #: bootstrap resamples of the tie test
TEST_SEED = 0  #: the tie test's random generator seed (deterministic tables)
TIE_THRESHOLD = 0.05  #: tied when P(at least as good as the best) exceeds this

#: One line naming the test, for tables' footers and MLflow tags.
TIE_TEST = (
    f"tied unless the seeds put the configuration below the best at the {TIE_THRESHOLD:.0%} level by both a percentile "
    f"bootstrap over seeds ({N_BOOT} resamples, seed {TEST_SEED}; Bouthillier et al. 2021: its mean at least as good as "
    f"the best's in at most {TIE_THRESHOLD:.0%} of resamples) and Welch's one-sided t-test (p <= {TIE_THRESHOLD:.2f})"
)
INTERVAL_METHOD = f"{LEVEL:.0%} Student t-interval over seeds"

# t(0.975, df) for df = 1..30; beyond 30 the normal quantile's 1.96 is within 4% (df 30: 2.042).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    # Beyond the table: the Cornish-Fisher expansion around the normal quantile (error < 1e-3 for df > 30).
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` seeds' values and its 95% t-interval (``low``/``high`` None for one seed)."""

    mean: float
    n: int
    low: float | None = None
    high: float | None = None

    @property
    def half(self) -> float | None:
        """Half the interval's width (the ``±``), None for one seed."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def interval(values: Sequence[float]) -> Interval | None:
    """Mean and 95% t-interval of the seeds' ``values`` (non-finite values dropped); None if none is left."""
    arr = _finite(values)
    if arr.size == 0:
        return None
    mean = float(arr.mean())
    if arr.size < 2:
        return Interval(mean, 1)
    half = t_quantile(arr.size - 1) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return Interval(mean, int(arr.size), mean - half, mean + half)


def prob_outperforms(
    values: Sequence[float], best: Sequence[float], mode: str, *, n_boot: int = N_BOOT, seed: int = TEST_SEED
) -> float | None:
    """Bootstrap probability that the mean of ``values`` is at least as good as the mean of ``best``
    (``mode``: ``max`` or ``min``; equal means count one half).  None when either side has fewer than two
    finite values: one seed gives the bootstrap nothing to resample."""
    a, b = _finite(values), _finite(best)
    if a.size < 2 or b.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means_a = rng.choice(a, size=(n_boot, a.size), replace=True).mean(axis=1)
    means_b = rng.choice(b, size=(n_boot, b.size), replace=True).mean(axis=1)
    diff = (means_a - means_b) * (1.0 if mode == "max" else -1.0)
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1.0)
    equal = np.abs(diff) <= 1e-12 * scale  # resampled means that differ by rounding only
    return float(np.mean(np.where(equal, 0.5, diff > 0)))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def welch_p(values: Sequence[float], best: Sequence[float], mode: str) -> float | None:
    """One-sided p-value of Welch's t-test against "the mean of ``values`` is at least as good as the
    best's" (small: the configuration is worse); None with fewer than two finite values on a side."""
    a, b = _finite(values), _finite(best)
    if a.size < 2 or b.size < 2:
        return None
    gap = (float(b.mean()) - float(a.mean())) * (1.0 if mode == "max" else -1.0)  # > 0: the best is ahead
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    if va + vb == 0.0:
        return 0.0 if gap > 0 else 1.0
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return t_sf(gap / math.sqrt(va + vb), df)


def tied(values: Sequence[float], best: Sequence[float], mode: str) -> bool | None:
    """Whether the seeds cannot tell ``values``'s configuration from the best (:data:`TIE_TEST`); None
    when it cannot be tested (one seed on either side)."""
    p = prob_outperforms(values, best, mode)
    w = welch_p(values, best, mode)
    return None if p is None or w is None else (p > TIE_THRESHOLD or w > TIE_THRESHOLD)


# ======================================================================================= digits
def _decimals(half: float) -> int:
    """Decimal places that keep two significant digits of ``half`` (negative: round to tens, ...)."""
    return 1 - math.floor(math.log10(abs(half)))


def fmt_interval(mean: float, half: float | None) -> str:
    """``mean ± half`` with the digits the noise allows: ``half`` to two significant digits, ``mean`` to
    the same decimal place (``-7.6 ± 2.2``, not ``-7.634 ± 2.187``).  Without a ``half`` (one seed) the
    mean alone, to four significant digits."""
    if half is None or not math.isfinite(half) or not math.isfinite(mean):
        return f"{mean:.4g}"
    if half == 0:
        return f"{mean:.4g} ± 0"
    places = _decimals(half)
    rounded_half = round(half, places)
    if rounded_half and _decimals(rounded_half) != places:  # 0.0996 -> 0.10: keep two digits of the rounded value
        places = _decimals(rounded_half)
        rounded_half = round(half, places)
    shown = max(places, 0)
    mean_text = f"{round(mean, places):.{shown}f}"
    if mean_text.lstrip("-").strip("0.") == "":  # -0.0 -> 0.0
        mean_text = mean_text.lstrip("-")
    return f"{mean_text} ± {rounded_half:.{shown}f}"
