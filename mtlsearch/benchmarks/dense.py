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

**Protocol options** (set by :mod:`mtlsearch.protocols`, each usable alone): ``model`` (the
benchmark's default network or ``segnet_mtan``), ``augment`` (the released Nash-MTL/FAMO training
augmentation: per image a random scale in {1, 1.2, 1.5} with a random crop resized back, depth divided
by the scale, then a horizontal flip with probability 1/2 that negates the normals' x component),
``eval_average`` (``split``: metrics over every pixel of the split; ``batch``: the released code's
mean over evaluation batches of each batch's depth and normal metrics, segmentation still from one
confusion matrix), ``image_size`` (``"HxW"``: refuse a folder whose images have another size) and
``mtan_width`` (SegNet-MTAN's filters times this; 1 as released, smaller for quick checks) and
``val_fraction: 0`` (train on the whole training folder, as the released code does: no validation split).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mtlsearch.balancing.base import HParam
from mtlsearch.metrics import BatchMeanMeter, DepthMeter, NormalMeter, SegmentationMeter

from .base import Benchmark, TaskSpec
from mtlsearch.errors import ConfigError

from .folder import LoaderSplit, carve, layout_error, resolve_root

#: How many files per modality and folder the check opens (first and last by name).
CHECKED_FILES = 2

AUGMENT = HParam(bool, False, "random scale-crop and flip of training images (Nash-MTL/FAMO's released augmentation)")
EVAL_AVERAGE = HParam(
    str,
    "split",
    "depth/normal metrics over the split's pixels, or the mean of per-batch values",
    lambda v: v in ("split", "batch"),
    "'split' or 'batch'",
)
IMAGE_SIZE = HParam(
    str, None, "the image size the folder must have, 'HxW' (None: any)", lambda v: _parse_hw(v) is not None, "'HxW', e.g. '288x384'"
)
VAL_FRACTION = HParam(
    float,
    0.1,
    "fraction of the training folder carved out as the validation split (0: none)",
    lambda v: 0.0 <= v < 1.0,
    "a number in [0, 1)",
)
MTAN_WIDTH = HParam(
    float, 1.0, "width multiplier of SegNet-MTAN's filters (1: the released 64-128-256-512-512)", lambda v: 0 < v <= 4, "a number in (0, 4]"
)
SCALES = (1.0, 1.2, 1.5)


def mtan_filters(width: float) -> tuple[int, ...]:
    return tuple(max(1, int(round(f * width))) for f in (64, 128, 256, 512, 512))


def _parse_hw(text: str) -> tuple[int, int] | None:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        return None
    return (h, w) if h > 0 and w > 0 else None


def scale_crop_flip(x: Tensor, targets: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """The released augmentation (Nash-MTL/FAMO ``RandomScaleCrop`` + flip), image by image, its random
    draws taken from ``generator`` (so a restored trainer augments exactly as an uninterrupted one)."""
    height, width = x.shape[-2:]
    size = (height, width)
    xs: list[Tensor] = []
    ys: dict[str, list[Tensor]] = {k: [] for k in targets}
    for b in range(x.shape[0]):
        sc = SCALES[int(torch.randint(len(SCALES), (1,), generator=generator))]
        h, w = int(height / sc), int(width / sc)
        i = int(torch.randint(height - h + 1, (1,), generator=generator))
        j = int(torch.randint(width - w + 1, (1,), generator=generator))
        flip = bool(torch.rand(1, generator=generator) < 0.5)
        img = F.interpolate(x[b : b + 1, :, i : i + h, j : j + w].float(), size=size, mode="bilinear", align_corners=True)
        xs.append(img.flip(-1) if flip else img)
        for task, t in targets.items():
            if task == "segmentation":
                y = F.interpolate(t[b : b + 1, None, i : i + h, j : j + w].float(), size=size, mode="nearest")[:, 0].to(t.dtype)
            elif task == "depth":
                y = F.interpolate(t[b : b + 1, :, i : i + h, j : j + w], size=size, mode="nearest") / sc
            else:  # normal
                y = F.interpolate(t[b : b + 1, :, i : i + h, j : j + w], size=size, mode="bilinear", align_corners=True)
            if flip:
                y = y.flip(-1)
                if task == "normal":
                    y = torch.cat([-y[:, :1], y[:, 1:]], dim=1)
            ys[task].append(y)
    return torch.cat(xs), {k: torch.cat(v) for k, v in ys.items()}


class AugmentedSplit:
    """A training split whose shuffled passes are augmented with :func:`scale_crop_flip`; evaluation
    passes (``shuffle=False``) are not."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def to(self, device: torch.device) -> "AugmentedSplit":
        return AugmentedSplit(self.inner.to(device)) if hasattr(self.inner, "to") else self

    def with_inner(self, inner: Any) -> "AugmentedSplit":
        """The same augmentation over another copy of the data (e.g. the one held on the GPU)."""
        return AugmentedSplit(inner)

    def batches(
        self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        for x, targets in self.inner.batches(batch_size, shuffle, generator):
            yield scale_crop_flip(x, targets, generator) if shuffle else (x, targets)


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


def _sort_key(name: str) -> tuple[int, int, str]:
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

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
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

    def _error(self, what: str) -> ConfigError:
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
            present = {m: {p.name for p in (folder / m).iterdir() if p.suffix == ".npy"} for m in ["image", *self.modalities.values()]}
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
        wanted = self.opts.get("image_size")
        if wanted and _parse_hw(wanted) != self.image_size:
            assert self.image_size is not None  # set by _check_example above
            h, w = self.image_size
            raise ConfigError(
                f"{self.name}: the images in {self.root} are {h}x{w}, but image_size asks for {wanted} "
                f"(the protocol's size; set image_size to the folder's size to override it)",
                field="image_size",
            )

    def _read(self, path: Path, full: bool = False) -> np.ndarray:
        try:
            return np.load(path, mmap_mode=None if full else "r", allow_pickle=False)
        except Exception as err:  # any unreadable file is a malformed folder
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
                "normal",
                normal_loss,
                {"mean": True, "median": True, "within_11_25": False, "within_22_5": False, "within_30": False},
                NormalMeter,
            ),
        }
        if self.opts.get("eval_average") == "batch":
            for name in ("depth", "normal"):
                spec = specs[name]
                specs[name] = TaskSpec(spec.name, spec.loss, spec.metrics, functools.partial(BatchMeanMeter, spec.new_meter))
        return [specs[t] for t in self.modalities]

    def load_splits(self, data_seed: int) -> dict[str, LoaderSplit]:
        train_names = self.names["train"]
        carved: list[int]
        if self.opts["val_fraction"] == 0:  # the released codes' setting: no validation split
            kept, carved = list(range(len(train_names))), []
        else:
            kept, carved = carve(len(train_names), self.opts["val_fraction"], data_seed, self.name, f"{self.root / 'train'}")
        self.split_files = {
            "train": [train_names[i] for i in kept],
            "val": [train_names[i] for i in carved],
            "test": list(self.names["val"]),
        }
        if not carved:
            del self.split_files["val"]
        folders = {"train": self.root / "train", "val": self.root / "train", "test": self.root / "val"}
        splits: dict[str, Any] = {
            split: LoaderSplit(NpyDenseDataset(folders[split], names, dict(self.modalities)), self.opts["num_workers"])
            for split, names in self.split_files.items()
        }
        if self.opts.get("augment"):
            splits["train"] = AugmentedSplit(splits["train"])
        return splits
