"""UPGrad: unconflicting projection of gradients (Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization", 2024; TorchJD's ``UPGrad``).

Each task gradient ``g_i`` is projected onto the dual cone ``{x : <g_t, x> >= 0 for all t}`` of the
gradients and the projections are averaged (TorchJD's default uniform preferences 1/T).  By the
paper's Proposition 1, the projection of ``G^T u`` is ``G^T v`` with
``v = argmin_{v >= u} v^T K v`` (K = G G^T), so the update is ``(sum_i v_i) @ G`` for ``u_i = e_i / T``
(linear: returns weights).  KKT gives ``(K v_i)_t >= 0``: the update never conflicts with any
task (``<g_t, d> >= 0``), and equals the mean when no gradients conflict.
Modes: "param" (default, as in TorchJD/LibMTL) and "rep".

Solver: with ``v = u + x``, ``x >= 0`` minimises ``1/2 x^T K x + (K u)^T x``: a non-negative least
squares problem solved exactly by Lawson-Hanson on the Gramian (``_qp.nnls_gram``), one per task,
on ``K / trace K`` (the normalisation TorchJD uses; it does not change the weights).
Deviation: TorchJD adds ``1e-4 I`` to the normalised Gramian so that quadprog sees a positive
definite matrix; the active-set solver handles semi-definite Gramians, so no ridge is added and
the non-conflict property holds to rounding.  A QP whose KKT conditions are not certified uses
the solver's last iterate and is counted in ``upgrad/solver_failures``.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ._common import SolverMethod, gramian, to_weights
from ._qp import nnls_gram
from .base import GradResult


def upgrad_weights(k: np.ndarray) -> tuple[np.ndarray, bool]:
    """``sum_i argmin_{v >= e_i / T} v^T K v`` and whether every QP was solved."""
    t = k.shape[0]
    trace = float(np.trace(k))
    if trace <= 0.0:
        return np.full(t, 1.0 / t), True
    kn = k / trace
    total = np.zeros(t)
    ok = True
    for i in range(t):
        x, solved = nnls_gram(kn, -kn[:, i])  # projection of g_i: v = e_i + x (scaled by 1/T below)
        total[i] += 1.0
        total += x
        ok &= solved
    return total / t, ok


class UPGrad(SolverMethod):
    """Average of the task gradients' projections onto their dual cone (weights).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "upgrad"
    reference = "Quinton & Rey, Jacobian Descent for Multi-Objective Optimization, arXiv 2406.16232 (TorchJD UPGrad)"
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        w, ok = upgrad_weights(gramian(grads))
        if not ok:
            self._solver_failed("a dual-cone projection QP was not certified optimal; used the last iterate")
        return GradResult(weights=to_weights(w, grads))
