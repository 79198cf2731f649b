"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

The Nash bargaining solution of the tasks: the update ``d = sum_t alpha_t g_t`` with ``alpha > 0``
solving ``G G^T alpha = 1 / alpha`` (elementwise) on the **raw** Gramian ``K = G G^T``, i.e.
``<g_t, d> = 1 / alpha_t`` for every task.  Hence ``||d||^2 = alpha^T K alpha = sum_t alpha_t (K alpha)_t
= T``: before clipping, the update always has norm ``sqrt(T)``, whatever the gradients' scale.
As in the released code (AvivNavon/nash-mtl, ``methods/weight_methods.py``), the Gramian is
normalised by its Frobenius norm only to condition the solver: with ``K~ = K / ||K||_F`` and
``K~ a = 1/a``, the weights are mapped back to ``alpha = a / sqrt(||K||_F)``, which solves the
equation on K (the released code does the same through its constraint
``alpha_t ||K||_F (K~ alpha)_t >= 1``).  The update is then scaled down so that
``||d|| <= nash_max_norm`` (the released code's gradient clipping of the shared parameters,
default 1.0; 0 turns it off; in rep mode it bounds the norm of the representation gradient
instead).  ``nash_update_every = N`` recomputes the weights every N
steps and reuses the last ones in between: the method's own documented option
(``update_weights_every``), not a fallback.  Linear (returns weights).  Modes: "param" (default,
the paper's) and "rep".

Solver: the released code runs up to 20 sequential convex approximations with cvxpy/ECOS; here
``K~ a = 1/a`` is solved directly by damped Newton on the strictly convex
``1/2 a^T K~ a - sum log a`` (``_qp.solve_power_equation``: a relative ``1e-10`` ridge on the
Gramian's diagonal, so that a solution exists when a positive combination of the gradients
vanishes; a zero gradient gets weight 0).
If Newton does not reach its tolerance, its last iterate is used (all ones if it is not finite)
and the event is counted in ``nash_mtl/solver_failures``.  The released code stops its sequential
convex approximations after at most 20 ECOS solves (100 iterations each), or earlier when an
iterate moves by less than 1e-6, starting from the previous step's weights, so it agrees with
this solution only to its solver's accuracy; the peer check (``tests/unit/test_peers.py``) asserts that ours has the smaller
residual of the raw-Gramian equation on every case.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._common import SolverMethod, gramian, to_weights
from ._qp import solve_power_equation
from .base import GradResult, HParam, Range


def nash_weights(k: np.ndarray) -> tuple[np.ndarray, bool]:
    """``alpha > 0`` with ``K alpha = 1 / alpha`` (zero-gradient tasks: 0)."""
    return solve_power_equation(k, 1.0)


class NashMTL(SolverMethod):
    """Nash bargaining weights ``K alpha = 1/alpha`` on the raw Gramian, ``||d|| = sqrt(T)`` before clipping.

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "nash_mtl"
    reference = "Navon et al., Multi-Task Learning as a Bargaining Game, ICML 2022"
    nash_update_every = HParam(1, Range(ge=1), "recompute the weights every N steps, reuse them in between")
    nash_max_norm = HParam(1.0, Range(ge=0.0), "upper bound on the norm of the update (0: no bound)")
    # Buffers (registered in __init__; declared here for type checkers).
    step: Tensor
    last_weights: Tensor
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_weights", torch.ones(num_tasks, dtype=torch.float64))

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        k = gramian(grads)
        if int(self.step) % self.nash_update_every == 0:
            fro = float(np.linalg.norm(k))
            if fro > 0.0:
                alpha, ok = nash_weights(k / fro)  # conditioned: K~ a = 1/a, K~ = K / ||K||_F
                alpha = alpha / np.sqrt(fro)  # mapped back: K alpha = 1/alpha on the raw Gramian
                if not np.all(np.isfinite(alpha)):
                    alpha, ok = np.ones(k.shape[0]), False
                if not ok:
                    self._solver_failed("Newton did not reach K alpha = 1/alpha; used its last iterate")
            else:
                alpha = np.ones(k.shape[0])  # all gradients zero: any weights give d = 0
            self.last_weights.copy_(torch.from_numpy(alpha))
        self.step += 1
        alpha = self.last_weights.cpu().numpy().copy()
        if self.nash_max_norm > 0.0:
            norm = float(np.sqrt(max(alpha @ k @ alpha, 0.0)))
            if norm > self.nash_max_norm:
                alpha *= self.nash_max_norm / norm
        return GradResult(weights=to_weights(alpha, grads))
