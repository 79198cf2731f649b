"""Dense scene-understanding benchmarks stored as MTAN's preprocessed ``.npy`` files (NYUv2, Cityscapes).

Layout: ``<root>/{train,val}/<modality>/<i>.npy``, one file per example and modality, the same
names in every modality folder.  Images are ``H x W x 3`` float arrays, labels ``H x W`` class
indices with ``-1`` for unlabelled pixels, depth ``H x W`` or ``H x W x 1`` with ``0`` for invalid
pixels, surface normals ``H x W x 3`` unit vectors (zero vectors = invalid).

**Splits.** In this layout ``val`` is the official *test* split (what papers report on), so
trials must never be selected on it: ``train`` is split once, seeded by ``data_seed``, into our
``train`` and ``val`` (``val_fraction`` of it, option), and the folder's ``val`` is our ``test``.
The carved-out file names are in ``benchmark.split_files`` (and the fraction in the trial config).

**Losses** (MTAN's ``model_fit``): segmentation, cross-entropy over labelled pixels; depth, L1 over
valid pixels; normals, ``1 - mean cosine`` over valid pixels.  Each is a mean over the valid pixels
of the batch (0 for a batch without any).  Deviation: a normal is valid where any component is
non-zero (MTAN tests the *sum* of the components, which also drops real normals whose components
sum to 0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mtlsearch.metrics import DepthMeter, NormalMeter, SegmentationMeter

from .base import Benchmark, TaskSpec
from .folder import LoaderSplit, carve, layout_error, resolve_root

#: How many files per modality and folder the check opens (first and last by name).
CHECKED_FILES = 2


def segmentation_loss(pred: Tensor, target: Tensor) -> Tensor:
    total = F.cross_entropy(pred, target, ignore_index=-1, reduction="sum")
    return total / (target >= 0).sum().clamp(min=1)


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    valid = (target != 0).to(pred.dtype)
    return ((pred - target).abs() * valid).sum() / valid.sum().clamp(min=1)


def normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - mean_{valid pixels} <n̂, n>``; ``pred`` is expected unit-norm (the head normalises)."""
    valid = (target != 0).any(dim=1, keepdim=True).to(pred.dtype)
    return 1 - (pred * target * valid).sum() / valid.sum().clamp(min=1)


def _sort_key(name: str):
    stem = name[: -len(".npy")]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


class NpyDenseDataset(Dataset):
    """Items ``(image [3, H, W] float32, {task: target})`` read from ``<folder>/<modality>/<name>``."""

    def __init__(self, folder: Path, names: list[str], modalities: dict[str, str]):
        self.folder = folder
        self.names = names
        self.modalities = modalities  # task -> modality folder

    def __len__(self) -> int:
        return len(self.names)

    def _load(self, modality: str, name: str) -> np.ndarray:
        return np.load(self.folder / modality / name)

    def __getitem__(self, i: int):
        name = self.names[i]
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(self._load("image", name), -1, 0))).float()
        targets = {}
        for task, modality in self.modalities.items():
            array = self._load(modality, name)
            if task == "segmentation":
                targets[task] = torch.from_numpy(np.asarray(array)).long()
            elif task == "depth":
                targets[task] = torch.from_numpy(np.asarray(array, dtype=np.float32).reshape(1, *array.shape[:2]))
            else:  # normal
                targets[task] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0))).float()
        return image, targets


class DenseNpyBenchmark(Benchmark):
    """Base of ``nyuv2`` and ``cityscapes``: layout check, splits, tasks."""

    num_classes: ClassVar[int] = 0
    #: task -> modality folder name (besides ``image``).
    modalities: ClassVar[dict[str, str]] = {}

    def __init__(self, data_root: str | None = None, **options: Any):
        super().__init__(data_root, **options)
        self.eval_batch_size = self.opts["eval_batch_size"]
        self.check()

    # ------------------------------------------------------------------ layout
    @classmethod
    def layout(cls) -> str:
        mods = ",".join(["image", *cls.modalities.values()])
        return f"{{train,val}}/{{{mods}}}/<i>.npy"

    def _error(self, what: str):
        return layout_error(self.name, what, self.layout())

    def check(self) -> None:
        """Cheap validation of the folder; sets ``root``, ``names`` (per folder) and ``image_size``."""
        self.root = resolve_root(self.name, self.data_root, self.layout())
        self.names: dict[str, list[str]] = {}
        self.image_size: tuple[int, int] | None = None
        for split in ("train", "val"):
            folder = self.root / split
            if not folder.is_dir():
                raise self._error(f"{folder} missing")
            for modality in ["image", *self.modalities.values()]:
                if not (folder / modality).is_dir():
                    raise self._error(f"{folder / modality} missing")
            present = {m: {p.name for p in (folder / m).iterdir() if p.suffix == ".npy"}
                       for m in ["image", *self.modalities.values()]}
            if not present["image"]:
                raise self._error(f"no .npy files in {folder / 'image'}")
            names = sorted(set().union(*present.values()), key=_sort_key)
            for name in names:  # every example in every modality folder
                for modality, files in present.items():
                    if name not in files:
                        raise self._error(f"{folder / modality / name} missing")
            self.names[split] = names
            for name in dict.fromkeys([names[0], names[-1]][:CHECKED_FILES]):
                self._check_example(folder, name)

    def _read(self, path: Path, full: bool = False) -> np.ndarray:
        try:
            return np.load(path, mmap_mode=None if full else "r", allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - any unreadable file is a malformed folder
            raise self._error(f"{path} is not a readable .npy array ({type(err).__name__}: {err})") from None

    def _check_example(self, folder: Path, name: str) -> None:
        path = folder / "image" / name
        image = self._read(path)
        if image.ndim != 3 or image.shape[-1] != 3 or not np.issubdtype(image.dtype, np.number):
            raise self._error(f"{path} has shape {image.shape} ({image.dtype}); images are H x W x 3 numbers")
        size = tuple(image.shape[:2])
        if self.image_size is None:
            self.image_size = size
        elif size != self.image_size:
            raise self._error(f"{path} is {size[0]}x{size[1]}, other images are {self.image_size[0]}x{self.image_size[1]}")
        for task, modality in self.modalities.items():
            path = folder / modality / name
            full = task == "segmentation"  # labels are read entirely to check their values
            array = self._read(path, full=full)
            expected = {"segmentation": [size], "depth": [size, (*size, 1)], "normal": [(*size, 3)]}[task]
            if tuple(array.shape) not in expected or not np.issubdtype(array.dtype, np.number):
                shapes = " or ".join("x".join(map(str, s)) for s in expected)
                raise self._error(f"{path} has shape {array.shape} ({array.dtype}); expected {shapes} for image {path.name}")
            if full:
                values = np.unique(array)
                bad = values[(values != np.round(values)) | (values < -1) | (values >= self.num_classes)]
                if bad.size:
                    raise self._error(
                        f"{path} holds label {bad[0].item():g}; labels are class indices 0..{self.num_classes - 1} or -1 (ignored)"
                    )

    # ------------------------------------------------------------------ benchmark
    def task_specs(self) -> list[TaskSpec]:
        specs = {
            "segmentation": TaskSpec(
                "segmentation", segmentation_loss, {"miou": False, "pixacc": False}, lambda: SegmentationMeter(self.num_classes)
            ),
            "depth": TaskSpec("depth", depth_loss, {"abs_err": True, "rel_err": True}, DepthMeter),
            "normal": TaskSpec(
                "normal", normal_loss,
                {"mean": True, "median": True, "within_11_25": False, "within_22_5": False, "within_30": False},
                NormalMeter,
            ),
        }
        return [specs[t] for t in self.modalities]

    def load_splits(self, data_seed: int) -> dict[str, LoaderSplit]:
        train_names = self.names["train"]
        kept, carved = carve(len(train_names), self.opts["val_fraction"], data_seed, self.name, f"{self.root / 'train'}")
        self.split_files = {
            "train": [train_names[i] for i in kept],
            "val": [train_names[i] for i in carved],
            "test": list(self.names["val"]),
        }
        folders = {"train": self.root / "train", "val": self.root / "train", "test": self.root / "val"}
        return {
            split: LoaderSplit(NpyDenseDataset(folders[split], names, dict(self.modalities)), self.opts["num_workers"])
            for split, names in self.split_files.items()
        }
