"""Platform overhead: the same trial's epoch time through Ray Tune against the bare ``Trainer`` (prints a table).

    python perf/overhead.py [--space gemtl_p] [--epochs 6] [--repeats 3] [--param p=1.0 lr=0.003]
                            [--cpus N] [--cpus-per-trial 1]

One trial configuration (the space's constants, each searched parameter at the middle of its range
unless ``--param`` fixes it) runs ``--repeats`` times each way, the order alternating (tune first, then
bare first, ...):

* **tune**: a one-trial search through the launcher's own code (``mtlsearch.launch.main``: Ray Tune,
  the trainable that checkpoints and reports every epoch, the MLflow callback, the progress lines),
  FIFO scheduler, on one Ray the script starts once (``--cpus``; its start is timed apart);
* **bare**: a fresh Python process that builds ``mtlsearch.trainer.Trainer`` from the same config (the
  one the tune trial received) with the same torch thread count and, by default, the same niceness
  as the trial's Ray worker (Ray starts its workers at nice 15: on a loaded machine that alone makes
  them several times slower than a process at nice 0; ``--same-nice no`` to see it), and iterates
  ``Trainer.run()``: no Ray, no checkpoint, no MLflow.

Epoch time is measured the same way in both: the wall time between the first and the last epoch's
result as the caller receives it (the driver's Tune callback; the loop over ``Trainer.run()``),
divided by ``epochs - 1``, so start-up is left out of it; Ray's own ``time_this_iter_s`` (epochs 2..)
is shown beside it.  "to epoch 1" is the time from the start (``launch.main`` called; the bare process
spawned) to the first epoch's result, and "wall" the whole run (the search with MLflow's writes; the
bare process's exit).  Target: the median epoch-time ratio tune / bare <= ``--target`` (1.10).
MLflow runs and Ray's results go to a temporary folder (``--workdir`` to keep them).  This is a
measurement script, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtlsearch.errors import ConfigError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/overhead.py",
        description="Epoch time of one trial through Ray Tune (a one-trial search of the launcher) against the "
        "bare Trainer (same config, data and epochs); prints a table with the ratio.",
    )
    p.add_argument("--space", default="gemtl_p", help="bundled space name or YAML path whose trial to run (default: %(default)s)")
    p.add_argument(
        "--param",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="fix a searched parameter (YAML value); others: the middle of their range, a choice's first value",
    )
    p.add_argument("--epochs", type=int, default=6, help="epochs of the trial (>= 2) (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each way (default: %(default)s)")
    p.add_argument("--cpus", type=float, help="CPUs of the local Ray (default: all of this machine's)")
    p.add_argument(
        "--cpus-per-trial", type=float, default=1, help="CPUs of the trial; the bare run gets as many torch threads (default: %(default)s)"
    )
    p.add_argument(
        "--target", type=float, default=1.10, help="target: median ratio tune / bare epoch time at most this (default: %(default)s)"
    )
    p.add_argument("--workdir", help="keep MLflow runs and Ray results here (default: a temporary folder, removed)")
    p.add_argument("--verbose", action="store_true", help="show the launcher's own output (default: in WORKDIR/launch.log)")
    p.add_argument(
        "--same-nice",
        choices=["yes", "no"],
        default="yes",
        help="run the bare trainer at the niceness of Ray's trial worker (Ray starts workers niced; on a "
        "loaded machine that alone slows them) (default: %(default)s)",
    )
    p.add_argument("--bare-config", help=argparse.SUPPRESS)  # internal: the bare child process
    p.add_argument("--bare-nice", type=int, help=argparse.SUPPRESS)
    return p


# ------------------------------------------------------------------------------ the trial's config
def middle(param) -> Any:
    """The middle of a searched parameter's range, a choice's first value (:meth:`mtlsearch.distributions.Distribution.middle`)."""
    try:
        return param.dist.middle()
    except NotImplementedError:
        raise ConfigError(
            f"parameter {param.name!r} ({param.kind}) needs a value: give --param {param.name}=VALUE", field="--param"
        ) from None


def fixed_params(space, items: list[str]) -> dict[str, str]:
    """``--set params.NAME=VALUE`` values (YAML text) that make every parameter of the space a constant."""
    import yaml

    given = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"expected NAME=VALUE, got {item!r}", field="--param")
        given[name] = value
    searched = {p.name: p for p in space.params if p.kind != "value"}
    unknown = set(given) - set(searched)
    if unknown:
        raise ConfigError(
            f"{sorted(unknown)} not searched in space {space.name!r}; searched: {', '.join(searched) or 'none'}", field="--param"
        )
    out = {}
    for name, p in searched.items():
        if p.when:
            raise ConfigError(
                f"space {space.name!r}: parameter {name!r} is conditional; choose a space without conditional parameters", field="--space"
            )
        out[name] = given[name] if name in given else yaml.safe_dump(middle(p), default_flow_style=True).strip().removesuffix("...").strip()
    return out


# ------------------------------------------------------------------------------ the two ways
def make_recorder():
    from ray.tune import Callback

    class Recorder(Callback):
        def __init__(self):
            self.arrivals: list[float] = []
            self.iter_s: list[float] = []
            self.config: dict[str, Any] | None = None
            self.nice: int | None = None

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.arrivals.append(time.perf_counter())
            self.iter_s.append(float(result.get("time_this_iter_s", math.nan)))
            self.config = dict(trial.config)
            if self.nice is None and result.get("pid"):
                with contextlib.suppress(OSError):  # the worker's niceness: Ray starts its workers niced
                    self.nice = os.getpriority(os.PRIO_PROCESS, int(result["pid"]))

    return Recorder()


def run_tune(args, fixed: dict[str, str], workdir: Path, index: int, log) -> dict[str, Any]:
    from mtlsearch import launch

    argv = [
        "--space",
        args.space,
        "--num-samples",
        "1",
        "--max-epochs",
        str(args.epochs),
        "--quiet",
        "--cpus-per-trial",
        str(args.cpus_per_trial),
        "--tracking-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--storage",
        str(workdir / "ray_results"),
        "--experiment",
        "overhead",
        "--name",
        f"overhead-{index}",
        "--set",
        "scheduler.type=fifo",
        "--set",
        "searcher.type=random",
    ]
    for name, value in fixed.items():
        argv += ["--set", f"params.{name}={value}"]
    recorder = make_recorder()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"\n=== tune {index}: python -m mtlsearch.launch {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        code = launch.main(argv, callbacks=[recorder])
        wall = time.perf_counter() - start
    if code != 0 or len(recorder.arrivals) != args.epochs:
        raise SystemExit(
            f"error: the one-trial search ended with exit code {code} after {len(recorder.arrivals)} "
            f"of {args.epochs} epochs; its output: {getattr(log, 'name', 'above')}"
        )
    t = recorder.arrivals
    return {
        "epoch_s": (t[-1] - t[0]) / (len(t) - 1),
        "iter_s": statistics.mean(recorder.iter_s[1:]),
        "first_s": t[0] - start,
        "wall_s": wall,
        "config": recorder.config,
        "nice": recorder.nice,
    }


def run_bare(args, config: dict[str, Any], nice: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-config", json.dumps(config), "--cpus-per-trial", str(args.cpus_per_trial)]
    if nice is not None:
        cmd += ["--bare-nice", str(nice)]
    spawned, start = time.time(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"error: the bare trainer failed (exit code {out.returncode}): {out.stderr.strip()[-2000:]}")
    child = json.loads(out.stdout.strip().splitlines()[-1])
    t = child["epochs_at"]
    return {
        "epoch_s": (t[-1] - t[0]) / (len(t) - 1),
        "iter_s": math.nan,
        "first_s": child["first_epoch_at"] - spawned,
        "wall_s": wall,
        "nice": child["nice"],
    }


def bare_child(config_json: str, cpus: float, nice: int | None) -> int:
    """In a fresh process: the trainer alone, as ``trainables.train_mtl`` builds it, timed per epoch."""
    if nice is not None and nice > os.nice(0):
        os.nice(nice - os.nice(0))  # the trial worker's priority (a loaded machine favours the less nice)
    import torch

    from mtlsearch.trainer import Trainer

    config = json.loads(config_json)
    if config.get("device", "auto") == "auto":
        config["device"] = "cpu"  # as the trainable decides for a trial without a GPU
    torch.set_num_threads(max(1, int(cpus)))
    trainer = Trainer(config)
    epochs_at, first_epoch_at = [], None
    for _ in trainer.run():
        epochs_at.append(time.perf_counter())
        first_epoch_at = first_epoch_at or time.time()  # wall clock: the parent's spawn time is on the same clock
    print(json.dumps({"epochs_at": epochs_at, "first_epoch_at": first_epoch_at, "nice": os.nice(0)}))
    return 0


# ------------------------------------------------------------------------------ main
def worker_env(console) -> dict[str, Any]:
    """The launcher's runtime_env for a local Ray, and this checkout on the workers' path (installed or not)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"worker_process_setup_hook": console.WORKER_SETUP_HOOK, "env_vars": {"PYTHONPATH": path}}


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.bare_config:
        return bare_child(args.bare_config, args.cpus_per_trial, args.bare_nice)
    from mtlsearch import spaces

    try:
        if args.epochs < 2:
            raise ConfigError(
                f"must be >= 2 (epoch time is measured between the first and the last epoch), got {args.epochs}", field="--epochs"
            )
        if args.repeats < 1:
            raise ConfigError(f"must be >= 1, got {args.repeats}", field="--repeats")
        if not args.cpus_per_trial > 0:
            raise ConfigError(f"must be > 0, got {args.cpus_per_trial}", field="--cpus-per-trial")
        space = spaces.load_space(args.space)
        fixed = fixed_params(space, args.param)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import ray

    from mtlsearch import console

    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mtlsearch_overhead_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = sys.stdout if args.verbose else open(workdir / "launch.log", "a")
    console.quiet_libraries()
    start = time.perf_counter()
    ray.init(
        num_cpus=args.cpus or os.cpu_count(),
        include_dashboard=False,
        logging_level=console.ray_logging_level(),
        runtime_env=worker_env(console),
    )
    ray_start = time.perf_counter() - start
    print(
        f"Trial: {space.name} ({space.benchmark}), {args.epochs} epochs, "
        + ", ".join(f"{k}={v}" for k, v in fixed.items())
        + f"; {args.cpus_per_trial:g} CPU(s)/torch threads; "
        f"Ray started once in {ray_start:.1f} s (not in the times below); work folder {workdir}",
        flush=True,
    )
    rows, ratios, walls = [], [], []
    config, nice = None, None
    try:
        for i in range(args.repeats):
            order = ["tune", "bare"] if i % 2 == 0 or config is None else ["bare", "tune"]
            got = {}
            for way in order:
                if way == "tune":
                    got["tune"] = run_tune(args, fixed, workdir, i, log)
                    config, nice = got["tune"]["config"], got["tune"]["nice"]
                else:
                    got["bare"] = run_bare(args, config, nice if args.same_nice == "yes" else None)
            b, t = got["bare"], got["tune"]
            ratios.append(t["epoch_s"] / b["epoch_s"])
            walls.append(t["wall_s"] / b["wall_s"])
            rows.append(
                [
                    str(i),
                    ",".join(order),
                    f"{b['nice']}/{t['nice']}",
                    f"{b['epoch_s']:.3f}",
                    f"{t['epoch_s']:.3f}",
                    f"{ratios[-1]:.3f}",
                    f"{t['iter_s']:.3f}",
                    f"{b['first_s']:.1f}",
                    f"{t['first_s']:.1f}",
                    f"{b['wall_s']:.1f}",
                    f"{t['wall_s']:.1f}",
                    f"{walls[-1]:.2f}",
                ]
            )
            print(f"  repeat {i}: bare {b['epoch_s']:.3f} s/epoch, tune {t['epoch_s']:.3f} s/epoch", flush=True)
    finally:
        ray.shutdown()
        if log is not sys.stdout:
            log.close()
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    header = [
        "repeat",
        "order",
        "nice bare/tune",
        "bare s/epoch",
        "tune s/epoch",
        "ratio",
        "tune time_this_iter_s",
        "bare to epoch 1 s",
        "tune to epoch 1 s",
        "bare wall s",
        "tune wall s",
        "wall ratio",
    ]
    rows.append(
        [
            "median",
            "",
            "",
            f"{statistics.median(float(r[3]) for r in rows):.3f}",
            f"{statistics.median(float(r[4]) for r in rows):.3f}",
            f"{statistics.median(ratios):.3f}",
            "",
            "",
            "",
            f"{statistics.median(float(r[9]) for r in rows):.1f}",
            f"{statistics.median(float(r[10]) for r in rows):.1f}",
            f"{statistics.median(walls):.2f}",
        ]
    )
    print()
    print("Epoch time = (last epoch's result - first epoch's result) / (epochs - 1), as the caller receives them")
    print(table(header, rows))
    ratio = statistics.median(ratios)
    print(
        f"\nTarget: epoch time through Ray Tune <= {args.target:.2f} x the bare Trainer's: median ratio {ratio:.3f} "
        f"({(ratio - 1):+.1%}) over {len(ratios)} repeat(s) -> {'MET' if ratio <= args.target else 'NOT MET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
