"""Equal weighting: the plain sum of task losses (LibMTL's EW)."""

from __future__ import annotations

from torch import Tensor

from .base import LossBalancing


class EW(LossBalancing):
    """``total = sum_t L_t``; every task weight is 1."""

    name = "ew"
    reference = "Equal weighting (the usual multi-task baseline)"

    def forward(self, losses: Tensor) -> Tensor:
        return losses.sum()
