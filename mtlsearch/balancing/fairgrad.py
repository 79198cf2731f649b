"""FairGrad (Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024).

alpha-fair allocation of the update among tasks: ``d = sum_t w_t g_t`` with ``w > 0`` solving
``G G^T w = w^(-1/alpha)`` (elementwise), i.e. ``<g_t, d> = w_t^(-1/alpha)``.  ``fairgrad_alpha = 1``
is proportional fairness (Nash-MTL's equation), alpha -> 0 utilitarian (the sum of the tasks'
improvements), alpha -> infinity max-min fairness.  ``fairgrad_alpha`` is limited to [0.1, 20]:
beyond, ``w^(-1/alpha)`` is so stiff (or so flat) that the weights under/overflow float32.
Linear (returns weights).  Modes: "param" (default, the paper's) and "rep".  No normalisation of
the Gramian, as in the released code (so, unlike Nash-MTL here, the weights solve the equation on
the raw Gramian).

Solver: the released code uses scipy's ``least_squares`` from ``w = 1/T``; here damped Newton on
the strictly convex ``1/2 w^T K w - sum_t h(w_t)``, ``h' = w^(-1/alpha)``
(``_qp.solve_power_equation``: solved on ``K / max diag K`` and mapped back exactly; a relative
``1e-10`` ridge on the Gramian's diagonal, so that a solution exists when a positive combination
of the gradients vanishes; a zero gradient gets weight 0).  If Newton does not reach its
tolerance, its last iterate is used (``1/T`` if it is not finite) and the event is counted in
``fairgrad/solver_failures``.

``fairgrad_max_norm > 0`` scales the update down to that norm, as the released runs' clipping of the
shared parameters' gradient (``max_norm`` 1, ``experiments/utils.py`` line 75; in "rep" mode it bounds
the representation gradient instead).  The released runs use ``alpha = 2`` (``experiments/*/run.sh``
line 5); the ``nashmtl`` protocol sets both.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ._common import SolverMethod, gramian, to_weights
from ._qp import solve_power_equation
from .base import GradResult, HParam, Range


def fairgrad_weights(k: np.ndarray, alpha: float) -> tuple[np.ndarray, bool]:
    """``w > 0`` with ``K w = w^(-1/alpha)`` (zero-gradient tasks: 0)."""
    return solve_power_equation(k, alpha)


class FairGrad(SolverMethod):
    """alpha-fair weights ``K w = w^(-1/alpha)`` (weights).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "fairgrad"
    reference = "Ban & Ji, Fair Resource Allocation in Multi-Task Learning, ICML 2024"
    fairgrad_alpha = HParam(1.0, Range(ge=0.1, le=20.0), "fairness exponent (1: proportional, larger: towards max-min)")
    fairgrad_max_norm = HParam(0.0, Range(ge=0.0), "upper bound on the norm of the update (the released runs' clipping at 1; 0: no bound)")
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        k = gramian(grads)
        w, ok = fairgrad_weights(k, self.fairgrad_alpha)
        if not np.all(np.isfinite(w)):
            w, ok = np.full(k.shape[0], 1.0 / k.shape[0]), False
        if not ok:
            self._solver_failed("Newton did not reach K w = w^(-1/alpha); used its last iterate")
        if self.fairgrad_max_norm > 0.0:
            # The released backward (OptMN-Lab/fairgrad methods/weight_methods.py lines 869-871) sets the
            # shared gradient to G^T w and clips its norm (clip_grad_norm_, whose factor is
            # max_norm / (norm + 1e-6)); ||G^T w|| = sqrt(w^T K w).
            norm = float(np.sqrt(max(float(w @ k @ w), 0.0)))
            if norm > self.fairgrad_max_norm:
                w = w * (self.fairgrad_max_norm / (norm + 1e-6))
        return GradResult(weights=to_weights(w, grads))
