"""Geometric loss strategy (GLS): the geometric mean of the task losses."""

from __future__ import annotations

from torch import Tensor

from .gemtl import PositiveLossMean


class GLS(PositiveLossMean):
    """``total = (prod_t L_t)^(1/T)``, computed as ``exp(mean_t log L_t)`` in float64.

    Implicit weights ``d total / d L_t = total / (T L_t)``: every task's gradient is scaled by the
    inverse of its own loss, so rescaling a task's loss ``L_t -> c_t L_t`` multiplies the total
    gradient by the constant ``(prod_t c_t)^(1/T)`` and leaves its direction unchanged.  Losses must
    be positive (:class:`~mtlsearch.balancing.NonPositiveLossError` otherwise, checked as ``gemtl`` does).  This is ``gemtl``
    with ``p = 0``.

    Reference: Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
    Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019.  No
    official code; LibMTL computes ``prod(L) ** (1/T)`` directly, which under/overflows for many
    tasks or extreme losses, where the log-space form does not.
    """

    name = "gls"
    reference = (
        "Chennupati et al., MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy "
        "for Multi-Task Learning, CVPR Workshops 2019"
    )

    def forward(self, losses: Tensor) -> Tensor:
        return self.aggregate(losses, 0.0)
