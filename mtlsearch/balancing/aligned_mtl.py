"""Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023).

Make the gradient system perfectly conditioned: with the Gramian ``K = G G^T = V diag(lambda) V^T``
(rank r, eigenvalues in decreasing order), the balance transformation
``B = sqrt(lambda_r) V_r diag(lambda_r^-1/2) V_r^T`` turns G into ``G^ = B G``, whose non-zero
singular values all equal ``sqrt(lambda_r)`` (the smallest one of G): ``G^ G^^T = lambda_r V_r V_r^T``.
The update is the sum of the aligned gradients, ``1^T B G``, i.e. weights ``B 1`` (linear).
As in the released code: the rank keeps eigenvalues above ``lambda_max * T * eps_float32``, the
scale is the smallest kept one ("min" scale mode), the aligned gradients are summed (unit
preferences; TorchJD averages them, a factor 1/T).  All-zero gradients give weights 1.
TorchJD's AlignedMTL also cuts the rank at ``lambda_max * T * eps`` of the Gramian's own dtype, so on a
float64 Gramian it keeps eigenvalues of ~1e-7 lambda_max that this (float32 eps, as LibMTL's
``torch.finfo().eps``) drops; both differences are asserted in ``tests/unit/test_peers.py``.
Modes: "param" (default, Aligned-MTL) and "rep" (the paper's Aligned-MTL-UB).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ._common import gramian, to_weights
from .base import GradBalancing, GradResult

EPS32 = float(np.finfo(np.float32).eps)


def balance_transformation(k: np.ndarray) -> np.ndarray:
    """Aligned-MTL's ``B`` (``[T, T]``, symmetric) from the float64 Gramian ``K``."""
    t = k.shape[0]
    lam, vec = np.linalg.eigh(k)
    tol = float(lam.max()) * t * EPS32 if t else 0.0
    keep = lam > tol
    if not keep.any():
        return np.eye(t)
    lam, vec = lam[keep], vec[:, keep]
    return np.sqrt(lam.min()) * (vec / np.sqrt(lam)) @ vec.T


class AlignedMTL(GradBalancing):
    """Align the task gradients to equal singular values, then sum (weights).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "aligned_mtl"
    reference = "Senushkin et al., Independent Component Alignment for Multi-Task Learning, CVPR 2023"
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        b = balance_transformation(gramian(grads))
        return GradResult(weights=to_weights(b.sum(1), grads))
