"""IMTL: Impartial Multi-Task Learning (Liu et al., ICLR 2021), its three variants.

* **IMTL-G** (gradient part, :class:`IMTLG`): weights ``alpha`` with ``sum alpha = 1`` such that
  ``g = sum_t alpha_t g_t`` has equal projections on every unit gradient ``u_t = g_t / ||g_t||``.
  The paper's closed form is ``alpha_{2:T} = g_1 U^T (D U^T)^-1``, ``alpha_1 = 1 - sum alpha_{2:T}``
  (rows of D: ``g_1 - g_t``, of U: ``u_1 - u_t``); on the Gramian ``K = G G^T`` with
  ``n = sqrt(diag K)`` it is ``alpha = K^-1 n / (1^T K^-1 n)``.  ``alpha`` may be negative.
* **IMTL-L** (loss part, :class:`IMTLL`): learnable ``s_t`` (init 0), loss ``sum_t e^{s_t} L_t - s_t``;
  at the optimum ``s_t = -log L_t``, so every scaled loss equals 1.
* **IMTL-H** (:class:`IMTLH`): the losses are scaled as in IMTL-L, ``alpha`` comes from IMTL-G on
  the gradients of the *scaled* losses for the shared part, and the heads and ``s_t`` get their
  own scaled-loss gradients (the trainer back-propagates ``transform_losses(L).sum()`` into the
  heads and the method's parameters; only the shared part is ``alpha``-weighted).

Properties: equal projections; IMTL-G keeps the update's direction (not its norm) when a task's
loss is rescaled; IMTL-H is scale-invariant (direction and norm) once ``s_t`` has adapted.
The paper computes gradients w.r.t. the shared representation ("rep" mode, the default here);
"param" mode is offered too.

**Singular cases** (our choice; reference implementations crash, add ``1e-8 I`` or use a
pseudo-inverse): we solve the equivalent bordered system on the cosine matrix
``C = diag(1/n) K diag(1/n)``: ``C beta = c 1``, ``sum_t beta_t / n_t = 1``, ``alpha = beta / n``
(unknowns ``beta`` and the common projection ``c``), in float64, by ``numpy.linalg.lstsq``
(SVD, minimum-norm solution) whenever the system is singular or ill-conditioned.  This is the
paper's closed form when ``D U^T`` is invertible, and its continuous extension otherwise:
identical gradients share their weight equally, opposite gradients get equal weights (the equal
projections are then 0), T = 1 gives ``alpha = 1``.  A zero gradient (``||g_t|| <= 1e-12`` of
the largest) has no direction: it gets ``alpha_t = 0`` and the others are solved among
themselves; all zero gives ``1/T``.  If the system has no solution at all (the equal-projection
direction has weights summing to 0, a measure-zero event), the weights fall back to ``1/T``;
that fallback is counted in ``imtl_g/solver_failures`` (``imtl_h/...``) and warned about.
TorchJD's IMTLG uses ``pinv(K) n``: it agrees where K is invertible, but at exactly opposite
gradients it jumps to a non-zero update with unequal projections, while ours is the limit (0) of
its own updates on nearby full-rank G; and for parallel gradients of different norms (where any
weights with the right proportions have equal projections) the two pick different solutions.
Both asserted in ``tests/unit/test_peers.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._common import SolverMethod, gramian, to_weights
from .base import GradResult, LossBalancing

REFERENCE = "Liu et al., Towards Impartial Multi-task Learning, ICLR 2021"


def imtl_g_weights(k: np.ndarray) -> tuple[np.ndarray, bool]:
    """IMTL-G weights from a float64 Gramian ``K`` (``[T, T]``); returns ``(alpha, solved)``."""
    t = k.shape[0]
    norms = np.sqrt(np.maximum(np.diag(k), 0.0))
    top = float(norms.max()) if t else 0.0
    if top == 0.0:
        return np.full(t, 1.0 / max(t, 1)), True
    live = np.flatnonzero(norms > 1e-12 * top)
    n = norms[live]
    cos = k[np.ix_(live, live)] / np.outer(n, n)
    m = len(live)
    # [C  -1] [beta]   [0]
    # [1/n 0] [ c  ] = [1]
    a = np.zeros((m + 1, m + 1))
    a[:m, :m] = cos
    a[:m, m] = -1.0
    a[m, :m] = 1.0 / n * top  # rows scaled by ||g||_max: entries O(1), same solution up to beta scale
    b = np.zeros(m + 1)
    b[m] = top
    sol = None
    if np.linalg.cond(a) < 1e12:
        sol = np.linalg.solve(a, b)
    else:
        sol = np.linalg.lstsq(a, b, rcond=1e-12)[0]
    alpha_live = sol[:m] / n
    alpha = np.zeros(t)
    alpha[live] = alpha_live
    total = alpha.sum()
    ok = bool(np.all(np.isfinite(alpha)) and abs(total - 1.0) < 1e-6 and np.linalg.norm(a @ sol - b) <= 1e-8 * top)
    if not ok:
        return np.full(t, 1.0 / t), False
    return alpha / total, True


class IMTLG(SolverMethod):
    """IMTL-G: equal projections of the update on every task's unit gradient (linear).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "imtl_g"
    reference = REFERENCE + " (IMTL-G)"
    linear = True
    modes = ("rep", "param")
    default_mode = "rep"

    def _alpha(self, grads: Tensor) -> Tensor:
        alpha, ok = imtl_g_weights(gramian(grads))
        if not ok:
            self._solver_failed("the equal-projection system has no solution with sum(alpha) = 1; used 1/T")
        return to_weights(alpha, grads)

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        return GradResult(weights=self._alpha(grads))


class IMTLL(LossBalancing):
    """IMTL-L: ``sum_t e^{s_t} L_t - s_t`` with learnable ``s_t`` (init 0); weights ``e^{s_t}``."""

    name = "imtl_l"
    reference = REFERENCE + " (IMTL-L)"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.s = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, losses: Tensor) -> Tensor:
        return (torch.exp(self.s) * losses - self.s).sum()


class IMTLH(IMTLG):
    """IMTL-H: IMTL-L scaled losses, IMTL-G weights on their shared gradients (linear).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "imtl_h"
    reference = REFERENCE + " (IMTL-H)"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.s = nn.Parameter(torch.zeros(num_tasks))

    def transform_losses(self, losses: Tensor) -> Tensor:
        return torch.exp(self.s) * losses - self.s
