"""Task metrics accumulated over a whole split, and the multi-task score Δm."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mtlsearch.benchmarks.base import TaskSpec


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

    def __init__(self) -> None:
        self.correct = 0
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.correct += int((pred.detach().argmax(dim=1) == target).sum())
        self.n += target.numel()

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / max(self.n, 1)}


class MeanMeter:
    """Metrics given as functions ``fn(pred, target) -> mean over the batch``, averaged over the split
    (weighted by batch size): ``lambda: MeanMeter({"f1": my_f1})`` for a user's task."""

    def __init__(self, functions: Mapping[str, Callable[[Tensor, Tensor], Tensor | float]]):
        self.functions = dict(functions)
        self.sums = {k: 0.0 for k in self.functions}
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        n = int(target.shape[0]) if target.dim() else 1
        for key, fn in self.functions.items():
            value = fn(pred.detach(), target)
            self.sums[key] += float(value) * n
        self.n += n

    def compute(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


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


# --------------------------------------------------------------------------- dense prediction
# Conventions of MTAN (Liu et al., CVPR 2019; github.com/lorenmt/mtan) and of the works that report
# against its single-task references (CAGrad, Nash-MTL, LibMTL), except that every meter accumulates
# over the whole split (those codes average per-batch values for depth, and some for mIoU).


class SegmentationMeter:
    """mIoU and pixel accuracy from one confusion matrix over the whole split.

    ``pred``: logits ``[N, C, H, W]``; ``target``: labels ``[N, H, W]``, ``-1`` = ignored.
    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; ``miou`` is the mean over classes that occur in the
    targets or predictions of the split (a class absent from both has no IoU and is skipped, where
    the reference codes would return NaN); ``pixacc = Σ_c TP_c / #labelled pixels``.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion: Tensor | None = None  # [true, predicted]

    def update(self, pred: Tensor, target: Tensor) -> None:
        n = self.num_classes
        labels = pred.detach().argmax(dim=1).reshape(-1)
        target = target.reshape(-1).long()
        keep = (target >= 0) & (target < n)
        counts = torch.bincount(target[keep] * n + labels[keep], minlength=n * n).reshape(n, n)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> dict[str, float]:
        if self.confusion is None:
            return {"miou": float("nan"), "pixacc": float("nan")}
        h = self.confusion.double()
        tp = h.diag()
        union = h.sum(0) + h.sum(1) - tp
        present = union > 0
        miou = (tp[present] / union[present]).mean() if present.any() else torch.tensor(float("nan"))
        return {"miou": float(miou), "pixacc": float(tp.sum() / h.sum().clamp(min=1))}


class DepthMeter:
    """Absolute and relative depth error over the valid pixels (target ≠ 0) of the whole split.

    ``abs_err = Σ|d̂ − d| / n``, ``rel_err = Σ(|d̂ − d| / d) / n`` over valid pixels; ``rel_err`` is a
    plain ratio (not percent), as in MTAN's ``depth_error`` (Cityscapes' published 27.77 is the same
    ratio, large because its targets are inverse depths close to 0).
    """

    def __init__(self) -> None:
        self.abs = 0.0
        self.rel = 0.0
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = pred.detach().double(), target.double()
        valid = target != 0
        err = (pred - target).abs()[valid]
        self.abs += float(err.sum())
        self.rel += float((err / target[valid]).sum())
        self.n += int(valid.sum())

    def compute(self) -> dict[str, float]:
        n = self.n if self.n else float("nan")
        return {"abs_err": self.abs / n, "rel_err": self.rel / n}


class NormalMeter:
    """Angular error of surface normals (degrees) over valid pixels (target ≠ 0) of the whole split.

    ``pred``, ``target``: ``[N, 3, H, W]``; predictions are L2-normalised here, targets are unit
    normals.  ``e = acos(clamp(<n̂, n>, −1, 1))`` in degrees; ``mean``, ``median`` and the shares
    ``within_11_25``, ``within_22_5``, ``within_30`` (e < 11.25°, 22.5°, 30°; fractions in [0, 1]).
    The median comes from a histogram of 0.01° bins (linear within the bin), so it is exact to
    0.01° without keeping every pixel's error (NYUv2's test split has 72 M pixels).
    """

    THRESHOLDS = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}
    BIN = 0.01  # degrees
    NBINS = 18000  # 180° / BIN

    def __init__(self) -> None:
        self.sum = 0.0
        self.n = 0
        self.within = {k: 0 for k in self.THRESHOLDS}
        self.hist: Tensor | None = None

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = torch.nn.functional.normalize(pred.detach().double(), dim=1)
        target = target.double()
        valid = (target != 0).any(dim=1)
        cos = (pred * target).sum(dim=1)[valid].clamp(-1.0, 1.0)
        err = torch.rad2deg(torch.acos(cos))
        self.sum += float(err.sum())
        self.n += err.numel()
        for name, threshold in self.THRESHOLDS.items():
            self.within[name] += int((err < threshold).sum())
        bins = (err / self.BIN).long().clamp(max=self.NBINS - 1)
        counts = torch.bincount(bins, minlength=self.NBINS)
        self.hist = counts if self.hist is None else self.hist + counts

    def _median(self, hist: Tensor) -> float:
        # The 0.5 quantile with linear interpolation inside the bin holding it.
        cum = hist.double().cumsum(0)
        half = 0.5 * self.n
        k = int(torch.searchsorted(cum, torch.tensor([half], dtype=cum.dtype, device=cum.device)))
        below = float(cum[k - 1]) if k > 0 else 0.0
        in_bin = float(hist[k])
        return (k + (half - below) / in_bin) * self.BIN

    def compute(self) -> dict[str, float]:
        if self.n == 0 or self.hist is None:  # the histogram exists once update() has run
            return {"mean": float("nan"), "median": float("nan"), **{k: float("nan") for k in self.THRESHOLDS}}
        out = {"mean": self.sum / self.n, "median": self._median(self.hist)}
        out.update({k: v / self.n for k, v in self.within.items()})
        return out


class BatchMeanMeter:
    """The mean over ``update`` calls (evaluation batches) of another meter's per-batch values: how
    the released Nash-MTL/FAMO code averages depth and normal metrics over its test batches."""

    def __init__(self, new_meter: Callable[[], Meter]):
        self.new_meter = new_meter
        self.sums: dict[str, float] = {}
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        meter = self.new_meter()
        meter.update(pred, target)
        for name, value in meter.compute().items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.n += 1

    def compute(self) -> dict[str, float]:
        return {name: total / self.n for name, total in self.sums.items()}


class BinaryAccuracyMeter:
    """Accuracy of one binary attribute: logit > 0 predicts 1; ``target`` in {0, 1}."""

    def __init__(self) -> None:
        self.correct = 0
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        guess = pred.detach().reshape(-1) > 0
        self.correct += int((guess == (target.reshape(-1) > 0.5)).sum())
        self.n += target.numel()

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / max(self.n, 1)}


def reported_metrics(specs: Sequence[TaskSpec], tasks: Sequence[str] | None = None) -> set[str]:
    """The metric names a trial of these tasks (default: all of ``specs``) reports: ``<split>/<task>/<metric>``
    and ``<split>/delta_m`` for the validation and test splits, ``train/<task>/loss`` and ``weights/<task>``."""
    out = {f"{split}/delta_m" for split in ("val", "test")}
    for s in specs:
        if tasks is not None and s.name not in tasks:
            continue
        out |= {f"{split}/{s.name}/{m}" for split in ("val", "test") for m in s.metrics}
        out |= {f"train/{s.name}/loss", f"weights/{s.name}"}
    return out
