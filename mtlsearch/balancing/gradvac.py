"""GradVac: gradient vaccine (Wang et al., "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021).

Each pair (i, j) keeps an EMA target cosine ``phi_ij`` (init 0).  For task i, in a random order of
the other tasks j: with ``rho = cos(g_i^GV, g_j)``, if ``rho < phi_ij`` then
``g_i^GV <- g_i^GV + ||g_i^GV|| (phi sqrt(1 - rho^2) - rho sqrt(1 - phi^2)) / (||g_j|| sqrt(1 - phi^2)) g_j``,
which makes ``cos(g_i^GV, g_j) = phi_ij`` exactly; then ``phi_ij <- (1 - beta) phi_ij + beta rho``
(every visited pair, as in the paper's Algorithm 1).  The update is ``sum_i g_i^GV``.
With all targets 0 (e.g. ``gradvac_beta = 0``) the correction is PCGrad's projection; gradients
whose cosines already reach their targets are summed unchanged.

Runs on the Gramian, like PCGrad (``g_i^GV = sum_k C_ik g_k``), and **returns weights**
``1^T C`` (linear in this package's sense).  Orders come from ``torch.randperm`` (torch's RNG);
the targets are a buffer (checkpointed).  Modes: "param" (default) and "rep".
Deviations: the paper also offers per-layer targets; this is the whole-vector variant (LibMTL's
default).  Default ``gradvac_beta = 0.01`` (the paper's; LibMTL uses 0.5).  A zero gradient has
no cosine: its pairs are skipped, targets unchanged.  ``phi`` is clipped to ``|phi| <= 1 - 1e-12``
so the correction stays finite.  TorchJD's GradVac adds ``eps = 1e-8`` to the cosine's and the
correction's denominators and, when a corrected gradient vanishes (two opposite gradients), takes
its cosine as ~0 and moves the targets towards it, where this skips the pair (``tests/unit/test_peers.py``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ._common import gramian, to_weights
from .base import GradBalancing, GradResult, HParam, Range

PHI_MAX = 1.0 - 1e-12


def gradvac_coefficients(k: np.ndarray, targets: np.ndarray, beta: float, orders: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(C, new_targets)``: ``g_i^GV = sum_k C_ik g_k``; ``orders[i]`` lists the tasks j != i."""
    t = k.shape[0]
    c = np.eye(t)
    phi_all = targets.copy()
    for i in range(t):
        for j in orders[i]:
            if k[j, j] <= 0.0:
                continue
            norm_i2 = float(c[i] @ k @ c[i])
            if norm_i2 <= 0.0:
                continue
            norm_i, norm_j = math.sqrt(norm_i2), math.sqrt(k[j, j])
            rho = min(1.0, max(-1.0, float(c[i] @ k[:, j]) / (norm_i * norm_j)))
            phi = min(PHI_MAX, max(-PHI_MAX, float(phi_all[i, j])))
            if rho < phi:
                root = math.sqrt(1.0 - phi * phi)
                c[i, j] += norm_i * (phi * math.sqrt(1.0 - rho * rho) - rho * root) / (norm_j * root)
            phi_all[i, j] = (1.0 - beta) * phi_all[i, j] + beta * rho
    return c, phi_all


class GradVac(GradBalancing):
    """Raise each pair's gradient cosine to its EMA target, then sum (weights form).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "gradvac"
    reference = "Wang et al., Gradient Vaccine, ICLR 2021"
    gradvac_beta = HParam(0.01, Range(ge=0.0, le=1.0), "EMA rate of the target cosine similarities")
    # Buffers (registered in __init__; declared here for type checkers).
    targets: Tensor
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("targets", torch.zeros(num_tasks, num_tasks, dtype=torch.float64))

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        t = grads.shape[0]
        orders = []
        for i in range(t):
            others = [j for j in range(t) if j != i]
            orders.append([others[p] for p in torch.randperm(t - 1).tolist()])
        c, phi = gradvac_coefficients(gramian(grads), self.targets.cpu().numpy(), self.gradvac_beta, orders)
        self.targets.copy_(torch.from_numpy(phi))
        return GradResult(weights=to_weights(c.sum(0), grads))
