"""What the CPU test suite cannot see, run on a CUDA device (prints one line per check, exit 1 on a failure):

    python perf/cuda_smoke.py [--device cpu]   (cpu: checks 1 and 2 only, to try the script)

1. Checkpoint continuity on CUDA: 2 epochs, save, load into a fresh trainer, 2 more == 4 straight
   (the checkpoint is loaded with ``map_location`` = the GPU, as a resumed Ray trial does).
2. Every registered method, in each of its modes, and every optimizer with ``ew``: one epoch of
   ``multidigits`` on CUDA with the default settings (bf16 autocast, fused Adam), finite losses; and
   one epoch of a small convolutional NYUv2 model (channels_last) for each gradient method and mode,
   each optimizer, and the dominance tracker.
3. Held data respects a trial's share of the GPU: with ``device_share`` 1/4 a split larger than
   budget x share x total memory stays on disk, a smaller one is held.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlsearch.balancing import METHODS, GradBalancing
from mtlsearch.optim import OPTIMIZERS
from mtlsearch.trainer import Trainer, hold_on_device, split_bytes

failures = 0


def check(name: str, ok: bool, detail: str = "") -> None:
    global failures
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def continuity(cfg: dict) -> None:
    straight = list(Trainer(cfg).run())[-1]
    first = Trainer(cfg)
    list(first.run(2))
    with tempfile.TemporaryDirectory() as tmp:
        first.save(f"{tmp}/state.pt")
        resumed = Trainer(cfg)
        resumed.load(f"{tmp}/state.pt")
        last = list(resumed.run())[-1]
    # cuDNN/bf16 kernels need not be bitwise deterministic on a GPU: same result within a small tolerance.
    worst = max(abs(straight[k] - last[k]) / max(abs(straight[k]), 1e-6) for k in straight if k.startswith("val/"))
    check(f"continuity {cfg['method']}/{cfg['optimizer']}", worst < 0.05, f"max relative val difference {worst:.2e}")


def main() -> int:
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}")
    base = {"benchmark": "multidigits", "device": device, "lr": 3e-3, "max_epochs": 4}
    for extra in (
        {"method": "ew", "optimizer": "adam"},
        {"method": "gemtl", "p": 0.5, "optimizer": "adam"},
        {"method": "imtl_h", "optimizer": "adam_adatask"},
        {"method": "nash_mtl", "grad_mode": "param", "optimizer": "adam"},
    ):
        try:
            continuity({**base, **extra})
        except Exception as err:  # report and go on: every check runs
            check(f"continuity {extra}", False, f"{type(err).__name__}: {err}")

    runs = [
        {"method": m, "optimizer": "adam", **({"grad_mode": mode} if mode else {})}
        for m, cls in sorted(METHODS.items())
        for mode in (cls.modes if issubclass(cls, GradBalancing) else (None,))
    ]
    runs += [{"method": "ew", "optimizer": o} for o in OPTIMIZERS if o != "adam"]
    for extra in runs:
        start = time.perf_counter()
        try:
            result = next(Trainer({**base, "max_epochs": 1, **extra}).run())
            finite = all(math.isfinite(v) for k, v in result.items() if k.startswith("train/"))
            check(f"one epoch {extra}", finite, f"{time.perf_counter() - start:.1f} s")
        except Exception as err:
            check(f"one epoch {extra}", False, f"{type(err).__name__}: {err}")

    from mtlsearch.benchmarks.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate("nyuv2", tmp, train=8, test=2, size=(32, 48), seed=0)
        # A convolutional model: on CUDA it is channels_last and Adam is fused, so every gradient that a
        # method writes must match its parameter's layout and dtype.
        conv = {"benchmark": "nyuv2", "data_root": tmp, "device": device, "backbone": "resnet18", "batch_size": 4, "max_epochs": 1}
        for extra in [r for r in runs if r.get("grad_mode") or r["optimizer"] != "adam"] + [
            {"method": "ew", "optimizer": "adam", "dominance_interval": 1}
        ]:
            try:
                result = next(Trainer({**conv, **extra}).run())
                check(f"nyuv2 conv epoch {extra}", all(math.isfinite(v) for k, v in result.items() if k.startswith("train/")))
            except Exception as err:
                check(f"nyuv2 conv epoch {extra}", False, f"{type(err).__name__}: {err}")
        if device != "cuda":
            print(f"{failures} failure(s)")
            return 1 if failures else 0
        trainer = Trainer({"benchmark": "nyuv2", "data_root": tmp, "device": "cuda", "backbone": "resnet18", "batch_size": 4})
        held = {k: type(v).__name__ for k, v in trainer.splits.items()}
        check("small splits held on the GPU", all(v == "TensorSplit" for v in held.values()), str(held))
        from mtlsearch.benchmarks import get_benchmark

        splits = get_benchmark("nyuv2", data_root=tmp).load_splits(0)
        size = split_bytes(splits["train"])
        _, total = torch.cuda.mem_get_info()
        budget = 0.9 * size / (0.25 * total)  # a budget the train split just exceeds at a quarter share
        kept = hold_on_device({"train": splits["train"]}, torch.device("cuda"), budget=budget, share=0.25)
        check("a quarter share keeps a too-large split on disk", type(kept["train"]).__name__ != "TensorSplit")
        kept = hold_on_device({"train": splits["train"]}, torch.device("cuda"), budget=budget * 1.2, share=0.25)
        check("a quarter share holds a split that fits", type(kept["train"]).__name__ == "TensorSplit")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
