"""Train one balancing method under several optimizers and draw the task dominance (rAU) of the
shared layers, one heatmap per optimizer side by side.

    python -m mtlsearch.dominance --benchmark synthetic --epochs 30 --out docs/dominance.png

reproduces the AdaTask paper's observation: under Adam the shared layers are dominated by the task
with the largest loss scale; under Adam with AdaTask every task gets a real share.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from mtlsearch.dominance import table_from_metrics
from mtlsearch.dominance.heatmap import draw_heatmaps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtlsearch.dominance",
        description="Train one balancing method under several optimizers and draw the task dominance (rAU: "
        "each task's share of the shared layers' squared updates) as heatmaps side by side; prints the rAU "
        "table and the test metrics.",
    )
    parser.add_argument("--benchmark", default="synthetic", help="built-in benchmark, or your own module:Class (default: %(default)s)")
    parser.add_argument(
        "--method", default="ew", help="balancing method (a linear one: its tasks' shares must be defined) (default: %(default)s)"
    )
    parser.add_argument(
        "--optimizers", nargs="+", default=["adam", "adam_adatask"], metavar="OPT", help="one heatmap per optimizer (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per optimizer (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    parser.add_argument(
        "--beta", type=float, default=0.9, help="decay of the AU average (dominance_beta), in [0, 1) (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the data order (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    parser.add_argument(
        "--out", default="dominance.png", help="PNG file to write (relative to the working directory) (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from mtlsearch.errors import ConfigError
    from mtlsearch.trainer import Trainer

    panels: dict[str, dict[str, dict[str, float]]] = {}
    finals: dict[str, dict[str, float]] = {}
    for opt in args.optimizers:
        config = {
            "benchmark": args.benchmark,
            "method": args.method,
            "optimizer": opt,
            "lr": args.lr,
            "max_epochs": args.epochs,
            "seed": args.seed,
            "device": args.device,
            "dominance_interval": args.epochs,
            "dominance_beta": args.beta,
        }
        try:
            trainer = Trainer(config)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        result: dict[str, float] = {}
        for result in trainer.run():  # noqa: B007 - the last epoch's result is kept
            pass
        panels[f"{args.method} + {opt}"] = table_from_metrics(result)
        finals[opt] = result

    titles = list(panels)
    first = panels[titles[0]]
    tasks = list(next(iter(first.values())))
    print(f"rAU per shared layer (beta={args.beta}) after {args.epochs} epochs of {args.method} on {args.benchmark}")
    header = f"{'layer':<12} {'task':<14}" + "".join(f"{o:>16}" for o in args.optimizers)
    print(header)
    for layer in first:
        for task in tasks:
            print(f"{layer:<12} {task:<14}" + "".join(f"{panels[t][layer][task]:>16.3f}" for t in titles))
    metric_keys = [k for k in finals[args.optimizers[0]] if k.startswith("test/") and k != "test/delta_m"]
    print("\ntest metrics")
    for key in metric_keys + (["test/delta_m"] if "test/delta_m" in finals[args.optimizers[0]] else []):
        print(f"{key:<27}" + "".join(f"{finals[o][key]:>16.4g}" for o in args.optimizers))
    draw_heatmaps(
        panels,
        args.out,
        title=f"task dominance (rAU, beta={args.beta}) of the shared layers, {args.benchmark}, {args.epochs} epochs, lr={args.lr:g}",
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
