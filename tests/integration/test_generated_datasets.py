"""Generated NYUv2 and Cityscapes folders pass the loader and are learnable: five epochs of a small dense
model, too long for the fast tier (the loaders' other tests: tests/unit/test_datasets.py)."""

import numpy as np
import pytest

from mtlsearch import Trainer


# ----------------------------------------------------------------------------- generated data
@pytest.mark.parametrize("name, size", [("nyuv2", (32, 48)), ("cityscapes", (32, 64))])
def test_generated_folders_pass_the_loader_and_are_learnable(tmp_path, name, size):
    """``python -m mtlsearch.benchmarks.generate`` writes the exact layout the loader checks, the same
    files for the same seed, and scenes a model learns (depth error falls within a few epochs)."""
    from mtlsearch.benchmarks.generate import generate, main

    assert main([name, str(tmp_path / "a"), "--train", "24", "--test", "4", "--size", f"{size[0]}x{size[1]}"]) == 0
    generate(name, tmp_path / "b", train=24, test=4, size=size, seed=0)
    for f in sorted((tmp_path / "a").rglob("*.npy")):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "b" / f.relative_to(tmp_path / "a")))
    label_dir = "label" if name == "nyuv2" else "label_7"
    labels = np.load(tmp_path / "a" / "train" / label_dir / "0.npy")
    assert labels.min() == -1 and labels.max() >= 1  # an ignored band and at least one box
    cfg = {
        "benchmark": name,
        "data_root": str(tmp_path / "a"),
        "method": "ew",
        "max_epochs": 5,
        "lr": 1e-3,
        "batch_size": 4,
        "device": "cpu",
        "val_fraction": 0.25,
        **({"backbone": "resnet18"} if name == "nyuv2" else {}),
    }
    results = list(Trainer(cfg).run())
    assert results[-1]["train/depth/loss"] < 0.5 * results[0]["train/depth/loss"]
