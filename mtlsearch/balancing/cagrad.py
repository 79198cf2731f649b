"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021).

Primal: ``max_d min_t <g_t, d>`` s.t. ``||d - g0|| <= c ||g0||`` with ``g0`` the mean gradient:
the best worst-task improvement in a ball around the average.  Its dual over the simplex,
``w* = argmin_w  w^T K 1/T + c ||g0|| sqrt(w^T K w)`` (K = G G^T), gives
``d = g0 + c ||g0|| g_w / ||g_w||`` with ``g_w = sum_t w*_t g_t``; then, as in the released code,
``d`` is divided by ``1 + c^2`` (``cagrad_rescale = 1``, default), by ``1 + c`` (2) or not (0).
c = 0 is the mean gradient.  Linear: ``d = (1/T + c ||g0|| w* / ||g_w||) @ G`` (rescaled), so the
method returns weights.  Modes: "param" (default, the paper's) and "rep".

Solver: the released code calls scipy's SLSQP; here the dual is minimised by accelerated
projected gradient on the simplex (``_qp.minimize_on_simplex``) on the Gramian normalised by its
largest diagonal entry, with ``sqrt(w^T K w + 1e-12)`` (the released code adds 1e-8 to the raw
Gramian), until the Frank-Wolfe gap is below 1e-9 (relative), finished where needed by Newton
steps on the optimal face (descent on f alone stalls at a gap of ~1e-9 on ~15 % of random cases).  If the optimal ``g_w`` vanishes
(``||g_w|| <= 1e-9`` of the largest gradient norm, or the dual's optimum is 0 and 0 lies in the
gradients' convex hull, checked exactly: then the iterate's small ``g_w`` is solver residue whose
direction is noise) the update is ``g0``, the limit of the released code's
``g0 + c ||g0|| g_w / (||g_w|| + 1e-8)``; TorchJD's CAGrad returns a zero update there instead.
TorchJD does not rescale (``cagrad_rescale = 0`` here); both differences are asserted in
``tests/unit/test_peers.py``.  If the dual does not reach its tolerance, the last iterate is used and
the event counted in ``cagrad/solver_failures``.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ._common import SolverMethod, gramian, to_weights
from ._qp import min_norm_simplex, minimize_on_simplex
from .base import GradResult, HParam, OneOf, Range

SMOOTH = 1e-12


def _hull_contains_zero(kn: np.ndarray) -> bool:
    """Whether 0 is in the convex hull of the gradients (exact min-norm point, ``_qp.min_norm_simplex``)."""
    w, ok = min_norm_simplex(kn)
    return ok and float(w @ kn @ w) <= 1e-18


def cagrad_weights(k: np.ndarray, c: float, rescale: int = 1) -> tuple[np.ndarray, bool]:
    """CAGrad's weights on the task gradients from the float64 Gramian ``K``."""
    t = k.shape[0]
    mean = np.full(t, 1.0 / t)
    top = float(np.max(np.diag(k))) if t else 0.0
    g0_sq = float(mean @ k @ mean)
    ok = True
    if c > 0.0 and top > 0.0 and g0_sq > 0.0:
        kn = k / top
        b = kn @ mean
        radius = c * np.sqrt(max(g0_sq / top, 0.0))

        def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
            kw = kn @ w
            root = np.sqrt(max(float(w @ kw), 0.0) + SMOOTH)
            return float(b @ w) + radius * root, b + radius * kw / root

        def hess(w: np.ndarray) -> np.ndarray:
            kw = kn @ w
            root = np.sqrt(max(float(w @ kw), 0.0) + SMOOTH)
            return radius * (kn / root - np.outer(kw, kw) / root**3)

        w, ok = minimize_on_simplex(fun, mean, tol=1e-9, hess=hess)
        gw_norm = np.sqrt(max(float(w @ kn @ w), 0.0))  # in units of the largest gradient norm
        if gw_norm > 1e-9 and fun(w)[0] > -1e-9 and _hull_contains_zero(kn):
            # The dual's optimum is 0, attained where g_w = 0 (a convex combination of the gradients
            # vanishes, e.g. two opposite ones): the iterate's small g_w is the solver's residue and
            # its direction is noise, which w / ||g_w|| would blow up to the radius c ||g0||.
            gw_norm = 0.0
        # g_w = 0: no direction to add, d = g0.
        weights = mean + radius * w / gw_norm if gw_norm > 1e-9 else mean
    else:
        weights = mean
    divisor = {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]
    return weights / divisor, ok


class CAGrad(SolverMethod):
    """Maximise the worst task's improvement within a ball around the mean gradient (weights).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "cagrad"
    reference = "Liu et al., Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021"
    cagrad_c = HParam(0.5, Range(ge=0.0), "radius of the ball around the mean gradient, relative to its norm")
    cagrad_rescale = HParam(1, OneOf(0, 1, 2), "divide the update by 1 (0), 1 + c^2 (1) or 1 + c (2)")
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        w, ok = cagrad_weights(gramian(grads), self.cagrad_c, self.cagrad_rescale)
        if not ok:
            self._solver_failed("the dual did not reach its Frank-Wolfe gap tolerance; used the last iterate")
        return GradResult(weights=to_weights(w, grads))
