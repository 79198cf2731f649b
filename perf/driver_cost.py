"""What one trial costs the launcher's driver in its stores, without Ray: the searcher's and the MLflow
callback's calls for N one-epoch trials, replayed in order on real stores, per study storage (prints a table).

    python perf/driver_cost.py [--trials 300] [--studies journal sqlite] [--workdir DIR]

Per trial, as Ray Tune makes them on the driver's loop: the searcher's ``suggest`` (Optuna's ask: a new trial,
its parameters, its Ray trial id), the MLflow callback's trial start (the run, its params), one result to the
searcher (an intermediate value) and to MLflow (the epoch's metrics), the searcher's completion (attributes,
report, tell) and MLflow's end (tags, status).  The same ``synthetic`` space as ``perf/trial_cost.py``
(random sampler, p and lr), the MLflow store a SQLite file, the Optuna study either the journal file (the
default, :mod:`mtlsearch.studies`) or a SQLite database (``--optuna-storage sqlite:///``, and searches made
before the journal).  Printed: milliseconds per trial of each call and in all (after 10 trials not counted:
imports, caches), and the driver's RSS after 10% and 100% of the trials.  Bare Ray Tune makes none of these calls: this is the part of
``perf/trial_cost.py``'s launcher/bare ratio that the stores account for.  A measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("journal", "sqlite")
#: Trials run first and not counted (imports, SQLAlchemy's statement cache).
WARMUP = 10
CALLS = ("searcher: suggest", "MLflow: trial start", "searcher: result", "MLflow: result", "searcher: complete", "MLflow: trial end")
SPACE = """
name: driver_cost
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 10000, max_epochs: 1}
scheduler: {type: fifo}
searcher: {type: optuna, sampler: random, seed: 0}
params:
  method: gemtl
  p: {uniform: [0.0, 1.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  optimizer: adam
  seed: 0
"""
#: One epoch's result as the trainable reports it (the keys the callback logs; the values do not matter).
RESULT = {
    "val/delta_m": -1.0,
    "test/delta_m": -1.2,
    "train/loss": 0.5,
    "val/task0/mse": 0.3,
    "val/task1/mse": 0.2,
    "epoch": 1,
    "training_iteration": 1,
    "time_total_s": 1.0,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python perf/driver_cost.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=300, help="trials per study storage (default: %(default)s)")
    p.add_argument("--studies", nargs="+", default=list(STUDIES), help=f"which of {', '.join(STUDIES)} (default: both)")
    p.add_argument("--workdir", help="keep the stores here (default: a temporary folder, removed)")
    p.add_argument("--child", choices=STUDIES, help=argparse.SUPPRESS)
    p.add_argument("--child-dir", help=argparse.SUPPRESS)
    return p


def check(args: argparse.Namespace) -> str | None:
    if not 10 <= args.trials <= 10_000:
        return f"--trials: expected 10 to 10000, got {args.trials}"
    bad = [s for s in args.studies if s not in STUDIES]
    if bad:
        return f"--studies: unknown {', '.join(bad)}; choose from {', '.join(STUDIES)}"
    return None


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Trial:
    """The fields of a Ray Tune trial that the MLflow callback reads."""

    def __init__(self, trial_id: str, config: dict[str, Any]):
        self.trial_id, self.config, self.last_result, self.checkpoint = trial_id, config, None, None


def child(args: argparse.Namespace) -> int:
    """One study storage in this process: prints one line ``ms/trial per call ... rss10 rss100``."""
    import yaml

    from mtlsearch import console, optuna_search, spaces, studies, tracking

    console.quiet_libraries()
    folder = Path(args.child_dir)
    space = spaces.parse_space(yaml.safe_load(SPACE), str(folder / "driver_cost.yaml"), SPACE)
    tracker = tracking.Tracker(f"sqlite:///{folder / 'mlflow.db'}", "driver_cost", str(folder / "ray" / "driver_cost"))
    tracker.start_search(space, {})
    url = str(folder / "optuna.journal") if args.child == "journal" else f"sqlite:///{folder / 'optuna.db'}"
    searcher = optuna_search.make_searcher(space, studies.open_storage(url, "driver_cost", fresh=True), "driver_cost")
    searcher.link_runs(tracker.trial_runs)
    callback = tracking.make_callback(tracker, space.metric, space.max_epochs)
    totals = [0.0] * len(CALLS)
    rss_10 = float("nan")
    for i in range(-WARMUP, args.trials):  # the first trials import and compile what the rest reuse: not counted
        trial_id = f"t{i + WARMUP:06d}"
        clock = [time.perf_counter()]
        config = searcher.suggest(trial_id) or {}
        clock.append(time.perf_counter())
        trial = _Trial(trial_id, config)
        callback.on_trial_start(0, [], trial)
        clock.append(time.perf_counter())
        searcher.on_trial_result(trial_id, RESULT)
        clock.append(time.perf_counter())
        callback.on_trial_result(0, [], trial, RESULT)
        clock.append(time.perf_counter())
        trial.last_result = RESULT
        searcher.on_trial_complete(trial_id, RESULT)
        clock.append(time.perf_counter())
        callback.on_trial_complete(0, [], trial)
        clock.append(time.perf_counter())
        for k in range(len(CALLS)):
            totals[k] += (clock[k + 1] - clock[k]) if i >= 0 else 0.0
        if i + 1 == max(1, args.trials // 10):
            rss_10 = _rss_mib()
    rss_100 = _rss_mib()
    print(" ".join(f"{1000 * t / args.trials:.3f}" for t in totals), f"{rss_10:.1f}", f"{rss_100:.1f}")
    return 0


def table(rows: list[list[str]]) -> str:
    header = ["study", *CALLS, "all (ms/trial)", "RSS@10% MiB", "RSS@100% MiB"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.child:
        return child(args)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="driver_cost-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    try:
        for study in args.studies:
            folder = work / study
            folder.mkdir(parents=True)
            argv = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                study,
                "--child-dir",
                str(folder),
                "--trials",
                str(args.trials),
            ]
            out = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"error: the {study} run failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                return 1
            values = out.stdout.strip().splitlines()[-1].split()
            per_call = [float(v) for v in values[: len(CALLS)]]
            rows.append(
                [study, *(f"{v:.2f}" for v in per_call), f"{sum(per_call):.2f}", f"{float(values[-2]):.0f}", f"{float(values[-1]):.0f}"]
            )
        print(f"{args.trials} one-epoch trials' store calls on the driver, no Ray (load average {load} at the start)")
        print(table(rows))
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
