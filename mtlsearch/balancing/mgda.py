"""MGDA / MGDA-UB (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

The update is the min-norm point of the convex hull of the task gradients:
``w* = argmin_{w >= 0, sum w = 1} ||sum_t w_t g_t||^2 = argmin w^T K w`` (K = G G^T).  If it is
non-zero, ``-sum w_t g_t`` decreases every task's loss; KKT: ``(K w)_t >= w^T K w`` for all t,
with equality where ``w_t > 0``.  In "rep" mode (the default) G holds the gradients w.r.t. the
shared representation, which is MGDA-UB (the paper's upper-bound variant, one backward pass);
"param" mode is plain MGDA.  Linear: the result is ``w @ G``.

Solver: not the paper's Frank-Wolfe (250 iterations, tolerance 1e-5) but an exact reduction to
one non-negative least-squares problem on the Gramian, solved by Lawson-Hanson (finite, KKT to
rounding; see ``_qp.min_norm_simplex``), so no stopping tolerance is involved.  If it does not
certify the KKT conditions its last iterate is used and the event is counted in
``mgda/solver_failures``.  TorchJD's MGDA is the paper's Frank-Wolfe (stopping at a step below
1e-3, at most 100 iterations), up to ~50 % away from the min-norm point on badly scaled gradients;
``tests/unit/test_peers.py`` certifies that the whole difference is its suboptimality.

``mgda_normalization`` (the released code's ``normalization_type``): the min-norm problem is
solved on ``g_t / n_t`` with n_t = 1 ("none", default), ``||g_t||`` ("l2"), ``L_t`` ("loss") or
``L_t ||g_t||`` ("loss+"); as in the released code the weights found then multiply the
*unnormalised* task gradients (LibMTL instead applies them to the normalised ones).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ._common import SolverMethod, gramian, to_weights
from ._qp import min_norm_simplex
from .base import GradResult, HParam, OneOf

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


class MGDA(SolverMethod):
    """Min-norm convex combination of the task gradients (MGDA-UB in rep mode).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "mgda"
    reference = "Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018"
    mgda_normalization = HParam("none", OneOf(*NORMALIZATIONS), "gradient normalisation before the min-norm solve")
    linear = True
    modes = ("rep", "param")
    default_mode = "rep"

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        k = gramian(grads)
        kind = self.mgda_normalization
        scale = np.ones(k.shape[0])
        if kind in ("l2", "loss+"):
            scale = scale * np.sqrt(np.maximum(np.diag(k), 0.0))
        if kind in ("loss", "loss+"):
            scale = scale * losses.detach().double().cpu().numpy()
        scale = np.where(np.abs(scale) > 1e-30, scale, 1.0)  # a zero norm / loss is left unnormalised
        w, ok = min_norm_simplex(k / np.outer(scale, scale))
        if not ok:
            self._solver_failed("min-norm solver did not certify optimality; used its last iterate")
        return GradResult(weights=to_weights(w, grads))
