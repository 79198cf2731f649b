"""ExcessMTL: robust MTL weighting by each task's estimated excess risk (He et al., ICML 2024)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._lazy import LazyStateMixin
from .base import GradBalancing, GradResult, HParam, Range

#: Inside the square root of the accumulated squared gradients, as in the released code.
EPS = 1e-7


class ExcessMTL(LazyStateMixin, GradBalancing):
    """Exponentiated-gradient weights on the tasks' excess risks, estimated from their gradients.

    Each task's excess risk is estimated by a second-order expansion with AdaGrad's diagonal
    preconditioner: with ``H_t = sum over steps of g_t^2`` (elementwise, this step included),

        e_t = g_t^T diag(sqrt(H_t + 1e-7))^-1 g_t.

    The first step records ``e(0)`` and keeps equal weights; afterwards

        w_t <- w_t exp(eta e_t / e_t(0)),   w <- T w / sum(w)     (eta = excess_mtl_step)

    and the update is ``sum_t w_t g_t`` (linear).  ``H`` (``[T, d]``), ``e(0)`` and ``w`` are
    buffers (checkpointed); a task whose first gradient is zero
    keeps ratio 0 (the released code divides by zero).  Tasks far from their optimum (large excess risk) gain weight; unlike
    loss-based robust weighting, a task with a large but irreducible loss (label noise) does not.
    Mode: "param" only (``H`` accumulates over steps, so its rows must be the same coordinates).

    Reference: He, Zhou, Zhao & Huang, "Robust Multi-Task Learning with Excess Risks", ICML 2024;
    released code github.com/yifei-he/ExcessMTL (a LibMTL fork); implementation followed: LibMTL
    ``weighting/ExcessMTL.py``.  Deviations: there the weighted loss ``sum_t w_t L_t`` is
    back-propagated, so heads get ``w_t``-weighted gradients; here heads get their own task's
    gradient, as for every gradient-level method.  ``excess_mtl_step`` (``robust_step_size``, a
    command-line argument of the released scripts) defaults to 0.01.
    Memory: the ``[T, d]`` state is one more copy of the per-task gradients, in every checkpoint too.
    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "excess_mtl"
    reference = "He et al., Robust Multi-Task Learning with Excess Risks, ICML 2024"
    excess_mtl_step = HParam(0.01, Range(ge=0), "step size eta of the exponentiated weight update")
    # Buffers (registered in __init__; declared here for type checkers).
    grad_sq_sum: Tensor
    loss_weights: Tensor
    initial_excess: Tensor
    has_initial: Tensor
    linear = True
    modes = ("param",)
    default_mode = "param"
    lazy_buffers = ("grad_sq_sum",)

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self._register_lazy()
        self.register_buffer("loss_weights", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("initial_excess", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        g = grads.detach()
        g = g if g.dtype in (torch.float32, torch.float64) else g.float()
        h = self._materialise("grad_sq_sum", g, tuple(g.shape))
        h.add_(g * g)
        excess = ((g * g) / torch.sqrt(h + EPS)).sum(dim=1).to(self.loss_weights)
        # A task whose first gradient was zero has no scale to compare with: its ratio is 0.
        init = self.initial_excess
        ratio = torch.where(init > 0, excess / torch.where(init > 0, init, torch.ones_like(init)), torch.zeros_like(init))
        w = self.loss_weights * torch.exp(self.excess_mtl_step * ratio)
        w = self.num_tasks * w / w.sum()
        # The first step only records e(0) (torch.where: no host sync on a GPU).
        self.loss_weights.copy_(torch.where(self.has_initial, w, self.loss_weights))
        self.initial_excess.copy_(torch.where(self.has_initial, init, excess))
        self.has_initial.fill_(True)
        return GradResult(weights=self.loss_weights.to(torch.float64 if g.dtype == torch.float64 else torch.float32))
