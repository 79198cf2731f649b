"""Random loss weighting (RLW): fresh random task weights at every step."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LossBalancing


class RLW(LossBalancing):
    """``total = sum_t w_t L_t`` with ``w = softmax(eps)``, ``eps ~ N(0, I_T)`` drawn every step.

    The weights are positive and **sum to 1** (the paper's and LibMTL's normalisation; equal
    weighting would be ``w_t = 1/T`` on this scale, i.e. ``ew`` divided by T: the same direction,
    a step T times smaller under SGD, nearly the same under Adam).  ``eps`` is drawn from torch's
    global generator of the losses' device, so the sequence of weights is fixed by
    ``torch.manual_seed`` for a given device (the trainer seeds it with the trial seed and
    checkpoints the generators' states); CPU and CUDA draw different sequences.

    Reference: Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning", TMLR 2022 (arXiv 2111.10603, "A Closer Look at Loss Weighting in
    Multi-Task Learning").  The normal distribution is LibMTL's default; its other sampling
    distributions of LibMTL (uniform, Dirichlet, Bernoulli) are not offered.
    """

    name = "rlw"
    reference = "Lin et al., Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning, TMLR 2022"

    def sample_weights(self, device: torch.device | str = "cpu") -> Tensor:
        """One draw of the weights ``[T]`` (advances torch's global generator of ``device``)."""
        return torch.softmax(torch.randn(self.num_tasks, device=device), dim=0)

    def forward(self, losses: Tensor) -> Tensor:
        return (self.sample_weights(losses.device).to(losses.dtype) * losses).sum()
