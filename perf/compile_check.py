"""The ``compile`` step options leave results unchanged on the device they are meant for (prints a table).

    python perf/compile_check.py [--device cuda] [--epochs 2] [--size 64x96]

Trains ``ew`` (and ``gemtl``) on generated NYUv2-format data with ``compile: off``, ``encoder`` and, on
CUDA, ``encoder_graphs``, the same seed, and prints the last epoch's validation metrics side by side with
the largest relative difference to ``off``; with ``--amp off`` the runs are fp32, where only the order
of floating-point operations differs.  A measurement script, not a test: the CPU tests
(``tests/unit/test_adatask_flat.py``) check the same with the aot_eager backend, which skips inductor's code
generation; this runs inductor itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlsearch.benchmarks.generate import generate, parse_size
from mtlsearch.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=parse_size, default=(64, 96))
    parser.add_argument("--train", type=int, default=32, help="generated training examples")
    parser.add_argument("--amp", default="off", choices=["auto", "bf16", "off"])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--methods", nargs="*", default=["ew", "gemtl"])
    args = parser.parse_args(argv)
    options = ["off", "encoder", *(["encoder_graphs"] if args.device == "cuda" else [])]
    worst_all = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        generate("nyuv2", tmp, train=args.train, test=max(2, args.train // 4), size=args.size, seed=0)
        for method in args.methods:
            finals: dict[str, dict[str, float]] = {}
            seconds: dict[str, float] = {}
            for option in options:
                cfg = {
                    "benchmark": "nyuv2",
                    "data_root": tmp,
                    "backbone": args.backbone,
                    "device": args.device,
                    "method": method,
                    "max_epochs": args.epochs,
                    "batch_size": 4,
                    "lr": 1e-4,
                    "seed": 0,
                    "amp": args.amp,
                    "compile": option,
                }
                start = time.perf_counter()
                *_, last = Trainer(cfg).run()
                seconds[option] = time.perf_counter() - start
                finals[option] = {k: v for k, v in last.items() if k.startswith("val/")}
            print(f"\n{method}, {args.epochs} epochs, amp {args.amp}, {args.device}: val metrics by compile option")
            print(f"{'metric':<28}" + "".join(f"{o:>16}" for o in options))
            worst = 0.0
            for key in finals["off"]:
                row = [finals[o][key] for o in options]
                worst = max(worst, *(abs(v - row[0]) / max(abs(row[0]), 1e-8) for v in row[1:]))
                print(f"{key:<28}" + "".join(f"{v:>16.5f}" for v in row))
            print(f"{'seconds (with compilation)':<28}" + "".join(f"{seconds[o]:>16.1f}" for o in options))
            print(f"largest relative difference to off: {worst:.2e}")
            worst_all = max(worst_all, worst)
    print(f"\ncompile_check: largest relative difference over all methods {worst_all:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
