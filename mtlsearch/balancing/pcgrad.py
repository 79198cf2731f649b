"""PCGrad: gradient surgery (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020).

For each task i, in a random order of all tasks j (i included, as in the released code):
if ``<g_i^PC, g_j> < 0`` then ``g_i^PC <- g_i^PC - <g_i^PC, g_j> / ||g_j||^2 g_j`` (projection onto
the normal plane of the *original* g_j).  The update is ``sum_i g_i^PC`` (the paper's sum).
Non-conflicting gradients are left alone (the update is then the plain sum); for two tasks each
projected gradient is orthogonal to the other task's gradient when they conflicted.

Every ``g_i^PC`` is a combination of the original gradients, ``g_i^PC = sum_k C_ik g_k``, so the
method runs on the Gramian only (``<g_i^PC, g_j> = (C K)_ij``) and **returns weights**
``w = 1^T C`` with ``w @ G = sum_i g_i^PC`` (it is "linear" in this package's sense: the weights
depend on G, but the update is a weighting of the task gradients, so it can feed AdaTask).
The orders are drawn with ``torch.randperm`` from torch's global RNG (checkpointed by the
trainer), one permutation per task per step.  Modes: "param" (the paper's, default) and "rep".
TorchJD's PCGrad skips j = i; the released code (and this) projects g_i^PC off g_i too when they
conflict, which can happen after several projections when T > d (asserted in ``tests/unit/test_peers.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ._common import gramian, to_weights
from .base import GradBalancing, GradResult


def pcgrad_coefficients(k: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """``C`` with ``g_i^PC = sum_k C_ik g_k``, task i visiting the tasks in ``orders[i]``."""
    t = k.shape[0]
    c = np.eye(t)
    for i in range(t):
        for j in orders[i]:
            dot = float(c[i] @ k[:, j])
            if dot < 0.0 and k[j, j] > 0.0:
                c[i, j] -= dot / k[j, j]
    return c


class PCGrad(GradBalancing):
    """Project each task gradient off the conflicting ones, then sum (weights form).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "pcgrad"
    reference = "Yu et al., Gradient Surgery for Multi-Task Learning, NeurIPS 2020"
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        t = grads.shape[0]
        orders = [torch.randperm(t).tolist() for _ in range(t)]
        c = pcgrad_coefficients(gramian(grads), orders)
        return GradResult(weights=to_weights(c.sum(0), grads))
