"""Static: fixed task weights, one per task, tuned like any other hyperparameter."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import Check, HParam, LossBalancing


def _positive_numbers(value: Any) -> bool:
    return (
        not value
        or all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in value)
        and sum(value) > 0
    )


WEIGHTS = Check(_positive_numbers, "[] (equal weights) or a list of finite numbers >= 0 with a positive sum, one per task")


class Static(LossBalancing):
    """``total = sum_t w_t L_t`` with constant weights ``w = T * static_weights / sum(static_weights)``.

    The weights are normalised to sum to ``T``, so equal weights are exactly ``ew`` and the
    weights' overall scale never acts as a hidden learning rate: only their ratios are searched.
    ``static_weights`` is a list of one non-negative number per task of the trial, in the
    benchmark's task order (the trial's ``tasks`` order when given); empty (the default) means
    equal weights.  In a search space, ``static_weights: {simplex: tasks}`` samples the weights
    uniformly on the simplex, one per task of the trial, however many tasks there are (CelebA: 40).

    The control that "In defense of the unitary scalarization" (Kurin et al., NeurIPS 2022), "Do
    current multi-task optimization methods in deep learning even help?" (Xin et al., NeurIPS 2022)
    and "Scalarization for multi-task and multi-domain learning at scale" (Royer et al., NeurIPS
    2023) show to match most specialised methods once tuned.
    """

    name = "static"
    reference = "Tuned static weights (Xin et al. 2022; Kurin et al. 2022; Royer et al. 2023)"
    static_weights = HParam[list[float]]([], WEIGHTS, "one non-negative weight per task (empty: equal weights)")
    # Buffers (registered in __init__; declared here for type checkers).
    weights: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        raw = list(self.static_weights) or [1.0] * num_tasks
        if len(raw) != num_tasks:
            from mtlsearch.errors import ConfigError

            raise ConfigError(
                f"expected {num_tasks} weights (one per task of the trial), got {len(raw)}; in a search space use {{simplex: tasks}}",
                field="static_weights",
            )
        w = torch.tensor(raw, dtype=torch.float64)
        self.register_buffer("weights", num_tasks * w / w.sum(), persistent=False)  # float64: cast per step

    def forward(self, losses: Tensor) -> Tensor:
        return (self.weights.to(losses.dtype) * losses).sum()
