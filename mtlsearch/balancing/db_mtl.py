"""DB-MTL: dual balancing, of loss scales (log-losses) and of gradient magnitudes (to the largest)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import float_dtype
from .base import GradBalancing, GradResult, HParam, Range

#: Inside the log of the losses, and in the norm ratios (as in LibMTL's DB_MTL).
EPS = 1e-8


class DBMTL(GradBalancing):
    """Gradients of the log-losses, each scaled to the largest task's (EMA) gradient norm.

    * Loss-scale balancing: every task (heads included) is trained on ``log(L_t + eps)``, whose
      gradient ``g_t = grad L_t / (L_t + eps)`` does not change when ``L_t`` is multiplied by a constant.
    * Gradient-magnitude balancing: with ``nhat_t`` an exponential moving average of ``||g_t||``,

          nhat_t <- beta_k nhat_t + (1 - beta_k) ||g_t||,   beta_k = db_mtl_beta / k^db_mtl_beta_sigma
          alpha_t = max_i nhat_i / nhat_t,                  update = sum_t alpha_t g_t

      so every task contributes a gradient of the largest task's magnitude (exactly, for beta = 0).

    The result is ``weights = alpha`` (a linear method: combines with AdaTask); the trainer reports
    these as ``weights/<task>`` (weights of the *log*-loss gradients: on ``L_t`` itself the weight is
    ``alpha_t / L_t``).  Default mode: "param" (the shared parameters, as in the paper; LibMTL
    supports no other); "rep" (``g_t`` w.r.t. the shared representation) is cheaper.  ``nhat`` and
    the step count are buffers (checkpointed).

    Reference: Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for Multi-Task
    Learning", arXiv 2308.12029 (2023; Neural Networks); code in LibMTL (``weighting/DB_MTL.py``,
    defaults ``DB_beta`` 0.9, ``DB_beta_sigma`` 0 in the STCH authors' copy of LibMTL's config).
    Deviation: the authors' implementation (LibMTL) keeps an EMA of the per-task gradient
    *vectors* ``ghat_t`` (``T x d`` state) and steps along
    ``sum_t (max_i ||ghat_i|| / ||ghat_t||) ghat_t``.  Here the EMA is of the gradient *norms* and
    the weights multiply the current gradients: the method stays a weighting of this step's
    per-task gradients (so it works with AdaTask, the dominance tracker and in "rep" mode, where
    rows of successive batches belong to different samples and averaging them would mean nothing),
    at O(T) state; the momentum the EMA gives the update is left to the optimizer.  ``||EMA(g)||``
    is smaller than ``EMA(||g||)`` for a task whose gradient direction is noisy, so the two
    weightings differ most for such tasks.


    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "db_mtl"
    reference = "Lin et al., Dual-Balancing for Multi-Task Learning, arXiv 2308.12029, 2023"
    db_mtl_beta = HParam(0.9, Range(ge=0, lt=1), "EMA factor of the gradient norms (0: current norms only)")
    db_mtl_beta_sigma = HParam(0.0, Range(ge=0), "decay of the EMA factor: beta_k = beta / k^sigma at step k")
    # Buffers (registered in __init__; declared here for type checkers).
    norm_ema: Tensor
    steps: Tensor
    linear = True
    modes = ("param", "rep")
    default_mode = "param"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("norm_ema", torch.zeros(num_tasks))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def transform_losses(self, losses: Tensor) -> Tensor:
        return torch.log(losses + EPS)

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        self.steps += 1
        norms = torch.linalg.vector_norm(grads.detach(), dim=1, dtype=float_dtype(grads)).to(self.norm_ema)
        beta: float | Tensor = self.db_mtl_beta
        if self.db_mtl_beta_sigma:
            beta = beta / self.steps.to(norms.dtype) ** self.db_mtl_beta_sigma
        self.norm_ema.copy_(norms + beta * (self.norm_ema - norms))
        return GradResult(weights=(self.norm_ema.max() / (self.norm_ema + EPS)).to(float_dtype(grads)))
