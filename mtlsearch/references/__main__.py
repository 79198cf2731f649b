"""Regenerate the single-task references of a built-in benchmark.

    python -m mtlsearch.references --benchmark multidigits

Each task is trained alone (same model, data and epoch budget as the searches), for every learning
rate of a small grid and several seeds; the learning rate with the best mean validation result is
kept (single-task baselines are tuned too, so Δm does not flatter multi-task methods), and the
seed-averaged validation and test metrics are written to ``mtlsearch/references/<benchmark>.json``
together with this command and its settings.
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

OUT_DIR = Path(__file__).resolve().parent


def _score(metrics: dict[str, float], lower: dict[str, bool]) -> float:
    # Larger is better: the mean over metrics of the signed value (one metric per built-in task).
    return statistics.mean(-v if lower[k] else v for k, v in metrics.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlsearch.references", description=__doc__.splitlines()[1])
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-root", help="folder of a user-supplied dataset (real benchmarks)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="benchmark option (YAML value), e.g. --option backbone=resnet18")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, help="output file (default: DATA_ROOT/mtlsearch_references.json "
                        "with --data-root, else the packaged reference)")
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
    splits: dict[str, dict[str, dict[str, float]]] = {"val": {}, "test": {}}
    chosen = {}
    for spec in bench.task_specs():
        best: tuple[float, float, dict[str, dict[str, float]]] | None = None
        for lr in args.lrs:
            runs = []
            for seed in args.seeds:
                trainer = Trainer({"benchmark": args.benchmark, "tasks": [spec.name], "lr": lr, "seed": seed,
                                   "max_epochs": args.epochs, "batch_size": args.batch_size, "device": args.device, **extra})
                for _ in trainer.run():
                    pass
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

    command = (f"python -m mtlsearch.references --benchmark {given} --epochs {args.epochs} "
               f"--lrs {' '.join(map(str, args.lrs))} --seeds {' '.join(map(str, args.seeds))} --batch-size {args.batch_size}"
               + "".join(f" --option {k}={v}" for k, v in options.items())
               + (f" --data-root {args.data_root}" if args.data_root else ""))
    from mtlsearch.references import reference_id, reference_path

    data = {
        "benchmark": reference_id(args.benchmark),
        "command": command,
        "source": "single-task training with this project's trainer (each task alone, lr tuned on val)",
        "settings": {"epochs": args.epochs, "lrs": args.lrs, "seeds": args.seeds, "batch_size": args.batch_size,
                     "optimizer": "adam", "chosen_lr": chosen, "options": options},
        "splits": splits,
    }
    from mtlsearch.references import USER_FILE

    out = args.out or (Path(args.data_root) / USER_FILE if args.data_root else
                       Path(str(reference_path(args.benchmark))) if ":" in args.benchmark else OUT_DIR / f"{args.benchmark}.json")
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
