"""``celeba``: CelebA (Liu et al., ICCV 2015), 40 binary face attributes, one task each.

Folder (``data_root`` or ``$MTLSEARCH_DATA_ROOT``): the official files, read by torchvision's
``CelebA(root, split=..., target_type="attr", download=False)``::

    <folder>/img_align_celeba/<000001.jpg ...>
    <folder>/list_attr_celeba.txt            (count line, the 40 attribute names, one row per image)
    <folder>/list_eval_partition.txt         (image, 0 = train / 1 = valid / 2 = test)
    <folder>/identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt

``data_root`` may be that folder or its parent holding ``celeba/`` (torchvision's own layout).
Splits are the official partition: train / valid / test -> our train / val / test.

torchvision checks the MD5 sums of the five text files before reading; we run the same check once
in :meth:`CelebA.check` (option ``verify_md5``, default on) so that a mismatch names the file, then
open the dataset without re-hashing.  ``verify_md5: false`` accepts other copies of the files
(e.g. with different line endings) as long as they parse.

Tasks: the 40 attributes, named as in the file but lower-cased (``smiling``, ``5_o_clock_shadow``,
...); binary cross-entropy on one logit per task, accuracy.  Model: a small CNN (four
conv-BN-ReLU-maxpool blocks of 64-128-256-512 channels and global average pooling) shared, one
linear logit per task (``model: famo_cnn``: FAMO's 9-layer CNN, see
:class:`~mtlsearch.benchmarks.models.CelebACNN`).  Images are resized to ``image_size`` x ``image_size`` (64), in [0, 1].
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from mtlsearch.balancing.base import HParam
from mtlsearch.errors import ConfigError
from mtlsearch.metrics import BinaryAccuracyMeter

from .base import Benchmark, HPSModel, TaskSpec
from .folder import NUM_WORKERS, LoaderSplit, layout_error, resolve_root
from .models import CelebACNN, SmallCNN

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
TEXT_FILES = (
    "list_attr_celeba.txt",
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
LAYOUT = "<folder>/{img_align_celeba/*.jpg," + ",".join(TEXT_FILES) + "} (or <root>/celeba/...)"
SPLITS = {"train": "train", "val": "valid", "test": "test"}


def _bce(pred: Tensor, target: Tensor) -> Tensor:
    return nn.functional.binary_cross_entropy_with_logits(pred.reshape(-1), target.reshape(-1).to(pred.dtype))


class _AttrCollate:
    """Batch of ``(image, attrs[40])`` -> ``(images, {task: attrs[:, k] as float})``."""

    def __init__(self, tasks: list[str]):
        self.tasks = tasks

    def __call__(self, items: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
        images = torch.stack([x for x, _ in items])
        attrs = torch.stack([a for _, a in items]).float()
        return images, {t: attrs[:, k] for k, t in enumerate(self.tasks)}


class CelebA(Benchmark):
    name = "celeba"
    description = "CelebA: 40 binary face attributes, one task each"
    options = {
        "image_size": HParam(int, 64, "images are resized to this square size", lambda v: v >= 16, "an integer >= 16"),
        "model": HParam(
            str,
            "small_cnn",
            "the shared network: our small CNN, or FAMO's 9-layer CNN (Nash-MTL protocol)",
            lambda v: v in ("small_cnn", "famo_cnn"),
            "'small_cnn' or 'famo_cnn'",
        ),
        "verify_md5": HParam(bool, True, "check the text files' MD5 sums as torchvision does"),
        "num_workers": NUM_WORKERS,
        "eval_batch_size": HParam(int, 256, "batch size of evaluation passes", lambda v: v >= 1, "an integer >= 1"),
    }

    def __init__(self, data_root: str | None = None, **options: Any):
        super().__init__(data_root, **options)
        self.eval_batch_size = self.opts["eval_batch_size"]
        self.check()

    def _error(self, what: str) -> ConfigError:
        return layout_error(self.name, what, LAYOUT)

    def check(self) -> None:
        from torchvision.datasets import CelebA as TVCelebA
        from torchvision.datasets.utils import check_integrity

        root = resolve_root(self.name, self.data_root, LAYOUT)
        looks_like = (root / "img_align_celeba").exists() or (root / TEXT_FILES[0]).exists()
        folder = root if looks_like or not (root / "celeba").is_dir() else root / "celeba"
        if not (folder / "img_align_celeba").is_dir():
            raise self._error(f"{folder / 'img_align_celeba'} missing")
        for name in TEXT_FILES:
            if not (folder / name).is_file():
                raise self._error(f"{folder / name} missing")
        with open(folder / TEXT_FILES[0]) as f:
            f.readline()
            header = f.readline().split()
        if header != ATTRIBUTES:
            bad = next((i for i, (a, b) in enumerate(zip(header, ATTRIBUTES)) if a != b), min(len(header), len(ATTRIBUTES)))
            got = header[bad] if bad < len(header) else "end of line"
            raise self._error(
                f"{folder / TEXT_FILES[0]} line 2 should name the 40 attributes; "
                f"column {bad + 1} is {got!r}, expected {ATTRIBUTES[bad] if bad < 40 else 'end of line'!r}"
            )
        with open(folder / "list_eval_partition.txt") as f:
            first = f.readline().split()
        if len(first) != 2 or not (folder / "img_align_celeba" / first[0]).is_file():
            what = f"{folder / 'img_align_celeba' / first[0]} missing" if first else f"{folder / 'list_eval_partition.txt'} is empty"
            raise self._error(what)
        if self.opts["verify_md5"]:
            md5 = {filename: md5 for _, md5, filename in TVCelebA.file_list}
            for name in TEXT_FILES:
                if not check_integrity(str(folder / name), md5[name]):
                    raise ConfigError(
                        f"{self.name}: {folder / name} fails torchvision's MD5 check (expected {md5[name]}); "
                        "use the official file, or set the option verify_md5: false to accept this copy",
                        field="data_root",
                    )
        self.folder = folder

    def _dataset(self, split: str) -> Any:  # torchvision's CelebA (untyped)
        from torchvision import transforms
        from torchvision.datasets import CelebA as TVCelebA

        # torchvision expects <root>/<base_folder>/... and re-hashes the text files for every split;
        # the folder may have any name, and check() has already verified the files (and MD5 sums)
        # once, so the instance gets its folder name and skips the integrity test.  Both are
        # instance attributes (the instance stays a plain torchvision CelebA, picklable for workers).
        size = self.opts["image_size"]
        transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
        dataset = TVCelebA.__new__(TVCelebA)
        dataset.base_folder = self.folder.name
        dataset._check_integrity = lambda: True
        try:
            TVCelebA.__init__(dataset, str(self.folder.parent), split=split, target_type="attr", transform=transform, download=False)
        except (ValueError, IndexError, RuntimeError) as err:
            raise self._error(f"torchvision cannot parse the text files in {self.folder} ({type(err).__name__}: {err})") from None
        finally:
            del dataset._check_integrity
        return dataset

    def task_specs(self) -> list[TaskSpec]:
        return [TaskSpec(a.lower(), _bce, {"accuracy": False}, BinaryAccuracyMeter) for a in ATTRIBUTES]

    def load_splits(self, data_seed: int) -> dict[str, LoaderSplit]:
        collate = _AttrCollate([a.lower() for a in ATTRIBUTES])
        return {ours: LoaderSplit(self._dataset(theirs), self.opts["num_workers"], collate) for ours, theirs in SPLITS.items()}

    def build_model(self, task_names: list[str]) -> HPSModel:
        encoder = CelebACNN() if self.opts["model"] == "famo_cnn" else SmallCNN()
        return HPSModel(encoder, {t: nn.Linear(encoder.out_channels, 1) for t in task_names})
