"""GeMTL: aggregate task losses with their generalized (power) mean.

``M_p(L) = ((1/T) sum_t L_t^p)^(1/p)``: p = 1 is the arithmetic mean (EW up to 1/T), p -> 0 the
geometric mean ``(prod_t L_t)^(1/T)``, p = -1 the harmonic mean, p -> +inf the max and p -> -inf the
min.  The implicit weight of task t is ``dM/dL_t = (1/T) (L_t / M)^(p-1)``: p < 1 favours tasks
with small losses, p > 1 tasks with large ones.

Computed in log space and float64, ``log M = (logsumexp(p log L) - log T) / p``, so any finite p
stays finite.  For ``|p| < GEOMETRIC_THRESHOLD`` the exact p -> 0 limit (the geometric mean) is
used instead; that switch moves ``M`` by a relative ``O(|p| var(log L))``, i.e. below 1e-6 for
losses within a factor 1e3 of each other.  (The released GeMTL code switches at |p| < 0.1.)
Losses must be positive: a non-positive one raises :class:`NonPositiveLossError`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import HParam, LossBalancing

GEOMETRIC_THRESHOLD = 1e-6


class NonPositiveLossError(ValueError):
    """GeMTL's power mean needs every task loss to be > 0."""


def power_mean(losses: Tensor, p: float) -> Tensor:
    """Differentiable generalized mean of a positive loss vector (any finite p)."""
    if not bool((losses > 0).all()):
        bad = [(i, float(v)) for i, v in enumerate(losses.detach().flatten().tolist()) if not v > 0]
        raise NonPositiveLossError(
            f"gemtl needs positive task losses (generalized mean with p={p}); "
            f"got non-positive or NaN losses at task index/value {bad}. "
            "Use a loss that is > 0 (e.g. add a small constant) or another method."
        )
    log_l = losses.double().log()
    if abs(p) < GEOMETRIC_THRESHOLD:
        log_m = log_l.mean()
    else:
        log_m = (torch.logsumexp(p * log_l, dim=0) - math.log(losses.numel())) / p
    return log_m.exp().to(losses.dtype)


class GeMTL(LossBalancing):
    """Generalized-mean loss aggregation with exponent ``p``."""

    name = "gemtl"
    reference = "GeMTL: generalized mean of task losses (p=1 arithmetic, p->0 geometric, p->inf max)"
    hyperparams = {
        "p": HParam(float, 1.0, "exponent of the generalized mean", allowed="any finite real number"),
    }

    def forward(self, losses: Tensor) -> Tensor:
        return power_mean(losses, self.p)
