"""Generated data in the exact on-disk layout of the dense benchmarks (``nyuv2``, ``cityscapes``).

    python -m mtlsearch.benchmarks.generate nyuv2 DIR [--train 64] [--test 16] [--size 288x384] [--seed 0]

writes ``DIR/{train,val}/{image,label,depth,normal}/<i>.npy`` (``label_7`` and no normals for
``cityscapes``), so that the whole pipeline (loader checks, model, losses, metrics, searches on a
GPU) can be tried without the real dataset, e.g. ``--data-root DIR`` on a machine with no internet.
Not a substitute for the real data: Δm against the published references means nothing on it.

The scenes are learnable, not noise: a tilted floor plane plus a few axis-aligned boxes, each of a
class whose colour, shading and depth offset depend on the class; labels are the box classes (the
floor is class 0), ``-1`` on a border band (ignored); depth is positive with a few invalid ``0``
pixels; normals (NYUv2) are the unit normals of the depth surface.  Images are float32 in ``[0, 1]``
(H x W x 3), labels float32 (H x W), depth float32 (H x W x 1), normals float32 (H x W x 3), as in
MTAN's preprocessed files.  Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

LAYOUTS = {
    # benchmark: (classes, label folder, normals?, default size)
    "nyuv2": (13, "label", True, (288, 384)),
    "cityscapes": (7, "label_7", False, (128, 256)),
}


def scene(rng: np.random.Generator, size: tuple[int, int], num_classes: int) -> dict[str, np.ndarray]:
    """One example: ``image``, ``label``, ``depth`` and ``normal`` arrays."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 2.0 + 3.0 * (1 - yy / h) + rng.uniform(-0.5, 0.5) * xx / w  # floor plane, far at the top
    label = np.zeros((h, w), np.float32)
    palette = np.random.default_rng(1234).uniform(0.1, 0.9, (num_classes, 3)).astype(np.float32)
    for _ in range(rng.integers(2, 6)):
        c = int(rng.integers(1, num_classes))
        bh, bw = int(rng.integers(h // 8, h // 2)), int(rng.integers(w // 8, w // 2))
        top, left = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        box = (slice(top, top + bh), slice(left, left + bw))
        label[box] = c
        depth[box] = 1.0 + 0.3 * c + 0.5 * (xx[box] - left) / w  # a slanted face per box
    image = palette[label.astype(int)] * (0.6 + 0.4 * (2.0 / depth))[..., None]
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1).astype(np.float32)
    dz_dy, dz_dx = np.gradient(depth)
    normal = np.stack([-dz_dx * w / 10, -dz_dy * h / 10, np.ones_like(depth)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    band = max(1, min(h, w) // 32)  # ignored border, as in the real data's invalid edges
    label[:band], label[-band:] = -1, -1
    invalid = rng.random((h, w)) < 0.02
    depth = np.where(invalid, 0.0, depth).astype(np.float32)
    normal[invalid] = 0.0
    return {"image": image, "label": label, "depth": depth[..., None], "normal": normal.astype(np.float32)}


def generate(
    benchmark: str, root: str | Path, *, train: int = 64, test: int = 16, size: tuple[int, int] | None = None, seed: int = 0
) -> Path:
    """Write ``train`` training and ``test`` test (``val/``) examples of ``benchmark`` under ``root``."""
    if benchmark not in LAYOUTS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(LAYOUTS)}")
    num_classes, label_dir, normals, default_size = LAYOUTS[benchmark]
    size = size or default_size
    root = Path(root)
    rng = np.random.default_rng(seed)
    folders = {"image": "image", "label": label_dir, "depth": "depth", **({"normal": "normal"} if normals else {})}
    for split, n in (("train", train), ("val", test)):
        for folder in folders.values():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arrays = scene(rng, size, num_classes)
            for key, folder in folders.items():
                np.save(root / split / folder / f"{i}.npy", arrays[key])
    return root


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 288x384, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"images must be at least 32x32, got {text!r}")
    return h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlsearch.benchmarks.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", choices=sorted(LAYOUTS))
    parser.add_argument("root", help="folder to write (created)")
    parser.add_argument("--train", type=int, default=64, help="training examples (default 64)")
    parser.add_argument("--test", type=int, default=16, help="test examples, written to val/ (default 16)")
    parser.add_argument("--size", type=parse_size, default=None, help="HxW (default: the real dataset's size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train < 2 or args.test < 1:
        parser.error("--train must be >= 2 (a validation split is carved from it) and --test >= 1")
    root = generate(args.benchmark, args.root, train=args.train, test=args.test, size=args.size, seed=args.seed)
    print(f"wrote {args.train} train and {args.test} test examples of {args.benchmark} under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
