"""A user's own multi-task benchmark, written against mtlsearch's benchmark API.

The wine recognition data that scikit-learn ships (178 wines, 13 chemical measurements; nothing is
downloaded), turned into three tasks on one shared input:

* ``cultivar``: which of 3 cultivars the wine comes from (classification, accuracy: higher is better);
* ``alcohol`` and ``color``: its alcohol content and colour intensity, standardised (regression, mean
  absolute error: lower is better), predicted from the other 11 measurements.

The model is any ``nn.Module`` returning ``{task: prediction}`` with a ``shared_parameters()`` method
(a shared trunk and one small layer per task); the training split is a ``torch.utils.data.Dataset``
(read through a DataLoader, ``num_workers`` worker processes), validation and test are in-memory tensors.

    python -m mtlsearch.launch --space examples/custom_mtl/space.yaml
"""

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mtlsearch.benchmarks import Benchmark, TaskSpec
from mtlsearch.metrics import AccuracyMeter, RegressionMeter

REGRESSED = {"alcohol": 0, "color": 9}  # columns of sklearn's wine data


class WineDataset(Dataset):
    """Items ``(features, {task: target})``: what a split's Dataset yields."""

    def __init__(self, x, targets):
        self.x, self.targets = x, targets

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {task: values[i] for task, values in self.targets.items()}


class WineNet(nn.Module):
    """A shared trunk and one output layer per task; ``shared_parameters()`` says which are shared."""

    def __init__(self, in_dim, hidden, outputs):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.ModuleDict({task: nn.Linear(hidden, n) for task, n in outputs.items()})

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def forward(self, x):
        z = self.trunk(x)
        return {task: layer(z) for task, layer in self.out.items()}


def regression_loss(pred, target):
    return nn.functional.mse_loss(pred.squeeze(-1), target)


class WineTasks(Benchmark):
    description = "sklearn's wine data: cultivar (3 classes), alcohol and colour intensity (regression)"
    options = {"hidden": 64, "num_workers": 0}  # set in a space's params or with --set

    def task_specs(self):
        return [
            TaskSpec("cultivar", nn.functional.cross_entropy, {"accuracy": "max"}, AccuracyMeter),
            TaskSpec("alcohol", regression_loss, {"mae": "min"}, lambda: RegressionMeter(("mae",))),
            TaskSpec("color", regression_loss, {"mae": "min"}, lambda: RegressionMeter(("mae",))),
        ]

    def load_splits(self, data_seed):
        from sklearn.datasets import load_wine

        data = load_wine()
        features = torch.tensor(data.data, dtype=torch.float32)
        features = (features - features.mean(0)) / features.std(0)
        keep = [c for c in range(features.shape[1]) if c not in REGRESSED.values()]
        x = features[:, keep]
        targets = {"cultivar": torch.tensor(data.target, dtype=torch.long)}
        targets.update({task: features[:, col] for task, col in REGRESSED.items()})
        order = torch.as_tensor(np.random.default_rng(data_seed).permutation(len(x)))
        parts = {"train": order[:106], "val": order[106:142], "test": order[142:]}
        splits = {name: (x[idx], {t: v[idx] for t, v in targets.items()}) for name, idx in parts.items()}
        splits["train"] = WineDataset(*splits["train"])  # a Dataset: batched by a DataLoader
        return splits

    def build_model(self, task_names):
        outputs = {"cultivar": 3, "alcohol": 1, "color": 1}
        return WineNet(11, self.opts["hidden"], {t: outputs[t] for t in task_names})
