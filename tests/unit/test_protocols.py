"""Published protocols (mtlsearch.protocols): the SegNet-MTAN model against the released code's size,
each protocol end to end on generated data with its scores recomputed by hand, the released
augmentation and evaluation, ``protocol:`` in a space, ``reproduce`` and its refusals."""

import json

import numpy as np
import pytest
import torch

from mtlsearch.benchmarks.generate import generate
from mtlsearch.protocols import get_protocol, load_published

from helpers.protocols import NYU_BASE, NYU_ORDER, NYU_SIGN


def released_delta_m(values):
    """The released ``delta_fn``: mean over all metrics of (-1)^SIGN (a - BASE) / BASE, in percent."""
    return float(((-1.0) ** NYU_SIGN * (np.asarray(values) - NYU_BASE) / NYU_BASE).mean() * 100)


# ------------------------------------------------------------------------------ the model
def released_mtan_count(num_tasks, outputs):
    """Parameters of the released ``SegNetMtan``, layer by layer from its ``__init__``: conv_layer =
    3x3 conv + BN, att_layer = 1x1 conv, BN, 1x1 conv, BN; pred = 3x3 conv (64->64) + 1x1 conv."""

    def conv(a, b):
        return 9 * a * b + b + 2 * b

    def att(a, b, c):
        return a * b + b + 2 * b + b * c + c + 2 * c

    f = [64, 128, 256, 512, 512]
    encoder_block = conv(3, 64) + sum(conv(f[i], f[i + 1]) for i in range(4))
    decoder_block = conv(64, 64) + sum(conv(f[i + 1], f[i]) for i in range(4))
    conv_block_enc = conv(64, 64) + conv(128, 128) + sum(2 * conv(f[i + 1], f[i + 1]) for i in range(1, 4))
    conv_block_dec = conv(64, 64) + conv(64, 64) + sum(2 * conv(f[i], f[i]) for i in range(1, 4))
    encoder_block_att = conv(64, 128) + sum(conv(f[i + 1], f[i + 2]) for i in range(3)) + conv(512, 512)
    decoder_block_att = conv(64, 64) + sum(conv(f[i + 1], f[i]) for i in range(3)) + conv(512, 512)
    encoder_att = att(64, 64, 64) + sum(att(2 * f[i + 1], f[i + 1], f[i + 1]) for i in range(4))
    decoder_att = att(128, 64, 64) + sum(att(f[i + 1] + f[i], f[i], f[i]) for i in range(4))
    preds = sum(9 * 64 * 64 + 64 + 64 * c + c for c in outputs)
    return (
        encoder_block
        + decoder_block
        + conv_block_enc
        + conv_block_dec
        + encoder_block_att
        + decoder_block_att
        + num_tasks * (encoder_att + decoder_att)
        + preds
    )


@pytest.mark.parametrize("benchmark,outputs,size", [("nyuv2", (13, 1, 3), (32, 64)), ("cityscapes", (7, 1), (32, 64))])
def test_segnet_mtan_has_the_released_parameter_count_and_output_shapes(tmp_path, benchmark, outputs, size):
    from mtlsearch.benchmarks import get_benchmark

    generate(benchmark, tmp_path, train=2, test=1, size=size)
    bench = get_benchmark(benchmark, data_root=str(tmp_path), model="segnet_mtan")
    model = bench.build_model(bench.task_names)
    expected = released_mtan_count(len(outputs), outputs)
    assert expected == {"nyuv2": 44_229_073, "cityscapes": 41_206_984}[benchmark]
    assert sum(p.numel() for p in model.parameters()) == expected
    # Shared = everything but the heads (the released shared_parameters(): names without "pred").
    assert sum(p.numel() for p in model.shared_parameters()) == expected - sum(9 * 64 * 64 + 64 + 65 * c for c in outputs)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert [tuple(out[t].shape) for t in bench.task_names] == [(1, c, *size) for c in outputs]
    if "normal" in out:
        assert torch.allclose(out["normal"].norm(dim=1), torch.ones(1, *size), atol=1e-5)


def test_celeba_cnn_has_famos_parameter_count():
    from mtlsearch.benchmarks.models import CelebACNN

    convs = [(3, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    expected = sum(9 * a * b + 2 * b for a, b in convs) + 2 * (512 * 512 + 2 * 512)  # bias-free convs/linears + BN
    model = CelebACNN()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 512)


# ------------------------------------------------------------------------------ augmentation
def test_released_augmentation_scales_depth_and_flips_normals():
    from mtlsearch.benchmarks.dense import SCALES, scale_crop_flip

    h, w = 32, 48
    x = torch.rand(6, 3, h, w)
    label = torch.randint(-1, 5, (6, h, w))
    depth = torch.full((6, 1, h, w), 2.0)
    normal = torch.zeros(6, 3, h, w)
    normal[:, 0], normal[:, 2] = 0.6, 0.8
    g = torch.Generator().manual_seed(0)
    x2, y2 = scale_crop_flip(x, {"segmentation": label, "depth": depth, "normal": normal}, g)
    assert x2.shape == x.shape and y2["segmentation"].shape == label.shape and y2["segmentation"].dtype == label.dtype
    assert set(y2["segmentation"].unique().tolist()) <= set(label.unique().tolist())  # nearest: no new labels
    per_image_depth = {round(float(d.unique().item()), 5) for d in y2["depth"]}  # nearest: exact  # depth / scale, one scale per image
    assert per_image_depth <= {round(2.0 / s, 5) for s in SCALES} and len(per_image_depth) > 1
    xs = [round(float(n[0].mean()), 4) for n in y2["normal"]]
    assert all(torch.allclose(n[0], torch.full_like(n[0], v), atol=1e-5) for n, v in zip(y2["normal"], xs))
    assert set(xs) == {0.6, -0.6}  # a flip negates the x component (both happen among 6 images with this seed)
    # Same generator state, same augmentation (a restored trainer augments as an uninterrupted one).
    x3, _ = scale_crop_flip(x, {"segmentation": label, "depth": depth, "normal": normal}, torch.Generator().manual_seed(0))
    assert torch.equal(x2, x3)


# ------------------------------------------------------------------------------ end to end, scores by hand
def nashmtl_config(root, **extra):
    protocol = get_protocol("nashmtl")
    cfg = protocol.settings("nyuv2")
    cfg.update(
        image_size="32x64",
        mtan_width=0.125,
        benchmark="nyuv2",
        data_root=str(root),
        method="ew",
        protocol=protocol.tag,
        last_k=2,
        max_epochs=2,
        seed=0,
        device="cpu",
    )
    cfg.update(extra)
    return cfg


def test_nashmtl_protocol_end_to_end_scores_the_last_k_epochs_against_cagrad(tmp_path):
    from mtlsearch.benchmarks.dense import AugmentedSplit
    from mtlsearch.trainer import Trainer

    generate("nyuv2", tmp_path, train=4, test=3, size=(32, 64), seed=1)
    trainer = Trainer(nashmtl_config(tmp_path))
    assert set(trainer.splits) == {"train", "test"} and len(trainer.splits["train"]) == 4  # no val split, as released
    assert isinstance(trainer.splits["train"], AugmentedSplit)
    assert (trainer.config.batch_size, trainer.config.lr, trainer.config.lr_step_size) == (2, 1e-4, 100)
    results = list(trainer.run())
    assert len(results) == 2 and not any(k.startswith("val/") for k in results[-1])
    values = [[r[f"test/{t}/{m}"] for t, m in NYU_ORDER] for r in results]
    # Epoch 1: the Δm of its own metrics; epoch 2: of the mean of epochs 1 and 2 (last-k, k = 2).
    assert results[0]["test/delta_m_nashmtl"] == pytest.approx(released_delta_m(values[0]), rel=1e-9)
    assert results[1]["test/delta_m_nashmtl"] == pytest.approx(released_delta_m(np.mean(values, axis=0)), rel=1e-9)
    assert results[1]["test/delta_m_nashmtl"] != pytest.approx(released_delta_m(values[1]), rel=1e-6)

    # The released evaluation: depth and normal metrics averaged over test batches of 2 (here 2 + 1
    # images), segmentation from one confusion matrix over the split.
    model = trainer.model.eval()
    images = torch.stack([torch.from_numpy(np.load(tmp_path / "val" / "image" / f"{i}.npy")).permute(2, 0, 1) for i in range(3)])
    depth = torch.stack([torch.from_numpy(np.load(tmp_path / "val" / "depth" / f"{i}.npy")).permute(2, 0, 1) for i in range(3)])
    with torch.no_grad():
        preds = [model(images[s])["depth"] for s in (slice(0, 2), slice(2, 3))]
    per_batch = []
    for pred, target in zip(preds, (depth[:2], depth[2:])):
        valid = target != 0
        per_batch.append(float((pred - target).abs()[valid].sum() / valid.sum()))
    assert trainer.evaluate("test")["depth"]["abs_err"] == pytest.approx(np.mean(per_batch), rel=1e-5)

    # The score's history is trainer state: train 1 epoch, restore, train 1 more = 2 straight.
    again = Trainer(nashmtl_config(tmp_path, max_epochs=1))
    first = list(again.run())
    state = again.state_dict()
    resumed = Trainer(nashmtl_config(tmp_path))
    resumed.load_state_dict(state)
    second = list(resumed.run())
    assert first[0]["test/delta_m_nashmtl"] == pytest.approx(results[0]["test/delta_m_nashmtl"], rel=1e-6)
    assert second[0]["test/delta_m_nashmtl"] == pytest.approx(results[1]["test/delta_m_nashmtl"], rel=1e-6)


def test_libmtl_protocol_end_to_end_scores_delta_p_against_the_folders_references(tmp_path):
    from mtlsearch.trainer import Trainer

    generate("nyuv2", tmp_path, train=4, test=2, size=(32, 48), seed=2)
    protocol = get_protocol("libmtl")
    cfg = protocol.settings("nyuv2")
    cfg.update(
        image_size="32x48",
        backbone="resnet18",
        benchmark="nyuv2",
        data_root=str(tmp_path),
        method="ew",
        protocol=protocol.tag,
        max_epochs=2,
        seed=0,
        device="cpu",
        batch_size=2,
    )
    assert (cfg["weight_decay"], cfg["lr_step_size"], cfg["augment"]) == (1e-5, 100, False)
    # Without single-task references in the folder there is no Δp (never a made-up reference).
    assert "test/delta_p_libmtl" not in next(Trainer(cfg).run())
    ref = {
        "segmentation": {"miou": 0.5, "pixacc": 0.7},
        "depth": {"abs_err": 0.4, "rel_err": 0.2},
        "normal": {"mean": 22.0, "median": 15.0, "within_11_25": 0.4, "within_22_5": 0.65, "within_30": 0.75},
    }
    (tmp_path / "mtlsearch_references.json").write_text(json.dumps({"benchmark": "nyuv2", "splits": {"test": ref}}))
    results = list(Trainer(cfg).run())
    for r in results:  # last_k = 1: each epoch's own metrics; per task, then over tasks; higher is better
        per_task = [
            np.mean(
                [(1 if m in ("miou", "pixacc") or m.startswith("within") else -1) * (r[f"test/{t}/{m}"] - v) / v for m, v in ms.items()]
            )
            for t, ms in ref.items()
        ]
        assert r["test/delta_p_libmtl"] == pytest.approx(100 * np.mean(per_task), rel=1e-9)


# ------------------------------------------------------------------------------ spaces
def test_protocol_in_a_space_sets_values_beneath_the_space_own():
    from mtlsearch.spaces import parse_space, with_protocol

    space = parse_space(
        {
            "benchmark": "nyuv2",
            "protocol": "nashmtl",
            "budget": {"num_samples": 4},
            "params": {"method": {"choice": ["ew", "cagrad"]}, "lr": {"loguniform": [1e-5, 1e-3]}, "batch_size": 4},
        },
        "s.yaml",
    )
    consts = space.constants()
    assert space.protocol == "nashmtl@1" and consts["protocol"] == "nashmtl@1"
    assert space.max_epochs == 200 and consts["model"] == "segnet_mtan" and consts["augment"] is True
    assert consts["batch_size"] == 4 and "lr" not in consts  # the space's own values win
    assert consts["val_fraction"] == 0.1  # a search selects on val: a validation split is held out
    cagrad = [p for p in space.params if p.name == "cagrad_c"]
    assert cagrad and cagrad[0].when == {"method": "cagrad"} and cagrad[0].args == 0.4
    probes = space.probe_configs()
    assert {p["method"]: p.get("cagrad_c") for p in probes} == {"ew": None, "cagrad": 0.4}
    city = with_protocol(space, "nashmtl", benchmark="cityscapes")
    assert city.constants()["image_size"] == "128x256" and city.constants()["batch_size"] == 4


def test_published_numbers_cover_protocols_table():
    data = load_published("nashmtl")
    rows = {(r["method"], r["benchmark"]): r for r in data["results"]}
    assert len(rows) == 54 and rows[("famo", "nyuv2")]["value"] == -4.10 and rows[("ntkmtl", "cityscapes")]["value"] == 1.92
    assert all({"value", "protocol", "source", "table", "source_kind"} <= set(r) for r in rows.values())
    # "-" in the table, 3.29 quoted from FAMO's CelebA table by PROTOCOLS.md: read there since (FAMO Table 3).
    assert rows[("graddrop", "celeba")]["source_kind"] == "protocol" and rows[("graddrop", "celeba")]["table"].startswith("FAMO Table 3")
    nyu = data["single_task"]["nyuv2"]["metrics"]
    assert [nyu[t][m] for t, m in NYU_ORDER] == NYU_BASE.tolist()


# ------------------------------------------------------------------------------ reproduce
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--protocol", "nashmt", "--benchmark", "nyuv2", "--method", "ew"], "--protocol: unknown protocol 'nashmt'"),
        (
            ["--protocol", "nashmtl", "--benchmark", "office31", "--method", "ew"],
            "--benchmark: protocol 'nashmtl' does not cover benchmark 'office31'",
        ),
        (["--protocol", "libmtl", "--benchmark", "cityscapes", "--method", "ew"], "does not cover benchmark 'cityscapes'"),
        (["--protocol", "nashmtl", "--benchmark", "nyuv2", "--method", "nope"], "--method: unknown method 'nope'"),
        (["--protocol", "nashmtl", "--benchmark", "nyuv2", "--method", "ew", "--set", "lr"], "--set: expected KEY=VALUE"),
    ],
)
def test_reproduce_refuses_bad_input_in_one_line(argv, needle, capsys):
    from mtlsearch.reproduce import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_reproduce_refuses_a_data_folder_at_the_wrong_image_size(tmp_path, capsys):
    from mtlsearch.launch import main as launch_main
    from mtlsearch.reproduce import main

    generate("nyuv2", tmp_path / "data", train=2, test=1, size=(32, 64))
    assert main(["--protocol", "nashmtl", "--benchmark", "nyuv2", "--method", "ew", "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image_size: nyuv2: the images in" in err and "are 32x64, but image_size asks for 288x384" in err
    # The launcher: the same refusal for --protocol, and an unknown protocol in a space file.
    space = tmp_path / "s.yaml"
    space.write_text("benchmark: nyuv2\nprotocol: nashmtl\nobjective: {metric: val/segmentation/miou}\nparams: {method: ew}\n")
    assert launch_main(["--space", str(space), "--data-root", str(tmp_path / "data")]) == 2
    assert "288x384" in capsys.readouterr().err
    space.write_text("benchmark: nyuv2\nobjective: {metric: val/segmentation/miou}\nparams: {method: ew}\n")
    assert launch_main(["--space", str(space), "--protocol", "nashmtl", "--data-root", str(tmp_path / "data")]) == 2
    assert "are 32x64, but image_size asks for 288x384" in capsys.readouterr().err
    assert launch_main(["--space", str(space), "--protocol", "libmtl", "--benchmark", "cityscapes"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--protocol: protocol 'libmtl' does not cover benchmark 'cityscapes'" in err
    space.write_text("benchmark: nyuv2\nprotocol: nash\nparams: {method: ew}\n")
    assert launch_main(["--space", str(space)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{space}: protocol: unknown protocol 'nash'" in err
