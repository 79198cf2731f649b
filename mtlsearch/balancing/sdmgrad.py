"""SDMGrad: stochastic direction-oriented multi-objective gradient descent (Xiao et al., NeurIPS 2023)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._common import gramian, to_weights
from ._qp import project_simplex
from .base import GradBalancing, GradResult, HParam, Range

#: Momentum of the inner SGD on the weights, as in LibMTL's SDMGrad and the released code (reset each step).
INNER_MOMENTUM = 0.5


def sdmgrad_inner(k: np.ndarray, w: np.ndarray, lam: float, niter: int, lr: float = 5.0) -> np.ndarray:
    """``niter`` projected SGD-with-momentum steps on ``min_w 1/2 ||G^T w + lam g0||^2`` over the simplex.

    On the Gramian normalised by ``mean_t ||g_t||`` squared; the gradient of the objective is
    ``K w + lam K 1/T``.  Momentum starts afresh (the released code builds a new optimizer each step).
    """
    diag = np.clip(np.diag(k), 0.0, None)
    scale = float(np.mean(np.sqrt(diag)))
    kn = k / (scale**2 + 1e-8)
    kg = kn.mean(axis=1)
    buf = None
    for _ in range(niter):
        grad = kn @ w + lam * kg
        buf = grad if buf is None else INNER_MOMENTUM * buf + grad
        w = project_simplex(w - lr * buf)
    return w


class SDMGrad(GradBalancing):
    """A direction near the mean gradient that improves every task: ``(G^T w + lambda g0) / (1 + lambda)``.

    ``w`` on the simplex minimises ``||G^T w + lambda g0||^2`` (``g0`` the mean gradient), by
    ``sdmgrad_niter`` projected SGD-with-momentum steps warm-started from the previous step's ``w``
    (a buffer, checkpointed; ``1/T`` at the start).  Linear: the weights are
    ``(w + lambda / T) / (1 + lambda)`` (they sum to 1).  Large lambda tends to the mean gradient,
    lambda = 0 to MGDA's min-norm direction.  Default mode "param" (LibMTL supports no other).

    Reference: Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable
    Stochastic Algorithms", NeurIPS 2023; released code github.com/OptMN-Lab/sdmgrad; implementation
    followed: LibMTL ``weighting/SDMGrad.py`` (lambda 0.3, 20 inner steps of SGD lr 5, momentum 0.5;
    the released code's inner lr is 10).  With these constants (lr times the normalised Gramian's
    largest eigenvalue well above 2) the inner iterates need not converge to the minimiser: the
    weights are what the released procedure gives, not the exact solution; a small
    ``sdmgrad_inner_lr`` with many ``sdmgrad_niter`` gives the exact one.
    Deviation: the stochastic algorithm uses three independent batches (one for the direction, two
    for an unbiased Gramian); here all three are the step's batch (the deterministic variant, no
    extra forward passes).
    Reproducibility limit: with these constants the inner iteration is not a contraction, so it
    amplifies rounding: as ``sdmgrad_niter`` grows the weights stop being reproducible across devices,
    BLAS libraries or dtypes (LibMTL's too: a 1e-13 change of the input moves its update by up to 100%
    at 100 inner steps).  At the default 20 steps two machines may still give different weights from
    the same gradients; compare SDMGrad runs by their seeds' spread, not bit for bit.
    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "sdmgrad"
    reference = "Xiao et al., Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms, NeurIPS 2023"
    sdmgrad_lambda = HParam(0.3, Range(ge=0), "pull towards the mean gradient")
    sdmgrad_niter = HParam(20, Range(ge=1), "inner steps on the weights per step")
    sdmgrad_inner_lr = HParam(5.0, Range(gt=0), "learning rate of the inner SGD on the weights (LibMTL 5, released code 10)")
    # Buffers (registered in __init__; declared here for type checkers).
    w: Tensor
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("w", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        w = sdmgrad_inner(gramian(grads), self.w.cpu().numpy().copy(), self.sdmgrad_lambda, self.sdmgrad_niter, self.sdmgrad_inner_lr)
        self.w.copy_(torch.from_numpy(w))
        lam = self.sdmgrad_lambda
        return GradResult(weights=to_weights((w + lam / self.num_tasks) / (1 + lam), grads))
