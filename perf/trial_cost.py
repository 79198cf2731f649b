"""Per-trial cost at scale: N short trials through the launcher, through bare Ray Tune calling the same
``Trainer``, and through bare Ray Tune with a no-op trainable (prints a table).

    python perf/trial_cost.py [--trials 1000] [--epochs 1] [--cpus 2] [--concurrent 4] [--rounds 1]
                              [--settle 1.0] [--modes launcher bare noop] [--searcher random|tpe] [--no-ui]
                              [--workdir DIR]

Each mode runs in a fresh Python process (so each pays its own imports and Ray start, as a user does), on
the same trials: the ``synthetic`` benchmark, GeMTL with p ~ U(0, 1) and lr ~ logU(1e-3, 1e-2), ``--epochs``
each, FIFO, ``--concurrent`` at a time on a Ray of ``--cpus`` CPUs:

* **launcher**: ``python -m mtlsearch.launch`` on a space file with those settings (its Optuna searcher,
  ``--searcher``, its trainable with checkpoints, the data cache, the MLflow callback into a SQLite store,
  the console; ``--quiet``);
* **bare**: ``ray.tune.Tuner`` with Tune's own random search, a function trainable that builds
  ``mtlsearch.trainer.Trainer`` from the same config and ``tune.report``\\ s every epoch: no MLflow, no
  Optuna, no checkpoint;
* **noop**: the same Tuner with a trainable that only reports: Ray Tune's own cost per trial.

Printed per mode: wall time, seconds per trial, the ratio to bare Ray Tune, and the driver's resident memory
(RSS, read from /proc every 0.25 s) when 10% and when 100% of the trials had ended, and its peak (which
includes the launcher's end: the results table, the report).  Target: launcher / bare <= 1.5 at 1000
one-epoch trials on 2 cores, the driver's RSS flat (100% within 1.25x of 10%).

On a small shared machine the ratio follows the load as much as the code (a mode that starts while the
previous one's processes still wind down pays for them).  Before each mode the script waits (at most 120 s)
until the 1-minute load average is below ``--settle`` and prints the load each mode started at; ``--rounds N``
runs the modes N times, every other round in reverse order, and judges the median of the rounds' ratios.

After the (last) launcher's run, an ``mlflow server`` on its store answers the trial view's query (the
search's trials, best first, 100 rows: what ``mtlsearch ui``'s page loads) and the script prints how long
it took (target: < 5 s).  A measurement, not a test: figures depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("launcher", "bare", "noop")
PROGRESS = "progress.txt"  # one line per ended trial, written by the child's Tune callback


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python perf/trial_cost.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000, help="trials per mode (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial (default: %(default)s)")
    p.add_argument("--cpus", type=float, default=2, help="CPUs of the Ray each mode starts (default: %(default)s)")
    p.add_argument("--concurrent", type=int, default=4, help="trials at a time (default: %(default)s)")
    p.add_argument("--modes", nargs="+", default=list(MODES), help=f"which of {', '.join(MODES)} to run (default: all)")
    p.add_argument("--searcher", choices=("random", "tpe"), default="random", help="the launcher's Optuna sampler (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="run the modes this many times, alternating their order (default: %(default)s)")
    p.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="before each mode, wait for the 1-min load below this, at most 120 s (default: %(default)s)",
    )
    p.add_argument("--no-ui", action="store_true", help="skip the MLflow trial-view timing")
    p.add_argument("--workdir", help="keep the runs here (default: a temporary folder, removed)")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--child-dir", help=argparse.SUPPRESS)
    return p


def check(args: argparse.Namespace) -> str | None:
    """One line naming the bad option, or None."""
    if args.trials < 1 or args.trials > 100_000:
        return f"--trials: expected 1 to 100000, got {args.trials}"
    if args.epochs < 1 or args.epochs > 100:
        return f"--epochs: expected 1 to 100, got {args.epochs}"
    if args.rounds < 1 or args.rounds > 20:
        return f"--rounds: expected 1 to 20, got {args.rounds}"
    if args.concurrent < 1 or args.cpus <= 0:
        return f"--concurrent and --cpus must be positive, got {args.concurrent} and {args.cpus}"
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        return f"--modes: unknown {', '.join(bad)}; choose from {', '.join(MODES)}"
    return None


SPACE = """
name: trial_cost
benchmark: synthetic
objective: {{metric: val/delta_m, mode: max}}
budget: {{num_samples: {trials}, max_epochs: {epochs}}}
scheduler: {{type: fifo}}
searcher: {{type: optuna, sampler: {searcher}, seed: 0}}
resources: {{cpus_per_trial: {cpus_per_trial}}}
params:
  method: gemtl
  p: {{uniform: [0.0, 1.0]}}
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  optimizer: adam
  seed: 0
"""


def progress_callback(folder: Path) -> Any:
    from ray.tune import Callback

    path = folder / PROGRESS

    class Progress(Callback):
        def _ended(self, trial: Any) -> None:
            with open(path, "a") as f:
                f.write(f"{trial.trial_id} {time.time()}\n")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._ended(trial)

    return Progress()


# ----------------------------------------------------------------------------------------- children
def child(args: argparse.Namespace) -> int:
    folder = Path(args.child_dir)
    cpt = args.cpus / args.concurrent
    if args.child == "launcher":
        from mtlsearch.launch import main as launch

        space = folder / "trial_cost.yaml"
        space.write_text(textwrap.dedent(SPACE.format(trials=args.trials, epochs=args.epochs, searcher=args.searcher, cpus_per_trial=cpt)))
        import ray

        ray.init(num_cpus=int(args.cpus) if float(args.cpus).is_integer() else args.cpus, include_dashboard=False, log_to_driver=False)
        argv = ["--space", str(space), "--storage", str(folder / "ray"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
        return launch([*argv, "--name", "trial_cost", "--quiet"], callbacks=[progress_callback(folder)])

    import ray
    from ray import tune

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    epochs = args.epochs

    def noop(config: dict[str, Any]) -> None:
        for epoch in range(1, epochs + 1):
            tune.report({"val/delta_m": 0.0, "epoch": epoch})

    def bare(config: dict[str, Any]) -> None:
        from mtlsearch.trainer import Trainer

        trainer = Trainer(config)
        for result in trainer.run(epochs):
            tune.report(result)

    space = {"benchmark": "synthetic", "method": "gemtl", "optimizer": "adam", "seed": 0, "max_epochs": epochs}
    space.update({"p": tune.uniform(0.0, 1.0), "lr": tune.loguniform(1e-3, 1e-2)})
    tuner = tune.Tuner(
        tune.with_resources(noop if args.child == "noop" else bare, {"cpu": cpt}),
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=args.trials, max_concurrent_trials=args.concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(folder / "ray"), name=args.child, verbose=0, callbacks=[progress_callback(folder)]),
    )
    grid = tuner.fit()
    errors = sum(r.error is not None for r in grid)
    print(json.dumps({"trials": len(grid), "errors": errors}))
    return 1 if errors else 0


# ----------------------------------------------------------------------------------------- parent
def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _ended(folder: Path) -> int:
    try:
        return sum(1 for _ in open(folder / PROGRESS))
    except OSError:
        return 0


def settle(limit: float, wait_s: float = 120.0) -> float:
    """Wait until the 1-minute load average is below ``limit`` (at most ``wait_s``); the load then."""
    deadline = time.time() + wait_s
    while os.getloadavg()[0] >= limit and time.time() < deadline:
        time.sleep(2)
    return os.getloadavg()[0]


def run_mode(args: argparse.Namespace, mode: str, work: Path, round_: int = 1) -> dict[str, Any]:
    folder = work / (mode if args.rounds == 1 else f"{mode}-{round_}")
    folder.mkdir(parents=True)
    load = settle(args.settle)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--child-dir", str(folder)]
    argv += ["--trials", str(args.trials), "--epochs", str(args.epochs), "--cpus", str(args.cpus), "--concurrent", str(args.concurrent)]
    argv += ["--searcher", args.searcher]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    start = time.time()
    log = open(folder / "child.log", "w")
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    rss_10 = rss_100 = peak = None
    while proc.poll() is None:
        rss = _rss_mib(proc.pid)
        if rss is not None:
            peak = max(peak or 0.0, rss)
            ended = _ended(folder)
            if rss_10 is None and ended >= max(1, args.trials // 10):
                rss_10 = rss
            if rss_100 is None and ended >= args.trials:
                rss_100 = rss
        time.sleep(0.25)
    wall = time.time() - start
    log.close()
    return {
        "mode": mode,
        "round": round_,
        "load": load,
        "code": proc.returncode,
        "wall_s": wall,
        "ended": _ended(folder),
        "rss_10": rss_10,
        "rss_100": rss_100,
        "rss_peak": peak,
        "log": folder / "child.log",
        "folder": folder,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_trial_view(store: Path, repeats: int = 3) -> tuple[float, int]:
    """(median seconds, rows) of the trial view's query against an ``mlflow server`` on ``store``."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{store}", "--artifacts-destination", str(store.parent / "artifacts")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)

        def post(endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
            req = urllib.request.Request(
                f"{base}/api/2.0/mlflow/{endpoint}", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read() or b"{}")

        exp = post("experiments/search", {"max_results": 10, "filter": "name = 'trial_cost'"})["experiments"][0]["experiment_id"]
        parent = post("runs/search", {"experiment_ids": [exp], "filter": "tags.`mtlsearch.kind` = 'search'", "max_results": 1})["runs"][0]
        query = {
            "experiment_ids": [exp],
            "filter": f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'",
            "order_by": ["metrics.`val/delta_m` DESC"],
            "max_results": 100,
        }
        times, rows = [], 0
        for _ in range(repeats):
            t0 = time.time()
            rows = len(post("runs/search", query).get("runs", []))
            times.append(time.time() - t0)
        return statistics.median(times), rows
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)])


def report(args: argparse.Namespace, runs: list[dict[str, Any]], view: tuple[float, int] | None, load: str) -> str:
    """The table (one row per mode and round) and the verdicts: the median over rounds of launcher / bare."""
    mib = lambda v: "-" if v is None else f"{v:.0f}"
    bare_of = {r["round"]: r for r in runs if r["mode"] == "bare" and r["code"] == 0}
    rows = []
    for r in runs:
        bare = bare_of.get(r["round"])
        rows.append(
            [
                r["mode"],
                str(r["round"]),
                f"{r['load']:.2f}",
                f"{r['ended']}/{args.trials}",
                f"{r['wall_s']:.1f}",
                f"{r['wall_s'] / max(1, r['ended']):.3f}",
                f"{r['wall_s'] / bare['wall_s']:.2f}" if bare else "-",
                mib(r["rss_10"]),
                mib(r["rss_100"]),
                mib(r["rss_peak"]),
                "ok" if r["code"] == 0 else f"exit {r['code']}",
            ]
        )
    header = ["mode", "round", "load", "trials", "wall s", "s/trial", "/ bare", "RSS@10% MiB", "RSS@100% MiB", "peak MiB", "status"]
    lines = [
        f"{args.trials} trials x {args.epochs} epoch(s), {args.concurrent} at a time on {args.cpus:g} CPUs ({load}); "
        f"load = the 1-min load average as each mode started (after waiting for it to fall below {args.settle:g})",
        table(header, rows),
    ]
    launchers = [r for r in runs if r["mode"] == "launcher" and r["code"] == 0 and r["round"] in bare_of]
    if launchers:
        ratios = [r["wall_s"] / bare_of[r["round"]]["wall_s"] for r in launchers]
        ratio = statistics.median(ratios)
        each = f" (median of {len(ratios)} rounds: {' '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
        flat = all(r["rss_10"] and r["rss_100"] and r["rss_100"] <= 1.25 * r["rss_10"] for r in launchers)
        growth = " ".join(f"{r['rss_100'] / r['rss_10']:.2f}x" for r in launchers if r["rss_10"] and r["rss_100"])
        lines.append(f"Target: launcher <= 1.5x bare Ray Tune: {ratio:.2f}x{each} -> {'MET' if ratio <= 1.5 else 'NOT MET'}")
        lines.append(f"Target: the driver's RSS flat (100% within 1.25x of 10%, every round): {growth} -> {'MET' if flat else 'NOT MET'}")
    if view is not None:
        seconds, n = view
        lines.append(
            f"MLflow trial view (runs/search of the search's trials, best first, {n} rows): {seconds:.2f} s -> {'MET' if seconds < 5 else 'NOT MET'} (< 5 s)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.child:
        return child(args)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="trial_cost-"))
    load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    runs = []
    try:
        for round_ in range(1, args.rounds + 1):
            for mode in args.modes if round_ % 2 else list(reversed(args.modes)):
                result = run_mode(args, mode, work, round_)
                runs.append(result)
                if result["code"] != 0:
                    print(f"{mode} exited with {result['code']}; its log: {result['log']}", file=sys.stderr)
                    print(Path(result["log"]).read_text()[-3000:], file=sys.stderr)
        view = None
        launcher = next((r for r in reversed(runs) if r["mode"] == "launcher" and r["code"] == 0), None)
        if launcher and not args.no_ui:
            view = time_trial_view(launcher["folder"] / "mlflow.db")
        print(report(args, runs, view, load + " at the start"))
        return 0 if all(r["code"] == 0 for r in runs) else 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
