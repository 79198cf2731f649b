"""Regenerate the single-task references of a built-in benchmark.

    python -m mtlsearch.references --benchmark multidigits

Each task is trained alone (same model, data and epoch budget as the searches), for every learning
rate of a small grid and several seeds; the learning rate with the best mean validation result is
kept (single-task baselines are tuned too, so Δm does not flatter multi-task methods), and the
seed-averaged validation and test metrics are written, together with this command and its settings,
to ``--out`` or else (never into the installed package):

* beside the data, ``DATA/mtlsearch_references.json``, when the benchmark reads a data folder
  (``--data-root`` or ``$MTLSEARCH_DATA_ROOT``): searches on that folder use it;
* beside a user's benchmark module, ``<Class>.references.json`` (``module:Class``): searches use it;
* otherwise into the working directory, ``<benchmark>.references.json``; to replace a built-in
  benchmark's packaged references in a checkout, pass ``--out mtlsearch/references/<benchmark>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Sequence

from mtlsearch.benchmarks import get_benchmark
from mtlsearch.trainer import Trainer

#: The installed ``mtlsearch`` package: references are never written inside it unless ``--out`` says so.
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _score(metrics: dict[str, float], lower: dict[str, bool]) -> float:
    # Larger is better: the mean over metrics of the signed value (one metric per built-in task).
    return statistics.mean(-v if lower[k] else v for k, v in metrics.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtlsearch.references",
        description="Train each task of a benchmark alone (learning rate tuned on validation, seeds averaged) and "
        "write the single-task references that Δm is measured against.",
    )
    parser.add_argument("--benchmark", required=True, help="built-in benchmark, or your own module:Class / file.py:Class")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs of each single-task run (default: %(default)s)")
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e-3, 3e-3, 1e-2],
        metavar="LR",
        help="learning rates tried per task (Adam); the best mean validation result is kept (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1], metavar="SEED", help="seeds averaged per learning rate (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: %(default)s)")
    parser.add_argument(
        "--data-root",
        help="folder of a user-supplied dataset (real benchmarks); default: $MTLSEARCH_DATA_ROOT where the benchmark reads a folder",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="benchmark option (YAML value), repeatable, e.g. --option backbone=resnet18 (default: none, the benchmark's own)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output file; default: DATA/mtlsearch_references.json beside the data "
        "the benchmark read, else <Class>.references.json beside a user's benchmark module, else "
        "<benchmark>.references.json in the working directory (never the installed package)",
    )
    return parser


def default_out(benchmark: str, data_folder: str | Path | None) -> tuple[Path, str]:
    """Where the references go without ``--out``, and why (for the output line): beside the data,
    beside a user's module, else the working directory; never inside the installed package."""
    from mtlsearch.references import USER_FILE, reference_id, reference_path

    if data_folder:
        return Path(data_folder) / USER_FILE, "beside the data: searches on this data folder use it"
    if ":" in benchmark:
        path = Path(str(reference_path(benchmark)))
        if not path.resolve().is_relative_to(PACKAGE_DIR):
            return path, "beside your benchmark's module: searches use it"
    name = f"{reference_id(benchmark)}.references.json"
    return Path.cwd() / name, (
        f"in the working directory; the packaged references are unchanged (in a checkout, "
        f"--out mtlsearch/references/{reference_id(benchmark)}.json replaces them)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    import yaml

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--option needs KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    from mtlsearch.errors import ConfigError
    from mtlsearch.plugins import absolute

    given = args.benchmark
    args.benchmark = absolute(args.benchmark)  # a user's ./file.py:Class
    try:
        bench = get_benchmark(args.benchmark, data_root=args.data_root, **options)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra = {**options, **({"data_root": args.data_root} if args.data_root else {})}
    data_folder = None
    splits: dict[str, dict[str, dict[str, float]]] = {"val": {}, "test": {}}
    chosen = {}
    for spec in bench.task_specs():
        best: tuple[float, float, dict[str, dict[str, float]]] | None = None
        for lr in args.lrs:
            runs = []
            for seed in args.seeds:
                trainer = Trainer(
                    {
                        "benchmark": args.benchmark,
                        "tasks": [spec.name],
                        "lr": lr,
                        "seed": seed,
                        "max_epochs": args.epochs,
                        "batch_size": args.batch_size,
                        "device": args.device,
                        **extra,
                    }
                )
                for _ in trainer.run():
                    pass
                data_folder = getattr(trainer.benchmark, "root", None) or trainer.benchmark.data_root  # as Trainer reads it
                runs.append({s: trainer.evaluate(s)[spec.name] for s in ("val", "test")})
            mean = {s: {m: statistics.mean(r[s][m] for r in runs) for m in runs[0][s]} for s in ("val", "test")}
            score = _score(mean["val"], dict(spec.metrics))
            print(f"{spec.name:>10} lr={lr:<8g} val={mean['val']} test={mean['test']}", flush=True)
            if best is None or score > best[0]:
                best = (score, lr, mean)
        assert best is not None  # --lrs has one value at least
        _, lr, mean = best
        chosen[spec.name] = lr
        for s in ("val", "test"):
            splits[s][spec.name] = mean[s]

    command = (
        f"python -m mtlsearch.references --benchmark {given} --epochs {args.epochs} "
        f"--lrs {' '.join(map(str, args.lrs))} --seeds {' '.join(map(str, args.seeds))} --batch-size {args.batch_size}"
        + "".join(f" --option {k}={v}" for k, v in options.items())
        + (f" --data-root {data_folder}" if data_folder else "")
    )
    from mtlsearch.references import reference_id

    data = {
        "benchmark": reference_id(args.benchmark),
        "command": command,
        "source": "single-task training with this project's trainer (each task alone, lr tuned on val)",
        "settings": {
            "epochs": args.epochs,
            "lrs": args.lrs,
            "seeds": args.seeds,
            "batch_size": args.batch_size,
            "optimizer": "adam",
            "chosen_lr": chosen,
            "options": options,
        },
        "splits": splits,
    }
    out, why = (args.out, "--out") if args.out else default_out(args.benchmark, data_folder)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out} ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
