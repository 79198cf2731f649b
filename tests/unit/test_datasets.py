"""Real benchmarks on tiny folders written here in their exact on-disk formats; dense metrics by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlsearch import Trainer, TrialConfig
from mtlsearch.benchmarks import BENCHMARKS, get_benchmark
from mtlsearch.benchmarks.dense import depth_loss, normal_loss, segmentation_loss
from mtlsearch.benchmarks.folder import ENV_DATA_ROOT, LoaderSplit, carve
from mtlsearch.errors import ConfigError
from mtlsearch.metrics import BinaryAccuracyMeter, DepthMeter, NormalMeter, SegmentationMeter
from mtlsearch.references import load_reference_file

from helpers.celeba import ATTRS, write_celeba


# ----------------------------------------------------------------------------- folder writers
def write_dense(root: Path, size, counts, modalities, num_classes, depth_2d=False, seed=0):
    """MTAN's .npy layout: image HxWx3 float32, labels HxW (-1 ignored), depth HxWx1 (0 invalid), normals HxWx3."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in counts.items():
        for m in ["image", *modalities]:
            (root / split / m).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((h, w, 3), dtype=np.float32))
            for m in modalities:
                if m.startswith("label"):
                    a = rng.integers(-1, num_classes, (h, w)).astype(np.float32)
                elif m == "depth":
                    a = rng.random((h, w) if depth_2d else (h, w, 1), dtype=np.float32) * 5 + 0.5
                    a[0, :4] = 0
                else:
                    a = rng.normal(size=(h, w, 3)).astype(np.float32)
                    a /= np.linalg.norm(a, axis=-1, keepdims=True)
                    a[1, :3] = 0
                np.save(root / split / m / f"{i}.npy", a)
    return root


def write_office(root: Path, domains, classes, per_class, nested=False, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for d, k in zip(domains, per_class):
        for c in classes:
            folder = root / d / ("images" if nested else "") / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / f"{c}_{i}.jpg")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    return {
        "nyuv2": write_dense(base / "nyuv2", (32, 48), {"train": 3, "val": 2}, ["label", "depth", "normal"], 13),
        "cityscapes": write_dense(base / "cityscapes", (32, 48), {"train": 3, "val": 2}, ["label_7", "depth"], 7, depth_2d=True),
        "celeba": write_celeba(base / "celeba")[0],
        "office_home": write_office(
            base / "office_home", ["Art", "Clipart", "Product", "Real World"], ["chair", "desk", "pen"], [3, 2, 2, 4]
        ),
        "office31": write_office(base / "office31", ["amazon", "dslr", "webcam"], ["bike", "cup"], [4, 3, 3], nested=True),
    }


OPTIONS = {  # small images / tiny validation carve-outs so one epoch runs in seconds on a CPU
    "nyuv2": {"val_fraction": 0.34},
    "cityscapes": {"val_fraction": 0.34},
    "celeba": {"verify_md5": False, "image_size": 32},
    "office_home": {"image_size": 32, "eval_batch_size": 1},
    "office31": {"image_size": 32, "eval_batch_size": 1},
}


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("name", list(OPTIONS))
def test_one_epoch_end_to_end_on_the_tiny_folder(folders, name):
    cfg = {
        "benchmark": name,
        "data_root": str(folders[name]),
        "method": "ew",
        "max_epochs": 1,
        "batch_size": 2,
        "device": "cpu",
        **OPTIONS[name],
    }
    trainer = Trainer(cfg)
    (result,) = list(trainer.run())
    specs = {t.name: t for t in trainer.benchmark.task_specs()}
    for task, spec in specs.items():
        assert math.isfinite(result[f"train/{task}/loss"])
        for split in ("val", "test"):
            for metric in spec.metrics:
                assert math.isfinite(result[f"{split}/{task}/{metric}"]), (split, task, metric)
    # Published references exist for the test split only: Δm on test, never on val.
    has_ref = name in ("nyuv2", "cityscapes")
    assert ("test/delta_m" in result) == has_ref and "val/delta_m" not in result
    # The benchmark's options are part of the validated config (and so of every checkpoint).
    assert trainer.config.to_dict()["num_workers"] == 0


def test_dense_splits_carve_validation_from_train_and_test_is_the_folders_val(folders):
    bench = get_benchmark("nyuv2", data_root=str(folders["nyuv2"]), val_fraction=0.34)
    splits = bench.load_splits(data_seed=0)
    files = bench.split_files
    assert sorted(files["train"] + files["val"], key=lambda n: int(n[:-4])) == ["0.npy", "1.npy", "2.npy"]
    assert not set(files["train"]) & set(files["val"]) and len(files["val"]) == 1
    assert files["test"] == ["0.npy", "1.npy"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 1, "test": 2}
    x, y = next(splits["test"].batches(2, shuffle=False))
    assert torch.equal(x[0], torch.from_numpy(np.load(folders["nyuv2"] / "val/image/0.npy")).permute(2, 0, 1))
    assert y["segmentation"].dtype == torch.long and y["depth"].shape == (2, 1, 32, 48) and y["normal"].shape == (2, 3, 32, 48)


def test_carve_is_seeded_disjoint_and_sized_by_the_fraction():
    kept, val = carve(100, 0.1, seed=3, benchmark="x", what="train")
    assert len(val) == 10 and sorted(kept + val) == list(range(100))
    assert carve(100, 0.1, 3, "x", "train") == (kept, val)
    assert carve(100, 0.1, 4, "x", "train")[1] != val
    with pytest.raises(ConfigError, match="too few"):
        carve(1, 0.5, 0, "x", "train")


def test_real_shapes_load(tmp_path):
    """The published sizes (NYUv2 288x384, Cityscapes 128x256): check and loading only."""
    nyu = write_dense(tmp_path / "nyu", (288, 384), {"train": 2, "val": 1}, ["label", "depth", "normal"], 13)
    bench = get_benchmark("nyuv2", data_root=str(nyu), val_fraction=0.5)
    assert bench.image_size == (288, 384)
    x, y = bench.load_splits(0)["train"].dataset[0]
    assert x.shape == (3, 288, 384) and x.dtype == torch.float32
    assert y["segmentation"].shape == (288, 384) and y["depth"].shape == (1, 288, 384) and y["normal"].shape == (3, 288, 384)
    city = write_dense(tmp_path / "city", (128, 256), {"train": 2, "val": 1}, ["label_7", "depth"], 7)
    bench = get_benchmark("cityscapes", data_root=str(city))
    x, y = bench.load_splits(0)["test"].dataset[0]
    assert bench.image_size == (128, 256) and x.shape == (3, 128, 256) and y["depth"].shape == (1, 128, 256)


def test_celeba_reads_the_official_files_with_torchvision(folders):
    folder, attrs, parts = write_celeba(folders["celeba"].parent / "celeba_check", seed=1)
    # data_root may be the folder or its parent holding celeba/ (torchvision's layout).
    parent = folders["celeba"].parent / "parent"
    write_celeba(parent / "celeba", seed=1)
    for root in (folder, parent):
        bench = get_benchmark("celeba", data_root=str(root), verify_md5=False, image_size=16)
        splits = bench.load_splits(0)
        assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 2, "test": 2}
        names = splits["val"].dataset.filename
        assert all(parts[n] == 1 for n in names)
        x, y = next(splits["val"].batches(2, shuffle=False))
        assert x.shape == (2, 3, 16, 16) and len(y) == 40
        expected = (attrs[names[1]][ATTRS.index("Smiling")] + 1) / 2
        assert y["smiling"][1].item() == expected


def test_multi_input_batching(folders):
    bench = get_benchmark("office_home", data_root=str(folders["office_home"]), image_size=8)
    split = bench.load_splits(0)["train"]
    sizes = split.sizes  # domains of different sizes
    assert len(set(sizes.values())) > 1
    g = torch.Generator().manual_seed(0)
    steps = list(split.batches(2, shuffle=True, generator=g))
    assert len(steps) == max(n // 2 for n in sizes.values())
    for xs, ys in steps:
        assert set(xs) == set(sizes) == set(ys)  # every step has one batch per task
        assert all(xs[t].shape[0] == min(2, sizes[t]) for t in sizes)
    again = list(split.batches(2, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0][t], b[0][t]) for a, b in zip(steps, again) for t in sizes)
    # Evaluation: every example of every task exactly once; exhausted tasks drop out of later steps.
    seen = {t: 0 for t in sizes}
    for xs, _ in split.batches(3, shuffle=False):
        for t in xs:
            seen[t] += xs[t].shape[0]
    assert seen == sizes


def test_office31_accepts_the_archive_images_level_and_splits_per_domain(folders):
    bench = get_benchmark("office31", data_root=str(folders["office31"]), image_size=8)
    assert bench.classes == ["bike", "cup"] and bench.task_names == ["amazon", "dslr", "webcam"]
    bench.load_splits(0)
    files = bench.split_files
    for task, n in {"amazon": 8, "dslr": 6, "webcam": 6}.items():
        parts = [files[s][task] for s in ("train", "val", "test")]
        assert sum(map(len, parts)) == n and len(set().union(*parts)) == n
        assert len(parts[1]) == round(0.2 * n) and len(parts[2]) == round(0.2 * n)


def test_loader_split_is_deterministic_and_leaves_the_global_rng_alone(folders):
    split = get_benchmark("cityscapes", data_root=str(folders["cityscapes"])).load_splits(0)["test"]
    assert isinstance(split, LoaderSplit)
    state = torch.get_rng_state()
    a = [x for x, _ in split.batches(1, shuffle=True, generator=torch.Generator().manual_seed(5))]
    b = [x for x, _ in split.batches(1, shuffle=True, generator=torch.Generator().manual_seed(5))]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_pretrained_backbone_is_loaded_from_a_local_file(folders, tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    bench = get_benchmark("nyuv2", data_root=str(folders["nyuv2"]), backbone="resnet18", pretrained=str(tmp_path / "r18.pth"))
    model = bench.build_model(["depth"])
    assert torch.equal(model.encoder.layer1[0].conv1.weight, net.layer1[0].conv1.weight)
    assert model.encoder.layer4[1].conv2.dilation == (4, 4)  # output stride 8
    assert model.eval()(torch.zeros(1, 3, 32, 48))["depth"].shape == (1, 1, 32, 48)
    with pytest.raises(ConfigError, match="not found"):
        get_benchmark("nyuv2", data_root=str(folders["nyuv2"]), pretrained=str(tmp_path / "nope.pth")).build_model(["depth"])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="missing key"):
        get_benchmark("nyuv2", data_root=str(folders["nyuv2"]), backbone="resnet18", pretrained=str(tmp_path / "bad.pth")).build_model(
            ["depth"]
        )


# ----------------------------------------------------------------------------- malformed folders
def test_data_root_from_the_environment_and_missing(folders, monkeypatch):
    monkeypatch.delenv("MTLSEARCH_DATA_ROOT", raising=False)
    with pytest.raises(ConfigError, match="MTLSEARCH_DATA_ROOT"):
        get_benchmark("nyuv2")
    monkeypatch.setenv("MTLSEARCH_DATA_ROOT", str(folders["cityscapes"]))
    assert get_benchmark("cityscapes").root == folders["cityscapes"]


def _break(tmp_path, name, damage):
    root = tmp_path / name
    if name == "nyuv2":
        write_dense(root, (8, 8), {"train": 3, "val": 2}, ["label", "depth", "normal"], 13)
    elif name == "cityscapes":
        write_dense(root, (8, 8), {"train": 3, "val": 2}, ["label_7", "depth"], 7)
    elif name == "celeba":
        write_celeba(root)
    else:
        write_office(root, ["Art", "Clipart", "Product", "Real World"], ["a", "b"], [2, 2, 2, 2])
    return damage(root)


def _rm(rel):
    def damage(root):
        target = root / rel
        target.unlink()
        return str(target)

    return damage


def _save(rel, array):
    def damage(root):
        np.save(root / rel, array)
        return str(root / rel)

    return damage


def _write(rel, text):
    def damage(root):
        (root / rel).write_text(text)
        return str(root / rel)

    return damage


def _class_mismatch(root):
    (root / "Product" / "zebra").mkdir()
    (root / "Product" / "a" / "a_0.jpg").rename(root / "Product" / "zebra" / "z.jpg")
    return "'zebra'"


def _empty_class(root):
    for p in (root / "Clipart" / "b").iterdir():
        p.unlink()
    return str(root / "Clipart" / "b")


def _no_domain(root):
    import shutil

    shutil.rmtree(root / "Clipart")
    return str(root / "Clipart")


NYU_LAYOUT = "expected {train,val}/{image,label,depth,normal}/<i>.npy"


@pytest.mark.parametrize(
    "name, damage, words",
    [
        ("nyuv2", _rm("train/depth/1.npy"), ["missing", NYU_LAYOUT]),
        ("nyuv2", _save("val/normal/1.npy", np.zeros((8, 8), np.float32)), ["shape (8, 8)", "8x8x3"]),
        ("nyuv2", _save("train/image/2.npy", np.zeros((8, 9, 3), np.float32)), ["8x9", "other images are 8x8"]),
        ("nyuv2", _write("val/label/0.npy", "not numpy"), ["not a readable .npy"]),
        ("cityscapes", _save("train/label_7/0.npy", np.full((8, 8), 12.0, np.float32)), ["label 12", "0..6 or -1"]),
        ("cityscapes", _rm("val/image/0.npy"), ["missing", "{train,val}/{image,label_7,depth}/<i>.npy"]),
        ("celeba", _rm("list_bbox_celeba.txt"), ["missing", "img_align_celeba"]),
        ("celeba", _write("list_attr_celeba.txt", "1\nSmiling Young\n000001.jpg 1 1\n"), ["column 1 is 'Smiling'", "5_o_Clock_Shadow"]),
        ("office_home", _no_domain, ["missing", "<root>/{Art,Clipart,Product,Real World}/<class>/<image>"]),
        ("office_home", _class_mismatch, ["not in every domain"]),
        ("office_home", _empty_class, ["no images"]),
        ("office_home", _write("Art/a/a_0.jpg", "not an image"), ["not a readable image"]),
    ],
)
def test_malformed_folder_gives_one_clear_error(tmp_path, name, damage, words):
    culprit = _break(tmp_path, name, damage)
    opts = {"verify_md5": False} if name == "celeba" else {}
    with pytest.raises(ConfigError) as err:
        get_benchmark(name, data_root=str(tmp_path / name), **opts)
    message = str(err.value)
    assert message.startswith(f"data_root: {name}: ") and culprit in message, message
    for w in words:
        assert w in message, message


def test_celeba_md5_check_names_the_file(folders):
    with pytest.raises(ConfigError, match="list_attr_celeba.txt fails torchvision's MD5 check.*verify_md5: false"):
        get_benchmark("celeba", data_root=str(folders["celeba"]))


def test_benchmark_options_in_the_flat_config(folders):
    cfg = TrialConfig.from_dict({"benchmark": "nyuv2", "val_fraction": 0.25, "backbone": "resnet18"})
    assert cfg.benchmark_options["val_fraction"] == 0.25 and cfg.benchmark_options["num_workers"] == 0
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"benchmark": "nyuv2", "verify_md5": False})  # an option of celeba, not nyuv2
    assert err.value.field == "verify_md5" and "val_fraction" in str(err.value)
    for bad in ({"val_fraction": 1.5}, {"backbone": "vgg16"}, {"num_workers": -1}):
        with pytest.raises(ConfigError) as err:
            TrialConfig.from_dict({"benchmark": "nyuv2", **bad})
        assert err.value.field == next(iter(bad))
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        get_benchmark("office31", data_root=str(folders["office31"]), val_fraction=0.5, test_fraction=0.5)


def test_reference_files_use_the_meters_names(folders):
    for name in ("nyuv2", "cityscapes"):
        ref = load_reference_file(name)
        assert set(ref["splits"]) == {"test"} and ref["source"]
        bench = BENCHMARKS[name](data_root=str(folders[name]))
        assert {t.name: set(t.metrics) for t in bench.task_specs()} == {t: set(m) for t, m in ref["splits"]["test"].items()}
        json.dumps(ref)


# ----------------------------------------------------------------------------- metrics by hand
def test_segmentation_meter_uses_one_confusion_matrix_over_the_split():
    meter = SegmentationMeter(3)

    def logits(labels):
        return torch.nn.functional.one_hot(torch.tensor(labels), 3).float().T.reshape(1, 3, 1, -1)

    # Batch 1: targets [0, 0, 1, -1], predictions [0, 1, 1, 2]; batch 2: targets [1, 1], predictions [1, 0].
    meter.update(logits([0, 1, 1, 2]), torch.tensor([[[0, 0, 1, -1]]]))
    meter.update(logits([1, 0]), torch.tensor([[[1, 1]]]))
    # Labelled pixels: (t,p) = (0,0) (0,1) (1,1) (1,1) (1,0).  Class 0: TP 1, FP 1, FN 1 -> 1/3;
    # class 1: TP 2, FP 1, FN 1 -> 2/4; class 2 never occurs in labelled pixels: skipped.
    out = meter.compute()
    assert out["miou"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert out["pixacc"] == pytest.approx(3 / 5)


def test_depth_meter_over_valid_pixels():
    meter = DepthMeter()
    meter.update(torch.tensor([[[[1.0, 2.0, 9.0]]]]), torch.tensor([[[[2.0, 2.0, 0.0]]]]))
    meter.update(torch.tensor([[[[5.0]]]]), torch.tensor([[[[4.0]]]]))
    out = meter.compute()  # valid errors 1, 0, 1 with targets 2, 2, 4
    assert out["abs_err"] == pytest.approx(2 / 3)
    assert out["rel_err"] == pytest.approx((0.5 + 0 + 0.25) / 3)


def test_normal_meter_angles():
    angles = [0.0, 10.0, 20.0, 40.0, 90.0]
    target = torch.zeros(1, 3, 1, len(angles) + 1)
    target[0, 2, 0, : len(angles)] = 1.0  # all targets (0, 0, 1); the last pixel is invalid (zero vector)
    pred = torch.zeros_like(target)
    for i, a in enumerate(angles):
        r = math.radians(a)
        pred[0, :, 0, i] = 3.0 * torch.tensor([math.sin(r), 0.0, math.cos(r)])  # not unit: normalised by the meter
    pred[0, 0, 0, -1] = 1.0
    meter = NormalMeter()
    meter.update(pred[..., :3], target[..., :3])
    meter.update(pred[..., 3:], target[..., 3:])
    out = meter.compute()
    assert out["mean"] == pytest.approx(32.0, abs=1e-4)
    assert out["median"] == pytest.approx(20.0, abs=0.011)
    assert (out["within_11_25"], out["within_22_5"], out["within_30"]) == pytest.approx((2 / 5, 3 / 5, 3 / 5))


def test_binary_accuracy_meter():
    meter = BinaryAccuracyMeter()
    meter.update(torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1.0, 1.0, 0.0]))
    assert meter.compute() == {"accuracy": pytest.approx(1 / 3)}


def test_dense_losses_mean_over_valid_pixels():
    pred = torch.tensor([[[[1.0, 3.0, 7.0]]]])
    assert depth_loss(pred, torch.tensor([[[[2.0, 1.0, 0.0]]]])).item() == pytest.approx(1.5)
    unit = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])  # pixels (1,0,0) and (0,1,0)
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])  # second pixel invalid
    assert normal_loss(unit, target).item() == pytest.approx(0.0)
    assert normal_loss(-unit, target).item() == pytest.approx(2.0)
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # [1, 2 classes, 1, 2]
    ce = torch.nn.functional.cross_entropy(logits[..., :1], torch.tensor([[[0]]]))
    assert segmentation_loss(logits, torch.tensor([[[0, -1]]])).item() == pytest.approx(ce.item())
    assert segmentation_loss(logits, torch.tensor([[[-1, -1]]])).item() == 0.0  # no labelled pixel: 0, not NaN


@pytest.mark.parametrize("via", ["--data-root", ENV_DATA_ROOT])
def test_user_references_beside_the_data_give_validation_delta_m(tmp_path, monkeypatch, via):
    # `python -m mtlsearch.references --data-root DIR` (or with $MTLSEARCH_DATA_ROOT=DIR) writes
    # DIR/mtlsearch_references.json from real single-task runs, never the packaged cityscapes.json;
    # trials on that folder then get val/delta_m as well as test/delta_m.
    import json
    import shutil

    from mtlsearch.references import reference_path
    from mtlsearch.references.__main__ import main as make_references

    root = write_dense(tmp_path / "cityscapes", (32, 48), {"train": 3, "val": 2}, ["label_7", "depth"], 7, depth_2d=True)
    folder = ["--data-root", str(root)] if via == "--data-root" else []
    if via == ENV_DATA_ROOT:
        monkeypatch.setenv(ENV_DATA_ROOT, str(root))
    packaged = reference_path("cityscapes").read_bytes()
    assert (
        make_references(
            [
                "--benchmark",
                "cityscapes",
                *folder,
                "--epochs",
                "1",
                "--lrs",
                "0.001",
                "--seeds",
                "0",
                "--batch-size",
                "2",
                "--option",
                "val_fraction=0.34",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert reference_path("cityscapes").read_bytes() == packaged
    data = json.loads((root / "mtlsearch_references.json").read_text())
    assert data["benchmark"] == "cityscapes" and set(data["splits"]["val"]) == {"segmentation", "depth"}
    assert f"--data-root {root}" in data["command"]
    cfg = {
        "benchmark": "cityscapes",
        "data_root": str(root),
        "method": "ew",
        "max_epochs": 1,
        "batch_size": 2,
        "device": "cpu",
        "val_fraction": 0.34,
    }
    (result,) = list(Trainer(cfg).run())
    assert "val/delta_m" in result and "test/delta_m" in result
    shutil.rmtree(root)


def test_generate_cli_rejects_a_bad_size(tmp_path, capsys):
    from mtlsearch.benchmarks.generate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["nyuv2", str(tmp_path / "x"), "--size", "big"])
    assert exit_info.value.code == 2 and "expected HxW" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
