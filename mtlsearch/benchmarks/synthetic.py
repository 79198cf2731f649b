"""``synthetic``: regression tasks whose losses differ in scale by orders of magnitude.

The classic task-dominance setting (GradNorm's toy problem): ``y_t = sigma_t * tanh((B + E_t) x)``
with a common matrix ``B`` and a small task-specific perturbation ``E_t``, so the tasks are related
but not identical, and the scales ``sigma_t`` (1, 10, 100 by default) make the squared-error losses
differ by a factor of 10^4.  Generated from ``data_seed``; nothing is read from disk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtlsearch.metrics import RegressionMeter

from .base import Benchmark, HPSModel, TaskSpec, TensorSplit

SIZES = {"train": 2000, "val": 500, "test": 500}
IN_DIM, OUT_DIM, HIDDEN = 32, 4, 64


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    return nn.functional.mse_loss(pred, target)


class Synthetic(Benchmark):
    name = "synthetic"
    description = "regression tasks with loss scales 1, 10^2, 10^4 (task dominance)"
    options = {"scales": (1.0, 10.0, 100.0), "noise": 0.05}

    def task_specs(self) -> list[TaskSpec]:
        return [TaskSpec(f"scale_{s:g}", _mse, {"mse": True}, lambda: RegressionMeter(("mse",))) for s in self.opts["scales"]]

    def load_splits(self, data_seed: int) -> dict[str, TensorSplit]:
        g = torch.Generator().manual_seed(data_seed)
        scales = self.opts["scales"]
        base = torch.randn(OUT_DIM, IN_DIM, generator=g) / IN_DIM**0.5 * 2.0
        mats = [base + 0.5 * torch.randn(OUT_DIM, IN_DIM, generator=g) / IN_DIM**0.5 for _ in scales]
        splits = {}
        for split, n in SIZES.items():
            x = torch.randn(n, IN_DIM, generator=g)
            targets = {}
            for spec, scale, mat in zip(self.task_specs(), scales, mats):
                clean = torch.tanh(x @ mat.T)
                targets[spec.name] = scale * (clean + self.opts["noise"] * torch.randn(n, OUT_DIM, generator=g))
            splits[split] = TensorSplit(x, targets)
        return splits

    def build_model(self, task_names: list[str]) -> HPSModel:
        encoder = nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        heads = {t: nn.Sequential(nn.Linear(HIDDEN, 32), nn.ReLU(), nn.Linear(32, OUT_DIM)) for t in task_names}
        return HPSModel(encoder, heads)
