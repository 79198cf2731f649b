"""Regenerate the single-task references of a built-in benchmark.

    python -m mtlsearch.references --benchmark multidigits
    python -m mtlsearch.references --space gemtl_p      # the benchmark, epochs and batch size of that search

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

Its defaults are those of the search that needs the references: with ``--space`` the space's benchmark,
``budget.max_epochs``, constant ``batch_size``, benchmark options and data folder (a flag given as well
wins, with a warning naming both numbers where the epochs differ: Δm would then compare trials of one
length with references of another).  Before training it prints an estimate of the total time (the first
run's first epoch, timed, times the runs and epochs) and then one line per run: task, lr, seed, epochs,
time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from mtlsearch.benchmarks import get_benchmark
from mtlsearch.trainer import Trainer

#: The installed ``mtlsearch`` package: references are never written inside it unless ``--out`` says so.
PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: Defaults without ``--space`` (those of the packaged references' runs).
DEFAULT_EPOCHS = 12
DEFAULT_BATCH_SIZE = 64


def _score(metrics: dict[str, float], lower: dict[str, bool]) -> float:
    # Larger is better: the mean over metrics of the signed value (one metric per built-in task).
    return statistics.mean(-v if lower[k] else v for k, v in metrics.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtlsearch.references",
        description="Train each task of a benchmark alone (learning rate tuned on validation, seeds averaged) and "
        "write the single-task references that Δm is measured against.",
    )
    parser.add_argument(
        "--benchmark", help="built-in benchmark, or your own module:Class / file.py:Class (default: the --space's benchmark)"
    )
    parser.add_argument(
        "--space",
        metavar="NAME|PATH",
        help="the search space these references are for: its benchmark, budget.max_epochs, constant batch_size, "
        "benchmark options and data folder become the defaults (default: none, --benchmark and the defaults below)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"training epochs of each single-task run (default: the --space's budget.max_epochs, else {DEFAULT_EPOCHS})",
    )
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
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"training batch size (default: the --space's constant batch_size, else {DEFAULT_BATCH_SIZE})",
    )
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


@dataclass
class Settings:
    """The runs to make: what the flags say, filled in from ``--space``; ``notes``: lines to print first."""

    benchmark: str
    given: str  # the benchmark as the user named it (for the stored command)
    epochs: int
    batch_size: int
    lrs: list[float]
    seeds: list[int]
    options: dict[str, Any]
    data_root: str | None
    notes: list[str] = field(default_factory=list)


def settings(args: argparse.Namespace, options: dict[str, Any]) -> Settings:
    """The runs' settings: the flags, else the ``--space``'s values, else the defaults (a ConfigError for
    a missing benchmark or a bad space)."""
    from mtlsearch.errors import ConfigError
    from mtlsearch.plugins import absolute

    notes: list[str] = []
    space = None
    if args.space:
        from mtlsearch.spaces import load_space

        space = load_space(args.space, validate=False)
    if args.benchmark is None and space is None:
        raise ConfigError("name the benchmark (--benchmark NAME) or the search it is for (--space NAME|PATH)", field="--benchmark")
    given = args.benchmark or (space.benchmark if space is not None else "")
    folder = Path(str(space.path)).parent if space is not None and args.benchmark is None else None
    benchmark = absolute(given, folder)  # a user's ./file.py:Class (in the space: relative to its file)
    if space is not None and args.benchmark is not None and absolute(space.benchmark, Path(str(space.path)).parent) != benchmark:
        notes.append(
            f"warning: --benchmark {args.benchmark} is not the benchmark of space {space.name!r} ({space.benchmark}); "
            "its other settings are used all the same"
        )
    constants = space.constants() if space is not None else {}
    epochs = args.epochs
    if space is not None:
        if epochs is None:
            epochs = space.max_epochs
            notes.append(f"epochs: {epochs}, the budget.max_epochs of space {space.name!r}")
        elif epochs != space.max_epochs:
            notes.append(
                f"warning: --epochs {epochs} differs from budget.max_epochs {space.max_epochs} of space {space.name!r}: "
                f"Δm would compare its {space.max_epochs}-epoch trials with {epochs}-epoch single-task runs"
            )
    elif epochs is None:
        epochs = DEFAULT_EPOCHS
        notes.append(f"epochs: {epochs} (the default); --space NAME takes a search's budget.max_epochs instead")
    if epochs < 1:
        raise ConfigError(f"must be >= 1, got {epochs}", field="--epochs")
    batch_size = args.batch_size or constants.get("batch_size") or DEFAULT_BATCH_SIZE
    space_options: dict[str, Any] = {}
    if space is not None:
        from mtlsearch.benchmarks import benchmark_class

        known = benchmark_class(benchmark).options
        space_options = {k: v for k, v in constants.items() if k in known}
    data_root = args.data_root or (space.data_root if space is not None else None)
    return Settings(
        benchmark=benchmark,
        given=given,
        epochs=int(epochs),
        batch_size=int(batch_size),
        lrs=list(args.lrs),
        seeds=list(args.seeds),
        options={**space_options, **options},
        data_root=data_root,
        notes=notes,
    )


def _timed_epochs(trainer: Trainer) -> Iterator[float]:
    """Train ``trainer`` to its end, yielding the seconds of each epoch."""
    last = time.perf_counter()
    for _ in trainer.run():
        now = time.perf_counter()
        yield now - last
        last = now


def estimate_line(runs: int, epochs: int, setup_s: float, epoch_s: float) -> str:
    """The line printed before training: the total from the first run's build and first epoch."""
    from mtlsearch.console import duration

    total = runs * (setup_s + epochs * epoch_s)
    return (
        f"Estimated time: about {duration(total)} for {runs} runs x {epochs} epochs "
        f"(one epoch took {epoch_s:.2f} s here after {setup_s:.2f} s to build the data and model; each run builds its own)"
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
    from mtlsearch.console import duration
    from mtlsearch.errors import ConfigError

    try:
        run = settings(args, options)
        bench = get_benchmark(run.benchmark, data_root=run.data_root, **run.options)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in run.notes:
        print(note, file=sys.stderr if note.startswith("warning:") else sys.stdout, flush=True)
    extra = {**run.options, **({"data_root": run.data_root} if run.data_root else {})}
    data_folder = None
    splits: dict[str, dict[str, dict[str, float]]] = {"val": {}, "test": {}}
    chosen = {}
    specs = bench.task_specs()
    total = len(specs) * len(run.lrs) * len(run.seeds)
    print(
        f"Single-task references of {run.given}: {len(specs)} tasks x {len(run.lrs)} learning rates x {len(run.seeds)} seeds "
        f"= {total} runs of {run.epochs} epochs (batch size {run.batch_size})",
        flush=True,
    )
    done = 0
    started = time.perf_counter()
    for spec in specs:
        best: tuple[float, float, dict[str, dict[str, float]]] | None = None
        for lr in run.lrs:
            runs = []
            for seed in run.seeds:
                t0 = time.perf_counter()
                trainer = Trainer(
                    {
                        "benchmark": run.benchmark,
                        "tasks": [spec.name],
                        "lr": lr,
                        "seed": seed,
                        "max_epochs": run.epochs,
                        "batch_size": run.batch_size,
                        "device": args.device,
                        **extra,
                    }
                )
                setup_s = time.perf_counter() - t0
                for i, epoch_s in enumerate(_timed_epochs(trainer)):
                    if done == 0 and i == 0:  # the first epoch of the first run times the rest
                        print(estimate_line(total, run.epochs, setup_s, epoch_s), flush=True)
                data_folder = getattr(trainer.benchmark, "root", None) or trainer.benchmark.data_root  # as Trainer reads it
                runs.append({s: trainer.evaluate(s)[spec.name] for s in ("val", "test")})
                done += 1
                print(
                    f"[{done}/{total}] task {spec.name} lr={lr:g} seed={seed} {run.epochs} epochs "
                    f"{time.perf_counter() - t0:.1f} s (elapsed {duration(time.perf_counter() - started)})",
                    flush=True,
                )
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
        f"python -m mtlsearch.references --benchmark {run.given} --epochs {run.epochs} "
        f"--lrs {' '.join(map(str, run.lrs))} --seeds {' '.join(map(str, run.seeds))} --batch-size {run.batch_size}"
        + "".join(f" --option {k}={v}" for k, v in run.options.items())
        + (f" --data-root {data_folder}" if data_folder else "")
    )
    from mtlsearch.references import reference_id

    data = {
        "benchmark": reference_id(run.benchmark),
        "command": command,
        "source": "single-task training with this project's trainer (each task alone, lr tuned on val)",
        "settings": {
            "epochs": run.epochs,
            "lrs": run.lrs,
            "seeds": run.seeds,
            "batch_size": run.batch_size,
            "optimizer": "adam",
            "chosen_lr": chosen,
            "options": run.options,
        },
        "splits": splits,
    }
    out, why = (args.out, "--out") if args.out else default_out(run.benchmark, data_folder)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out} ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
