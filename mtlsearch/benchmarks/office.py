"""``office_home`` and ``office31``: one classification task per image domain (multi-input).

Folder (``data_root`` or ``$MTLSEARCH_DATA_ROOT``): ``<root>/<domain>/<class>/<image>`` (``.jpg``,
``.jpeg``, ``.png``, ``.bmp``), as unpacked from the official archives:

* Office-Home (Venkateswara et al., CVPR 2017): domains ``Art``, ``Clipart``, ``Product``,
  ``Real World`` (also accepted: ``Real_World``, ``RealWorld``; case is ignored), 65 classes;
  tasks ``art``, ``clipart``, ``product``, ``real_world``.
* Office-31 (Saenko et al., ECCV 2010): domains ``amazon``, ``dslr``, ``webcam``, 31 classes, also
  accepted with the archive's extra level ``<domain>/images/<class>/``; tasks ``amazon``, ``dslr``,
  ``webcam``.

Every domain must hold the same class folders (the class index is the position of the folder name
in sorted order).  Each domain is split on its own, seeded by ``data_seed`` and the domain's
position, into train / val / test with fractions ``1 - val_fraction - test_fraction`` /
``val_fraction`` / ``test_fraction`` (defaults 0.6 / 0.2 / 0.2, LibMTL's proportions; LibMTL ships
fixed lists, we draw ours).  ``benchmark.split_files`` records the files of each split.

Each task sees only its own domain's images (``multi_input``): a training step draws one batch per
task (see :class:`~mtlsearch.benchmarks.folder.MultiInputSplit` for how domains of different sizes
are batched).  Images are resized to ``image_size`` x ``image_size`` (224) and normalised with the
ImageNet mean and standard deviation, without augmentation (as LibMTL).

Model (LibMTL's Office setting): ResNet-18 with LibMTL's hidden layer as the shared encoder, a linear
classifier per task; cross-entropy, accuracy.  ``pretrained``: a local torchvision ResNet-18
state_dict (the published setting starts from ImageNet weights; nothing is downloaded).
BatchNorm in the hidden layer needs training batches of at least 2 images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from torch import Tensor, nn
from torch.utils.data import Dataset

from mtlsearch.balancing.base import HParam
from mtlsearch.errors import ConfigError
from mtlsearch.metrics import AccuracyMeter

from .base import Benchmark, HPSModel, TaskSpec
from .folder import NUM_WORKERS, PRETRAINED, MultiInputSplit, fraction_option, layout_error, resolve_root
from .models import ClassifierEncoder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _ce(pred: Tensor, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(pred, target)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def image_transform(size: int) -> Callable[[Any], Tensor]:
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageListDataset(Dataset):
    """Items ``(image tensor, class index)`` from a list of ``(path, label)``."""

    def __init__(self, items: list[tuple[Path, int]], size: int):
        self.items = items
        self.transform = image_transform(size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


class OfficeBenchmark(Benchmark):
    multi_input = True
    #: task name -> domain folder name as in the official archive.
    domains: ClassVar[dict[str, str]] = {}
    options = {
        "image_size": HParam(int, 224, "images are resized to this square size", lambda v: v >= 8, "an integer >= 8"),
        "val_fraction": fraction_option(0.2, "each domain used as the validation split"),
        "test_fraction": fraction_option(0.2, "each domain used as the test split"),
        "pretrained": PRETRAINED,
        "num_workers": NUM_WORKERS,
        "eval_batch_size": HParam(int, 64, "batch size of evaluation passes", lambda v: v >= 1, "an integer >= 1"),
    }

    def __init__(self, data_root: str | None = None, **options: Any):
        super().__init__(data_root, **options)
        if self.opts["val_fraction"] + self.opts["test_fraction"] >= 1.0:
            raise ConfigError(
                f"val_fraction + test_fraction must be < 1, got {self.opts['val_fraction']} + {self.opts['test_fraction']}",
                field="test_fraction",
            )
        self.eval_batch_size = self.opts["eval_batch_size"]
        self.check()

    @classmethod
    def layout(cls) -> str:
        return f"<root>/{{{','.join(cls.domains.values())}}}/<class>/<image>"

    def _error(self, what: str) -> ConfigError:
        return layout_error(self.name, what, self.layout())

    def _domain_dir(self, task: str) -> Path:
        wanted = _norm(self.domains[task])
        for child in sorted(self.root.iterdir()):
            if child.is_dir() and _norm(child.name) == wanted:
                nested = child / "images"  # Office-31's archive: <domain>/images/<class>/
                if nested.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in nested.iterdir()):
                    return nested
                return child
        raise self._error(f"{self.root / self.domains[task]} missing")

    def check(self) -> None:
        """Lists every domain's classes and images, opens the first image of each domain."""
        from PIL import Image, UnidentifiedImageError

        self.root = resolve_root(self.name, self.data_root, self.layout())
        self.images: dict[str, list[tuple[Path, str]]] = {}
        classes: list[str] | None = None
        first_domain = None
        for task in self.domains:
            folder = self._domain_dir(task)
            found = sorted(p.name for p in folder.iterdir() if p.is_dir())
            if not found:
                raise self._error(f"no class folders in {folder}")
            if classes is None:
                classes, first_domain = found, folder
            elif found != classes:
                extra = sorted(set(found) ^ set(classes))[0]
                where = folder if extra in found else first_domain
                raise self._error(f"class folder {extra!r} is in {where} but not in every domain")
            items = []
            for cls in found:
                files = sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise self._error(f"no images (.jpg, .jpeg, .png, .bmp) in {folder / cls}")
                items += [(p, cls) for p in files]
            try:
                with Image.open(items[0][0]) as img:
                    img.verify()
            except (OSError, UnidentifiedImageError) as err:
                raise self._error(f"{items[0][0]} is not a readable image ({err})") from None
            self.images[task] = items
        assert classes is not None  # every domain's class folders were read above
        self.classes = classes
        self.num_classes = len(classes)

    def task_specs(self) -> list[TaskSpec]:
        return [TaskSpec(t, _ce, {"accuracy": False}, AccuracyMeter) for t in self.domains]

    def load_splits(self, data_seed: int) -> dict[str, MultiInputSplit]:
        index = {c: i for i, c in enumerate(self.classes)}
        per_split: dict[str, dict[str, list[tuple[Path, int]]]] = {"train": {}, "val": {}, "test": {}}
        for k, (task, items) in enumerate(self.images.items()):
            n = len(items)
            n_val = max(1, round(self.opts["val_fraction"] * n))
            n_test = max(1, round(self.opts["test_fraction"] * n))
            if n - n_val - n_test < 1:
                raise ConfigError(f"{self.name}: domain {task!r} has {n} images, too few for train/val/test", field="data_root")
            order = np.random.default_rng([data_seed, k]).permutation(n)
            parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
            for split, idx in parts.items():
                per_split[split][task] = [(items[i][0], index[items[i][1]]) for i in sorted(idx.tolist())]
        self.split_files = {s: {t: [str(p) for p, _ in v] for t, v in d.items()} for s, d in per_split.items()}
        size, workers = self.opts["image_size"], self.opts["num_workers"]
        return {split: MultiInputSplit({t: ImageListDataset(v, size) for t, v in d.items()}, workers) for split, d in per_split.items()}

    def build_model(self, task_names: list[str]) -> HPSModel:
        encoder = ClassifierEncoder("resnet18", self.opts["pretrained"], self.name)
        return HPSModel(encoder, {t: nn.Linear(encoder.out_channels, self.num_classes) for t in task_names})


class OfficeHome(OfficeBenchmark):
    name = "office_home"
    description = "Office-Home: 65-class classification in 4 domains (art, clipart, product, real_world), one task each"
    domains = {"art": "Art", "clipart": "Clipart", "product": "Product", "real_world": "Real World"}


class Office31(OfficeBenchmark):
    name = "office31"
    description = "Office-31: 31-class classification in 3 domains (amazon, dslr, webcam), one task each"
    domains = {"amazon": "amazon", "dslr": "dslr", "webcam": "webcam"}
