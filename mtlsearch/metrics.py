"""Task metrics accumulated over a whole split, and the multi-task score Δm."""
from __future__ import annotations

from typing import Mapping, Protocol

import torch
from torch import Tensor


class Meter(Protocol):
    """Accumulates one task's metrics over a split; ``compute`` returns ``{metric: value}``."""

    def update(self, pred: Tensor, target: Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


class RegressionMeter:
    """Mean squared and mean absolute error over every target element of the split."""

    def __init__(self, metrics: tuple[str, ...] = ("mse", "mae")):
        self.metrics = metrics
        self.sq = 0.0
        self.abs = 0.0
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        diff = pred.detach().float().reshape(-1) - target.float().reshape(-1)
        self.sq += float(diff.square().sum())
        self.abs += float(diff.abs().sum())
        self.n += diff.numel()

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        values = {"mse": self.sq / n, "mae": self.abs / n}
        return {k: values[k] for k in self.metrics}


class AccuracyMeter:
    """Top-1 accuracy of class logits ``[N, C]`` against integer labels ``[N]``."""

    def __init__(self):
        self.correct = 0
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.correct += int((pred.detach().argmax(dim=1) == target).sum())
        self.n += target.numel()

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / max(self.n, 1)}


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    references: Mapping[str, Mapping[str, float]],
    lower_is_better: Mapping[str, Mapping[str, bool]],
) -> float:
    """Δm in percent, positive = better than the single-task references.

    ``Δm = 100/T Σ_t mean_{m in M_t} (-1)^{lower_is_better(m)} (M_m - M_ref) / M_ref`` over the tasks
    in ``results``; every task and metric must have a reference (a missing one raises ``KeyError``:
    a Δm is never computed against a made-up reference).
    """
    per_task = []
    for task, metrics in results.items():
        ref = references[task]
        terms = []
        for metric, value in metrics.items():
            base = ref[metric]
            sign = -1.0 if lower_is_better[task][metric] else 1.0
            terms.append(sign * (value - base) / base)
        per_task.append(sum(terms) / len(terms))
    return 100.0 * sum(per_task) / len(per_task)


def to_float_dict(values: Mapping[str, Tensor | float]) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in values.items()}
