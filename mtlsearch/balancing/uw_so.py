"""UW-SO: soft optimal uncertainty weighting (analytical, no learned parameters)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import HParam, LossBalancing, Range

#: Added to the losses before the inverse, as in the released code.
EPS = 1e-8


class UWSO(LossBalancing):
    """``total = sum_t w_t L_t`` with ``w = softmax((1 / L) / temperature)`` (``L`` detached).

    Uncertainty weighting's loss ``L_t / (2 s_t^2) + log s_t`` is minimised over ``s_t^2`` at
    ``s_t^2 = L_t``, i.e. weight ``1 / L_t``: UW-SO uses that optimum analytically, every step, and
    softens it with a softmax of temperature ``uw_so_temperature`` (weights sum to 1; a large
    temperature tends to ``1/T`` each, a small one puts all weight on the smallest loss).

    Reference: Kirchdorfer, Elich, Kutsche, Stuckenschmidt, Schott & Köhler, "Analytical
    Uncertainty-Based Loss Weighting in Multi-Task Learning", GCPR 2024 (arXiv 2408.07985); released
    code (LibMTL-style ``UW_SO``): ``softmax((1 / (losses.detach() + 1e-8)) / T)``.  No state.
    """

    name = "uw_so"
    reference = "Kirchdorfer et al., Analytical Uncertainty-Based Loss Weighting in Multi-Task Learning, GCPR 2024"
    uw_so_temperature = HParam(1.0, Range(gt=0), "softmax temperature of the inverse losses")

    def forward(self, losses: Tensor) -> Tensor:
        w = torch.softmax((1.0 / (losses.detach() + EPS)) / self.uw_so_temperature, dim=0)
        return (w * losses).sum()
