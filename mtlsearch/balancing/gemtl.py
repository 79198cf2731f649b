"""GeMTL: aggregate task losses with their generalized (power) mean.

``M_p(L) = ((1/T) sum_t L_t^p)^(1/p)``: p = 1 is the arithmetic mean (EW up to 1/T), p -> 0 the
geometric mean ``(prod_t L_t)^(1/T)``, p = -1 the harmonic mean, p -> +inf the max and p -> -inf the
min.  The implicit weight of task t is ``dM/dL_t = (1/T) (L_t / M)^(p-1)``: p < 1 favours tasks
with small losses, p > 1 tasks with large ones.

Computed in log space and float64, ``log M = (logsumexp(p log L) - log T) / p``, so any finite p
stays finite.  For ``|p| < GEOMETRIC_THRESHOLD`` the exact p -> 0 limit (the geometric mean) is
used instead; that switch moves ``M`` by a relative ``O(|p| var(log L))``, i.e. below 1e-6 for
losses within a factor 1e3 of each other.  (The released GeMTL code switches at |p| < 0.1.)
Losses must be positive: a non-positive one raises :class:`NonPositiveLossError` (at once on the
CPU; at the end of the epoch on a GPU, where a per-step check would be a host sync).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import HParam, LossBalancing, Range

GEOMETRIC_THRESHOLD = 1e-6


class NonPositiveLossError(ValueError):
    """GeMTL's power mean needs every task loss to be > 0."""


def _non_positive_error(values: list[float], p: float) -> NonPositiveLossError:
    bad = [(i, v) for i, v in enumerate(values) if not v > 0]
    return NonPositiveLossError(
        f"gemtl needs positive task losses (generalized mean with p={p}); "
        f"got non-positive or NaN losses at task index/value {bad}. "
        "Use a loss that is > 0 (e.g. add a small constant) or another method."
    )


def power_mean(losses: Tensor, p: float, *, check: bool = True) -> Tensor:
    """Differentiable generalized mean of a positive loss vector (any finite p).

    ``check=False`` skips the positivity check (a host sync on a GPU); the caller then checks later,
    as :class:`PositiveLossMean` does once per epoch.
    """
    if check and not bool((losses > 0).all()):
        raise _non_positive_error(losses.detach().flatten().tolist(), p)
    log_l = losses.double().log()
    if abs(p) < GEOMETRIC_THRESHOLD:
        log_m = log_l.mean()
    else:
        log_m = (torch.logsumexp(p * log_l, dim=0) - math.log(losses.numel())) / p
    return log_m.exp().to(losses.dtype)


class PositiveLossMean(LossBalancing):
    """A power mean of the losses, with the positivity check kept off the GPU's critical path.

    On the CPU every step is checked (free).  On another device, reading ``losses > 0`` back would
    stall the GPU every step, so the lowest loss of each task is tracked on the device and checked
    at the end of the epoch: the trial then fails with the same :class:`NonPositiveLossError`
    (raised before the trainer's non-finite-loss check), naming the task and its lowest loss.
    """

    #: None: check every step on the CPU, once per epoch elsewhere (True / False force it).
    defer_check: bool | None = None
    #: With a deferred check: the lowest loss of each task this epoch, and the exponent it was seen with.
    _lowest: Tensor | None
    _lowest_p: float

    def aggregate(self, losses: Tensor, p: float) -> Tensor:
        defer = self.defer_check if self.defer_check is not None else losses.device.type != "cpu"
        if defer:
            low = losses.detach()
            prev = getattr(self, "_lowest", None)
            self._lowest = low.clone() if prev is None else torch.minimum(prev, low)  # NaN propagates
            self._lowest_p = p
        return power_mean(losses, p, check=not defer)

    def on_epoch_end(self, epoch: int, train_losses: Tensor) -> None:
        low, self._lowest = getattr(self, "_lowest", None), None
        if low is not None and not bool((low > 0).all()):
            raise _non_positive_error(low.tolist(), self._lowest_p)


class GeMTL(PositiveLossMean):
    """Generalized-mean loss aggregation with exponent ``p``."""

    name = "gemtl"
    reference = "GeMTL: generalized mean of task losses (p=1 arithmetic, p->0 geometric, p->inf max)"
    p = HParam(1.0, Range(), "exponent of the generalized mean", buckets=(0, 1))

    def forward(self, losses: Tensor) -> Tensor:
        return self.aggregate(losses, self.p)
