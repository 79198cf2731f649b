"""Uncertainty weighting (UW): learned homoscedastic task uncertainties."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import LossBalancing


class UW(LossBalancing):
    """``total = sum_t exp(-s_t) L_t + s_t`` with learned log-variances ``s_t`` (init 0).

        ``s_t = log sigma_t^2`` is an ``nn.Parameter`` trained with the model's optimizer (same lr and
        weight decay).  For fixed ``L_t`` the objective is convex in ``s_t`` with its minimum where
        ``exp(-s_t) = 1 / L_t``: the effective weight ``exp(-s_t)`` tends to the inverse of the loss, so
        every weighted loss tends to 1 (a task with a small loss is up-weighted, a large one down).

        Reference: Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for
        Scene Geometry and Semantics", CVPR 2018.  The paper writes ``L / (2 sigma^2) + log sigma`` for
        regression and ``L / sigma^2 + log sigma`` for classification; we use the one form
        ``exp(-s) L + s`` for every task (twice the regression form, as most re-implementations do).
        LibMTL uses the halved form with ``s`` initialised at -0.5; here ``s_t = 0`` (all weights 1).
    TorchJD's ``scalarization.UW`` is the halved form: ours is exactly twice it (same weights up to the
    factor 2, same optimum ``s_t = log L_t``; asserted in ``tests/unit/test_peers.py``).
    """

    name = "uw"
    reference = "Kendall, Gal & Cipolla, Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics, CVPR 2018"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.log_vars = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, losses: Tensor) -> Tensor:
        s = self.log_vars.to(losses.dtype)
        return (torch.exp(-s) * losses + s).sum()
