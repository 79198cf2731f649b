"""LDC-MTL: loss discrepancy control with learned (router) weights, first-order bilevel penalty."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import HParam, LossBalancing, Range


class LDCMTL(LossBalancing):
    """Weighted normalised losses plus a penalty on the discrepancy between consecutive weighted losses.

    With ``Lt_t = L_t / r_t`` the losses pre-normalised by the first step's ratios
    ``r = L(0) / min_j L_j(0)`` (every task starts at the smallest initial loss) and router weights
    ``s = sigmoid(W)`` (learnable ``W``, init 1):

        total = sum_t s_t Lt_t / sum_t s_t  +  lambda * sum_{t<T} |s_t Lt_t - s_{t+1} Lt_{t+1}|

    (``sum_t s_t`` treated as a constant).  One backward pass trains the model (the lower level of
    the bilevel problem: the weighted loss) and ``W`` (the upper level: the discrepancy, through the
    first-order penalty), at the cost of ``ew``.  ``W`` is an ``nn.Parameter`` trained by the trial's
    optimizer; ``r`` is a buffer set at the first step (checkpointed).

    Reference: Xiao et al., "LDC-MTL: Balancing Multi-Task Learning through Scalable Loss
    Discrepancy Control", arXiv 2502.08585 (2025); released code github.com/OptMN-Lab/LDC-MTL
    (``experiments/*/trainer.py``, where the method lives).  The released experiments differ from
    each other; this follows the CelebA one for the router (a learnable vector through a sigmoid,
    ``W`` init 1, the weight sum detached in the normaliser) and the NYUv2 one for the loss
    pre-normalisation (``losses / ratios``).  Deviations: the NYUv2/Cityscapes router is a linear
    layer with softmax on pooled decoder features (clamped to [0.2, 0.8]); a balancing method here
    sees only the losses, so the router is input-independent.  The released code trains the router
    with its own learning rate (``--method-params-lr``); here it shares the trial's optimizer and
    learning rate, like UW's and IMTL-L's parameters.  ``ldc_mtl_lambda`` defaults to the NYUv2
    script's 0.05 (CelebA: 0.01).

    Step 0 (as the released formula gives in exact arithmetic): ``r_t = L_t(0) / m`` with
    ``m = min_j L_j(0)``, so every normalised loss equals ``m`` and, with ``W`` all equal at
    initialisation, every ``s_t Lt_t`` is the same number: each |difference| of the penalty is exactly
    0, where the derivative of ``|x|`` is 0 (``sign(0)``, PyTorch's convention and the released
    code's).  The step-0 weights are thus ``d total / d Lt_t = s_t / sum_j s_j = 1/T`` on the normalised
    losses, i.e. ``d total / d L_t = m / (T L_t)`` on the raw ones, whatever the dtype.  Computed
    naively, the quotients ``L_t / r_t`` differ from ``m`` in their last bits and rounding picks the
    penalty's sign (e.g. losses [0.7, 0.3, 1.9], lambda 0.5: the middle task got -0.398 instead of
    1/3 with float32 ratios and float64 losses), so step 0 uses ``m`` itself for the values (the
    gradient keeps ``1 / r_t``).  Ratios are kept in the losses' dtype.
    """

    name = "ldc_mtl"
    reference = "Xiao et al., LDC-MTL: Balancing Multi-Task Learning through Scalable Loss Discrepancy Control, arXiv 2502.08585"
    ldc_mtl_lambda = HParam(0.05, Range(ge=0), "weight of the loss-discrepancy penalty")
    # Buffers (registered in __init__; declared here for type checkers).
    ratios: Tensor
    has_ratios: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.router = nn.Parameter(torch.ones(num_tasks))
        self.register_buffer("ratios", torch.ones(num_tasks))
        self.register_buffer("has_ratios", torch.zeros((), dtype=torch.bool))

    def forward(self, losses: Tensor) -> Tensor:
        if self.ratios.dtype != losses.dtype:  # the losses' dtype throughout (a float64 caller keeps float64 ratios)
            self.ratios = self.ratios.to(losses.dtype)
        first_step = ~self.has_ratios
        first = losses.detach()
        # Set on the first step only (torch.where: no host sync on a GPU).
        self.ratios.copy_(torch.where(self.has_ratios, self.ratios, first / first.min()))
        self.has_ratios.fill_(True)
        s = torch.sigmoid(self.router).to(losses.dtype)
        normed = losses / self.ratios
        # At the first step ``L_t / r_t = min_j L_j`` exactly (r_t = L_t / min_j L_j); in floating point the
        # quotients differ in their last bits, and every |difference| of the penalty sits on its kink, so
        # rounding would pick the sign of the penalty's gradient.  Use the exact value, keeping the
        # gradient 1 / r_t: the differences are then exactly 0 and |x|'s derivative at 0 is 0 (PyTorch's
        # convention, that of the released code), as in exact arithmetic.
        exact = first.min() + (normed - normed.detach())
        normed = torch.where(first_step, exact, normed)
        weighted = s * normed
        total = weighted.sum() / s.sum().detach()
        if self.num_tasks > 1:
            total = total + self.ldc_mtl_lambda * (weighted[:-1] - weighted[1:]).abs().sum()
        return total
