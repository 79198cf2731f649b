"""The cost of k seeds in one trial against k single-seed trials (prints a table).

    python perf/seed_cost.py [--benchmark multidigits] [--method gemtl] [--ks 1 2 4] [--rounds 7]
                             [--threads 1] [--set KEY=VALUE ...] [--json FILE]

For each k, three ways to train k seeds of one configuration, on the CPU:

* **separate**: k single-seed trials (k :class:`~mtlsearch.trainer.Trainer`, one after another);
* **loop**: one trial of ``seeds: k`` training its seeds one after another
  (:class:`~mtlsearch.multiseed.MultiSeedTrainer`, ``batched=False``);
* **batched**: one trial of ``seeds: k`` training its seeds as one stacked model (where the config
  allows it: see :func:`mtlsearch.multiseed.loop_reason`).

Every setup is built once, then each round trains one epoch of every setup in a shuffled order
(``--rounds`` rounds, after one warm-up epoch each), so that a load that comes and goes falls on all
of them.  "s/epoch" is the median over rounds of one epoch's wall time (training and evaluation of
all k seeds); "x one seed" the median over rounds of the ratio to the one-seed trial's epoch of the
same round; "per seed" that ratio / k.  Target (issue 21): 4 seeds in one trial at most 2.5x one seed.
Data building is left out (a search builds its data once and every trial reads it).  This is a
measurement script, not a test: figures depend on the machine and its load (``uptime`` is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_K, TARGET_RATIO = 4, 2.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/seed_cost.py",
        description="Epoch time of k seeds in one trial (loop, batched) against k single-seed trials; prints a table.",
    )
    p.add_argument("--benchmark", default="multidigits", help="benchmark (default: %(default)s)")
    p.add_argument("--method", default="gemtl", help="balancing method (default: %(default)s)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4], help="seed counts (default: 1 2 4)")
    p.add_argument("--rounds", type=int, default=7, help="timed epochs of each setup (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as a trial with cpus_per_trial 1 (default: %(default)s)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other trial config keys (YAML values), e.g. p=0.5 lr=0.003")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p


def trial_config(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from mtlsearch.config import TrialConfig
    from mtlsearch.errors import ConfigError

    cfg: dict[str, Any] = {"benchmark": args.benchmark, "method": args.method, "device": "cpu", "max_epochs": 10_000}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE such as p=0.5, got {item!r}", field="--set")
        cfg[key] = yaml.safe_load(text)
    for k in args.ks:
        if k < 1:
            raise ConfigError(f"seed counts must be >= 1, got {k}", field="--ks")
    if args.rounds < 1 or args.threads < 1:
        raise ConfigError("must be >= 1", field="--rounds" if args.rounds < 1 else "--threads")
    TrialConfig.from_dict({**cfg, "seeds": max(args.ks)})  # bad keys or values: one line, exit 2
    return cfg


def setups(cfg: dict[str, Any], ks: list[int]) -> dict[tuple[int, str], Callable[[], None]]:
    """(k, way) -> one epoch of that setup (training and evaluation of its k seeds)."""
    from mtlsearch.benchmarks import cache
    from mtlsearch.config import TrialConfig
    from mtlsearch.multiseed import MultiSeedTrainer
    from mtlsearch.trainer import Trainer

    base = TrialConfig.from_dict(cfg)
    splits = cache.build_splits(Trainer(base).benchmark, base)  # built once, read by every setup

    def epoch_of(trainers: list[Any]) -> Callable[[], None]:
        def epoch() -> None:
            for t in trainers:
                t.epoch_result(t.train_epoch())

        return epoch

    out: dict[tuple[int, str], Callable[[], None]] = {}
    for k in sorted(set(ks)):
        out[(k, "separate")] = epoch_of([Trainer({**cfg, "seed": s}, splits=splits) for s in range(k)])
        if k > 1:
            out[(k, "loop")] = epoch_of([MultiSeedTrainer({**cfg, "seeds": k}, splits=splits, batched=False)])
            batched = MultiSeedTrainer({**cfg, "seeds": k}, splits=splits)
            if batched.mode == "batched":
                out[(k, "batched")] = epoch_of([batched])
            else:
                print(f"k={k}: no batched row ({batched.loop_reason})")
    return out


def measure(
    runs: dict[tuple[int, str], Callable[[], None]], rounds: int, seed: int = 0
) -> dict[tuple[int, str], list[tuple[float, float]]]:
    """Per setup, one epoch's (wall, CPU) seconds in each round (setups shuffled within a round; one
    warm-up epoch first).  CPU time is this process's: on a loaded machine it moves less than wall time."""
    for run in runs.values():
        run()
    order = list(runs)
    rng = random.Random(seed)
    times: dict[tuple[int, str], list[tuple[float, float]]] = {key: [] for key in runs}
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            w0, c0 = time.perf_counter(), time.process_time()
            runs[key]()
            times[key].append((time.perf_counter() - w0, time.process_time() - c0))
    return times


WAYS = ["separate", "loop", "batched"]


def table_rows(times: dict[tuple[int, str], list[tuple[float, float]]]) -> list[dict[str, Any]]:
    """One row per setup: median epoch time (wall, CPU), median ratio to the one-seed trial's epoch of the
    same round (wall, CPU, with the range over rounds), per seed."""
    one = times[(1, "separate")]
    rows = []
    for (k, way), ts in sorted(times.items(), key=lambda item: (item[0][0], WAYS.index(item[0][1]))):
        wall = [t / o for (t, _), (o, _) in zip(ts, one)]
        cpu = [t / o for (_, t), (_, o) in zip(ts, one)]
        rows.append(
            {
                "k": k,
                "way": "one seed" if k == 1 else ("k single-seed trials" if way == "separate" else f"one trial, {way}"),
                "s_per_epoch": statistics.median(t for t, _ in ts),
                "cpu_s_per_epoch": statistics.median(c for _, c in ts),
                "ratio": statistics.median(wall),
                "ratio_range": (min(wall), max(wall)),
                "cpu_ratio": statistics.median(cpu),
                "per_seed": statistics.median(wall) / k,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| k | how | wall s/epoch | x one seed (min-max) | CPU s/epoch | x one seed, CPU | per seed (wall) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lo, hi = r["ratio_range"]
        lines.append(
            f"| {r['k']} | {r['way']} | {r['s_per_epoch']:.3f} | {r['ratio']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{r['cpu_s_per_epoch']:.3f} | {r['cpu_ratio']:.2f} | {r['per_seed']:.2f} |"
        )
    return "\n".join(lines)


def target_line(rows: list[dict[str, Any]]) -> str:
    best = [r for r in rows if r["k"] == TARGET_K and r["way"].startswith("one trial")]
    if not best:
        return f"target ({TARGET_K} seeds in one trial <= {TARGET_RATIO}x one seed): not measured (--ks without {TARGET_K})"
    r = min(best, key=lambda r: r["ratio"])
    verdict = "met" if r["ratio"] <= TARGET_RATIO else "NOT met"
    return (
        f"target ({TARGET_K} seeds in one trial <= {TARGET_RATIO}x one seed): {verdict} "
        f"({r['way']}: {r['ratio']:.2f}x wall, {r['cpu_ratio']:.2f}x CPU)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mtlsearch.errors import ConfigError

    try:
        if 1 not in args.ks:
            raise ConfigError("the table's ratios are to one seed: include 1", field="--ks")
        cfg = trial_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"{args.benchmark}, {args.method}, CPU, {args.threads} torch thread(s), {args.rounds} rounds; "
        f"load average before: {' '.join(f'{x:.2f}' for x in load) if load else 'n/a'} on {os.cpu_count()} CPUs"
    )
    times = measure(setups(cfg, args.ks), args.rounds)
    rows = table_rows(times)
    print(format_table(rows))
    print(target_line(rows))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"load average after: {' '.join(f'{x:.2f}' for x in load)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
