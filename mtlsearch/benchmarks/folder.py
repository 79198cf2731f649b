"""What the benchmarks that read a user-supplied folder share: the folder, its check, disk-backed splits.

**The folder.** ``data_root`` of the trial config (``--data-root`` of the launcher), else the
environment variable ``MTLSEARCH_DATA_ROOT``; it names the dataset's own folder (e.g. the folder
holding ``train/`` and ``val/`` for ``nyuv2``).  Nothing is ever downloaded.  A missing or malformed
folder raises one :class:`~mtlsearch.errors.ConfigError` when the benchmark is constructed, naming
the first file or folder that is wrong and the expected layout; the check is cheap (it lists files
and reads the headers and a few arrays or images).

**Disk-backed splits.** :class:`LoaderSplit` (one input per example) and :class:`MultiInputSplit`
(one dataset per task) read through a ``torch.utils.data.DataLoader`` (``num_workers`` option) but
offer the interface of :class:`~mtlsearch.benchmarks.base.TensorSplit`: ``len(split)`` and
``split.batches(batch_size, shuffle, generator)`` yielding ``(inputs, {task: target})`` on the CPU
(the trainer moves each batch to its device).  The order of the examples comes from ``generator``
alone, so an epoch is the same whatever ``num_workers`` is; the loaders never draw from the global
torch RNG (their worker seeds come from a private generator), so reading data does not shift the
random state of training (dropout, random weightings).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Sized, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mtlsearch.balancing.base import HParam
from mtlsearch.errors import ConfigError

ENV_DATA_ROOT = "MTLSEARCH_DATA_ROOT"


def resolve_root(benchmark: str, data_root: str | None, layout: str) -> Path:
    """The dataset folder: ``data_root``, else ``$MTLSEARCH_DATA_ROOT``; must be a directory."""
    root = data_root or os.environ.get(ENV_DATA_ROOT)
    if not root:
        raise ConfigError(
            f"{benchmark}: no data folder; set data_root (launcher: --data-root) or the environment "
            f"variable {ENV_DATA_ROOT}; expected {layout}",
            field="data_root",
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{benchmark}: {path} is not a directory; expected {layout}", field="data_root")
    return path


def layout_error(benchmark: str, what: str, layout: str) -> ConfigError:
    return ConfigError(f"{benchmark}: {what}; expected {layout}", field="data_root")


# ----------------------------------------------------------------------------- options
def fraction_option(default: float, what: str) -> HParam:
    return HParam(float, default, f"fraction of {what}", lambda v: 0.0 < v < 1.0, "a number in (0, 1)")


NUM_WORKERS = HParam(int, 0, "DataLoader worker processes (0: read in the training process)", lambda v: v >= 0, "an integer >= 0")
PRETRAINED = HParam(
    str,
    None,
    "path of a local torchvision-format state_dict for the encoder's backbone (never downloaded)",
    lambda v: bool(v),
    "a file path",
)


def carve(n: int, fraction: float, seed: int, benchmark: str, what: str) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (kept, carved) with ``round(fraction * n)`` carved (>= 1)."""
    n_carved = max(1, int(round(fraction * n)))
    if n - n_carved < 1:
        raise ConfigError(f"{benchmark}: {what} has {n} example(s), too few to carve out a fraction {fraction}", field="data_root")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_carved:].tolist()), sorted(order[:n_carved].tolist())


# ----------------------------------------------------------------------------- splits
class _BatchList:
    """A batch sampler whose batches are set before each pass (one DataLoader serves every pass)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []  # dataset keys: indices, or (task, index) for a multi-input split

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader(dataset: Dataset, sampler: _BatchList, num_workers: int, collate_fn: Callable | None = None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        # Workers live for one pass: a split per task (multi-input) times three splits of idle
        # persistent workers would be many processes; starting them (fork) costs little per epoch.
        persistent_workers=False,
        # Worker seeds from a private generator: iterating never touches the global RNG.
        generator=torch.Generator().manual_seed(0),
    )


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


class LoaderSplit:
    """A split of a map-style dataset whose items are ``(input, {task: target})``.

    A training pass (``shuffle=True``) drops its last batch when that batch holds a single example
    and is not the only one: BatchNorm cannot normalise one example (DeepLab's image-pooling branch
    sees a 1x1 map), and one example in an epoch matters less than a crash.
    """

    def __init__(self, dataset: Dataset, num_workers: int = 0, collate_fn: Callable | None = None):
        self.dataset = dataset
        self._sampler = _BatchList()
        self._loader = _loader(dataset, self._sampler, num_workers, collate_fn)

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # a map-style Dataset has __len__ (torch does not declare it)

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Any]:
        n = len(self)
        order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
        batches = _chunks(order, batch_size)
        if shuffle and len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()
        self._sampler.batches = batches
        for x, targets in self._loader:
            yield x, targets


class MultiInputSplit:
    """One dataset per task (each item ``(input, target)``); batches are ``({task: x}, {task: y})``.

    Tasks have different numbers of examples.  **Training** (``shuffle=True``): an epoch has
    ``max_t floor(n_t / batch_size)`` steps (at least 1) and every step holds one batch of every
    task.  Each task goes through its examples in passes, each pass a fresh random order cut into
    full batches of ``min(batch_size, n_t)`` examples (the remainder of a pass is dropped, as with
    ``drop_last``); a task that runs out of batches starts a new pass.  So the largest task is seen
    once per epoch and smaller ones proportionally more often (LibMTL's multi-input loop does the
    same: as many steps as the longest loader, shorter loaders restarted, ``drop_last`` in training).  **Evaluation** (``shuffle=False``): every task's examples exactly once, in
    order; a step omits the tasks already exhausted.  The random orders are drawn from
    ``generator`` task by task in a fixed order, so an epoch is determined by the generator.
    ``len(split)`` is the total number of examples over tasks; ``sizes`` gives them per task.
    One DataLoader (one pool of ``num_workers``) reads every task's examples of a step.
    """

    def __init__(self, datasets: Mapping[str, Dataset], num_workers: int = 0):
        self.datasets = dict(datasets)
        self.sizes = {t: len(cast(Sized, d)) for t, d in self.datasets.items()}
        # One loader over all tasks (a batch = one step: every task's examples, grouped by task),
        # so one pool of workers serves the split.
        self._sampler = _BatchList()
        self._loader = _loader(_TaskIndexed(self.datasets), self._sampler, num_workers, _collate_by_task)

    def __len__(self) -> int:
        return sum(self.sizes.values())

    def _plan(self, batch_size: int, shuffle: bool, generator: torch.Generator | None) -> dict[str, list[list[int]]]:
        if not shuffle:
            return {t: _chunks(range(n), batch_size) for t, n in self.sizes.items()}
        steps = max(max(1, n // batch_size) for n in self.sizes.values())
        plan = {}
        for task, n in self.sizes.items():
            size = min(batch_size, n)
            per_pass = n // size
            batches: list[list[int]] = []
            while len(batches) < steps:
                order = torch.randperm(n, generator=generator).tolist()
                batches += _chunks(order[: per_pass * size], size)
            plan[task] = batches[:steps]
        return plan

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Any]:
        plan = self._plan(batch_size, shuffle, generator)
        self._sampler.batches = [
            [(task, i) for task, batches in plan.items() if step < len(batches) for i in batches[step]]
            for step in range(max(len(b) for b in plan.values()))
        ]
        yield from self._loader


class _TaskIndexed(Dataset):
    """The tasks' datasets behind one index space: ``dataset[(task, i)] = (task, *datasets[task][i])``."""

    def __init__(self, datasets: Mapping[str, Dataset]):
        self.datasets = datasets

    def __len__(self) -> int:
        return sum(len(cast(Sized, d)) for d in self.datasets.values())

    def __getitem__(self, key: tuple[str, int]) -> tuple[str, Any, Any]:
        task, i = key
        x, y = self.datasets[task][i]
        return task, x, y


def _collate_by_task(items: Sequence[tuple[str, Any, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    from torch.utils.data import default_collate

    groups: dict[str, list] = {}
    for task, x, y in items:
        groups.setdefault(task, []).append((x, y))
    xs, ys = {}, {}
    for task, pairs in groups.items():
        xs[task], ys[task] = default_collate(pairs)
    return xs, ys
