"""GradDrop: gradient sign dropout (Chen et al., "Just Pick a Sign: Optimizing Deep Multitask
Models with Gradient Sign Dropout", NeurIPS 2020).

Per coordinate k, the sign purity ``P_k = 1/2 (1 + sum_t g_tk / sum_t |g_tk|)`` is the probability
of keeping the positive sign: with ``U_k ~ Uniform(0, 1)``, keep the positive entries of column k
if ``P_k > U_k``, else the negative ones, and sum what is kept:
``out_k = sum_t g_tk (leak + (1 - leak) M_tk)``, ``M_tk = [P_k > U_k][g_tk > 0] + [P_k < U_k][g_tk < 0]``.
With ``graddrop_leak = 0`` (the paper's default) every output coordinate has the chosen sign (or
is 0); with leak 1 it is the plain sum.  U is drawn with ``torch.rand`` from torch's RNG on G's
device (checkpointed by the trainer).

Not linear (a coordinate-wise selection, not a weighting): returns a **direction**, so it cannot
feed AdaTask optimizers.  Modes: "rep" (default; the paper applies it at the shared
activations) and "param".  Deviation: the paper (and LibMTL) first sums each task's activation
gradient over the batch after multiplying by the sign of the activations, and draws one mask per
feature; the balancing interface receives the flattened ``[T, d]`` matrix without the batch
structure or the activations, so purity and mask are per coordinate of G (per example and
feature in rep mode, per parameter entry in param mode).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GradBalancing, GradResult, HParam, Range


def graddrop_direction(grads: Tensor, leak: float = 0.0, uniform: Tensor | None = None) -> Tensor:
    """GradDrop's combined gradient ``[d]`` from ``[T, d]`` (``uniform``: the U draws, for tests)."""
    g = grads if grads.dtype in (torch.float32, torch.float64) else grads.float()
    purity = 0.5 * (1.0 + g.sum(0) / g.abs().sum(0).clamp_min(torch.finfo(g.dtype).tiny))
    u = torch.rand(purity.shape, device=g.device, dtype=g.dtype) if uniform is None else uniform
    positive = purity > u
    negative = purity < u
    keep = (positive & (g > 0)) | (negative & (g < 0))
    if leak == 0.0:
        out = torch.where(keep, g, torch.zeros((), dtype=g.dtype, device=g.device)).sum(0)
    else:
        out = (g * (leak + (1.0 - leak) * keep.to(g.dtype))).sum(0)
    return out.to(grads.dtype)


class GradDrop(GradBalancing):
    """Keep, per coordinate, only the gradients of one randomly chosen sign (direction).

    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "graddrop"
    reference = "Chen et al., Just Pick a Sign: Gradient Sign Dropout, NeurIPS 2020"
    graddrop_leak = HParam(0.0, Range(ge=0.0, le=1.0), "fraction of the dropped gradients that leaks through")
    linear = False
    modes = ("rep", "param")
    default_mode = "rep"

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        return GradResult(direction=graddrop_direction(grads, self.graddrop_leak))
