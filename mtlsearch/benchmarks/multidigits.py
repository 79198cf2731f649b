"""``multidigits``: two-digit images composed from scikit-learn's shipped 8x8 digits.

Each example is two source digits side by side (an 8x16 image).  Tasks: ``left`` and ``right``
(10-class classification of each digit, cross-entropy, accuracy) and ``number`` (regression of the
sum of the two digits, 0..18, squared error, mean absolute error), so the losses differ in kind and
in scale (cross-entropy about 2.3, squared error about 100 at the start): under equal weighting the
regression dominates the shared encoder.

The 1,797 source images are split into disjoint pools (60/20/20) before composing, so no source
image appears in both the training and an evaluation split.  Deterministic for ``data_seed``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from mtlsearch.metrics import AccuracyMeter, RegressionMeter

from .base import Benchmark, HPSModel, TaskSpec, TensorSplit

SIZES = {"train": 4000, "val": 1000, "test": 1000}
POOLS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _ce(pred: Tensor, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(pred, target)


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    return nn.functional.mse_loss(pred.squeeze(-1), target)


class MultiDigits(Benchmark):
    name = "multidigits"
    description = "two-digit images from sklearn digits: classify each digit, regress the number"

    def task_specs(self) -> list[TaskSpec]:
        return [
            TaskSpec("left", _ce, {"accuracy": False}, AccuracyMeter),
            TaskSpec("right", _ce, {"accuracy": False}, AccuracyMeter),
            TaskSpec("number", _mse, {"mae": True}, lambda: RegressionMeter(("mae",))),
        ]

    def load_splits(self, data_seed: int) -> dict[str, TensorSplit]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # [1797, 8, 8]
        labels = torch.tensor(digits.target, dtype=torch.long)
        rng = np.random.default_rng(data_seed)
        order = rng.permutation(len(labels))
        bounds = np.cumsum([0] + [int(round(f * len(order))) for f in POOLS.values()])
        bounds[-1] = len(order)
        splits = {}
        for k, split in enumerate(POOLS):
            pool = order[bounds[k] : bounds[k + 1]]
            n = SIZES[split]
            left_idx = torch.as_tensor(rng.choice(pool, size=n))
            right_idx = torch.as_tensor(rng.choice(pool, size=n))
            x = torch.cat([images[left_idx], images[right_idx]], dim=2).unsqueeze(1)  # [n, 1, 8, 16]
            left, right = labels[left_idx], labels[right_idx]
            splits[split] = TensorSplit(x, {"left": left, "right": right, "number": (left + right).float()})
        return splits

    def build_model(self, task_names: list[str]) -> HPSModel:
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        out = {"left": 10, "right": 10, "number": 1}
        heads = {t: nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, out[t])) for t in task_names}
        return HPSModel(encoder, heads)
