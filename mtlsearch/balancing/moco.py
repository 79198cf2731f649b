"""MoCo: multi-objective gradient correction with tracked gradients (Fernando et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._lazy import LazyStateMixin
from .base import GradBalancing, GradResult, HParam, Range

#: Added to the gradient norms before dividing, as in LibMTL.
EPS = 1e-8


class MoCo(LazyStateMixin, GradBalancing):
    """Track each task's gradient across steps and step along the tracked gradients' weighted sum.

    At step k, with ``g_t`` this step's gradient of task t rescaled to norm ``L_t``
    (``g_t / (||g_t|| + 1e-8) * L_t``):

        y_t    <- y_t - beta_k (y_t - g_t)                          beta_k  = moco_beta  / k^moco_beta_sigma
        lambda <- softmax(lambda - gamma_k (Y Y^T + rho I) lambda)   gamma_k = moco_gamma / k^moco_gamma_sigma
        update  = Y^T lambda

    ``Y`` (``[T, d]``, starts at 0), ``lambda`` (starts at ``1/T``) and ``k`` are buffers
    (checkpointed).  The update is a combination of the *tracked* gradients, not of this step's, so
    the method returns a direction (not linear: no AdaTask).  Mode: "param" only (the tracked rows
    must be the same coordinates at every step; in "rep" mode they are different samples).

    Reference: Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach", ICLR 2023; implementation LibMTL
    ``weighting/MoCo.py`` (from the authors' code), whose defaults are used: beta 0.5, beta_sigma
    0.5, gamma 0.1, gamma_sigma 0.5, rho 0.  As there, lambda is updated by a softmax of the
    gradient step (not a projection onto the simplex, the paper's), and heads get their own task's
    gradient.
    Memory: the ``[T, d]`` state is one more copy of the per-task gradients, in every checkpoint too.
    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "moco"
    reference = "Fernando et al., Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent Approach, ICLR 2023"
    moco_beta = HParam(0.5, Range(gt=0, le=1), "step size of the gradient tracking")
    moco_beta_sigma = HParam(0.5, Range(ge=0), "decay: beta_k = beta / k^sigma")
    moco_gamma = HParam(0.1, Range(gt=0), "step size of the weights lambda")
    moco_gamma_sigma = HParam(0.5, Range(ge=0), "decay: gamma_k = gamma / k^sigma")
    moco_rho = HParam(0.0, Range(ge=0), "L2 regularisation of the lambda update")
    # Buffers (registered in __init__; declared here for type checkers).
    tracked: Tensor
    lambd: Tensor
    steps: Tensor
    linear = False
    modes = ("param",)
    default_mode = "param"
    lazy_buffers = ("tracked",)

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self._register_lazy()
        self.register_buffer("lambd", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        g = grads.detach()
        g = g if g.dtype in (torch.float32, torch.float64) else g.float()
        y = self._materialise("tracked", g, tuple(g.shape))
        self.steps += 1
        k = float(self.steps)
        beta = self.moco_beta / k**self.moco_beta_sigma
        gamma = self.moco_gamma / k**self.moco_gamma_sigma
        norms = torch.linalg.vector_norm(g, dim=1, keepdim=True)
        scaled = g / (norms + EPS) * losses.detach().to(g.dtype).view(-1, 1)
        y.sub_(beta * (y - scaled))
        lam = self.lambd.to(g.dtype)
        kyy = y @ y.T + self.moco_rho * torch.eye(self.num_tasks, dtype=g.dtype, device=g.device)
        lam = torch.softmax(lam - gamma * (kyy @ lam), dim=0)
        self.lambd.copy_(lam)
        return GradResult(direction=y.T @ lam)
