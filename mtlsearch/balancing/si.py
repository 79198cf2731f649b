"""SI: scale-invariant loss, the sum of the log-losses."""

from __future__ import annotations

from torch import Tensor

from .base import LossBalancing


class SI(LossBalancing):
    """``total = sum_t log L_t``: effective weights ``1 / L_t``.

    Multiplying a task's loss by a constant adds a constant to ``total``, so the update does not
    depend on the losses' scales at all (not even its norm, unlike GLS, whose gradient is SI's times
    the geometric mean ``(prod_t L_t)^(1/T) / T``: the same direction).  Losses must be positive; a
    non-positive loss gives a non-finite total, which the trainer reports as such.

    Reference: the "scale-invariant" baseline of Navon et al., "Multi-Task Learning as a Bargaining
    Game", ICML 2022 (released code github.com/AvivNavon/nash-mtl, ``ScaleInvariantLinearScalarization``:
    ``sum(log(losses) * task_weights)`` with weights 1), also in LDC-MTL's and GO4Align's code.
    """

    name = "si"
    reference = "Scale-invariant baseline (sum of log-losses), as in Navon et al., ICML 2022"

    def forward(self, losses: Tensor) -> Tensor:
        return losses.log().sum()
