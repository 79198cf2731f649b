"""Search efficiency: the best objective reached against epochs spent, per search strategy (prints tables).

    python perf/search_efficiency.py [--space gemtl_p ...] [--seeds 0 1 2] [--samples 20] [--grid p=5 lr=4]
                                     [--cpus N] [--cpus-per-trial 1] [--max-epochs E] [--json out.json]

For each space (a bundled name or a YAML path; default ``gemtl_p``) it runs, through the launcher's own
code (``mtlsearch.launch.main``: the space file, ``--set`` overrides, Optuna, ASHA, Ray Tune, MLflow):

* ``asha_tpe``     the space as written: Optuna TPE sampler + ASHA (our default);
* ``asha_random``  ``--set searcher.sampler=random`` (Optuna's random sampler) + ASHA;
* ``tpe_fifo``     ``--set scheduler.type=fifo``: TPE, every trial runs all its epochs (no pruning);
* ``grid``         the full grid: every searched parameter on a grid (``searcher.type=random`` with
                   ``grid`` distributions, ``scheduler.type=fifo``, one trial per grid point).  A
                   ``uniform``/``quniform`` range gets K points at the centres of K equal cells, a
                   ``loguniform`` range K cell centres on the log scale, ``randint`` K evenly spaced
                   integers, ``choice`` all its values (``--grid NAME=K``, default ``--grid-points``).

The sampled strategies run ``--samples`` trials each, once per seed of ``--seeds``; a seed is the
searcher's (``searcher.seed``): trials train with the space's own seed, so the grid, which has no
randomness of its own, runs once.  "Epochs spent" counts the epochs the trials reported, in the order
the driver received them; "best" is the best objective of any reported epoch of any trial so far,
and its test/delta_m the value of that same trial at that same epoch.  ``best@x%`` is the best after
x% of the grid's epochs were spent (a strategy that spent fewer epochs in all shows its final best).
The target line checks: ASHA+TPE within ``--target-points`` (1) Δm points of the grid's best with at
most ``--target-fraction`` (35%) of the grid's epochs, mean over seeds.

One Ray (``--cpus`` CPUs, default all; or ``--address``) serves every search; MLflow runs and Ray's
results go to a temporary folder (``--workdir`` to keep them).  Nothing is written into the package.
This is a measurement script, not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtlsearch.errors import ConfigError  # noqa: E402

STRATEGIES = {
    "asha_tpe": "ASHA + TPE (default)",
    "asha_random": "ASHA + random",
    "tpe_fifo": "TPE, no pruning",
    "grid": "full grid",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/search_efficiency.py",
        description="Best objective reached against epochs spent for ASHA+TPE, ASHA+random, TPE without pruning "
        "and the full grid, through the launcher's own search code; prints a table per space.",
    )
    p.add_argument("--space", nargs="+", default=["gemtl_p"], help="bundled space names or YAML paths (default: %(default)s)")
    p.add_argument(
        "--strategies",
        nargs="+",
        default=list(STRATEGIES),
        choices=list(STRATEGIES),
        metavar="S",
        help=f"strategies to run, of {', '.join(STRATEGIES)} (default: all)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="searcher seeds of the sampled strategies (default: %(default)s)")
    p.add_argument("--samples", type=int, default=8, help="trials of each sampled strategy (the space's own: 0) (default: %(default)s)")
    p.add_argument("--max-epochs", type=int, help="epochs per trial (default: the space's)")
    p.add_argument("--grid-points", type=int, default=3, help="grid points of each searched range (not choice) (default: %(default)s)")
    p.add_argument("--grid", nargs="*", default=[], metavar="NAME=K", help="grid points of one parameter, e.g. p=5 lr=4")
    p.add_argument("--cpus", type=float, help="CPUs of the local Ray (default: all of this machine's)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (trials at a time = cpus / this) (default: %(default)s)")
    p.add_argument(
        "--max-concurrent",
        type=int,
        help="trials at a time of the sampled strategies "
        "(budget.max_concurrent_trials; default: as many as the CPUs allow). ASHA and TPE learn from "
        "finished rungs: 16 trials at once on 16 CPUs is another search than 2 at once",
    )
    p.add_argument("--address", help="an existing Ray cluster instead of a local Ray")
    p.add_argument(
        "--fractions",
        nargs="+",
        type=float,
        default=[0.10, 0.20, 0.35, 0.50, 1.00],
        help="fractions of the grid's epochs at which to show the best so far (default: %(default)s)",
    )
    p.add_argument(
        "--target-points",
        type=float,
        default=1.0,
        help="target: within this many objective points of the grid's best (default: %(default)s)",
    )
    p.add_argument(
        "--target-fraction", type=float, default=0.35, help="target: with at most this fraction of the grid's epochs (default: %(default)s)"
    )
    p.add_argument("--workdir", help="keep MLflow runs and Ray results here (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write every search's (epochs spent, objective, test) curve to this file")
    p.add_argument(
        "--from-json",
        metavar="PATH",
        help="run nothing: print the tables again from a --json file (e.g. with other --fractions or targets)",
    )
    p.add_argument("--verbose", action="store_true", help="show the launcher's own output (default: in WORKDIR/launch.log)")
    return p


# ------------------------------------------------------------------------------ the grid
def grid_values(param, points: int) -> list[Any]:
    """``points`` values spanning one searched parameter (see the module docstring): its distribution's
    grid (:meth:`mtlsearch.distributions.Distribution.grid`)."""
    from mtlsearch.distributions import REGISTRY, Distribution

    try:
        return param.dist.grid(points)
    except NotImplementedError:
        allowed = ", ".join(kind for kind, cls in REGISTRY.items() if cls.grid is not Distribution.grid)
        raise ConfigError(f"parameter {param.name!r} ({param.kind}) has no grid here; allowed: {allowed}", field="--space") from None


def parse_grid_counts(items: list[str], default: int) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"expected NAME=K with K a whole number >= 1, got {item!r}", field="--grid")
        out[name] = int(count)
    if default < 1:
        raise ConfigError(f"must be >= 1, got {default}", field="--grid-points")
    return out


def make_grid(space, counts: dict[str, int], default: int) -> dict[str, list[Any]]:
    searched = [p for p in space.params if p.kind != "value"]
    unknown = set(counts) - {p.name for p in searched}
    if unknown:
        raise ConfigError(
            f"{sorted(unknown)} not searched in space {space.name!r}; searched: {', '.join(p.name for p in searched)}", field="--grid"
        )
    for p in searched:
        if p.when:
            raise ConfigError(
                f"space {space.name!r}: parameter {p.name!r} is conditional (when: ...); the full grid "
                "needs unconditional parameters (leave out 'grid' with --strategies)",
                field="--space",
            )
    return {p.name: grid_values(p, counts.get(p.name, default)) for p in searched}


def _yaml_list(values: list[Any]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


# ------------------------------------------------------------------------------ one search
def make_recorder(metric: str):
    from ray.tune import Callback

    class Recorder(Callback):
        """Every result the driver receives, in order: one entry per epoch spent."""

        def __init__(self):
            self.results: list[dict[str, Any]] = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.append(
                {
                    "trial": trial.trial_id,
                    "epoch": int(result.get("training_iteration", 0)),
                    "val": result.get(metric),
                    "test": result.get("test/delta_m"),
                }
            )

    return Recorder()


def run_search(space_name: str, strategy: str, seed: int, grid: dict[str, list[Any]], args, workdir: Path, log) -> dict[str, Any]:
    from mtlsearch import launch, spaces

    space = spaces.load_space(space_name, validate=False)
    sets = [f"searcher.seed={seed}"]
    samples = args.samples or space.num_samples
    if strategy == "asha_tpe":
        sets += ["searcher.type=optuna", "searcher.sampler=tpe", "scheduler.type=asha"]
    elif strategy == "asha_random":
        sets += ["searcher.type=optuna", "searcher.sampler=random", "scheduler.type=asha"]
    elif strategy == "tpe_fifo":
        sets += ["searcher.type=optuna", "searcher.sampler=tpe", "scheduler.type=fifo"]
    if args.max_concurrent and strategy != "grid":
        sets.append(f"budget.max_concurrent_trials={args.max_concurrent}")
    if strategy == "grid":  # Ray's variant generator crosses the grid values, one trial per point
        sets += ["searcher.type=random", "scheduler.type=fifo"]
        sets += [f"params.{name}.grid={_yaml_list(values)}" for name, values in grid.items()]
        samples = 1
    argv = [
        "--space",
        space_name,
        "--num-samples",
        str(samples),
        "--quiet",
        "--tracking-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--storage",
        str(workdir / "ray_results"),
        "--experiment",
        f"efficiency-{space.name}",
        "--name",
        f"{space.name}-{strategy}-{seed}",
        "--cpus-per-trial",
        str(args.cpus_per_trial),
    ]
    if args.max_epochs:
        argv += ["--max-epochs", str(args.max_epochs)]
    for item in sets:
        argv += ["--set", item]
    recorder = make_recorder(space.metric)
    started = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"\n=== {strategy} seed {seed}: python -m mtlsearch.launch {' '.join(argv)}", flush=True)
        code = launch.main(argv, callbacks=[recorder])
        log.flush()
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(
            f"error: the {strategy} search of {space_name} (seed {seed}) ended with exit code {code}; "
            f"its output: {getattr(log, 'name', 'above')}"
        )
    return {"strategy": strategy, "seed": seed, "wall_s": wall, "results": recorder.results}


# ------------------------------------------------------------------------------ analysis
def curve(results: list[dict[str, Any]], mode: str) -> list[tuple[int, float, float | None]]:
    """(epochs spent, best objective so far, its test/delta_m) after every result."""
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    out, best, test = [], None, None
    for spent, r in enumerate(results, 1):
        v = r["val"]
        if v is not None and math.isfinite(v) and (best is None or better(v, best)):
            best, test = v, r["test"]
        out.append((spent, best, test))
    return out


def best_at(points: list[tuple[int, float, float | None]], epochs: float) -> float | None:
    """The best after at most ``epochs`` epochs spent (the final best if the search spent fewer)."""
    best = None
    for spent, value, _ in points:
        if spent > epochs:
            break
        best = value
    return best


def best_last_epoch(results: list[dict[str, Any]], mode: str) -> float | None:
    """The launcher's definition: the best of each trial's value at its last epoch."""
    last: dict[str, float] = {}
    for r in results:
        if r["val"] is not None and math.isfinite(r["val"]):
            last[r["trial"]] = r["val"]
    if not last:
        return None
    return (max if mode == "max" else min)(last.values())


def mean_sd(values: list[float | None], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def report(space, runs: list[dict[str, Any]], grid: dict[str, list[Any]], args) -> tuple[str, bool | None]:
    mode, metric = space.mode, space.metric
    max_epochs = args.max_epochs or space.max_epochs
    grid_trials = math.prod(len(v) for v in grid.values())
    grid_epochs = grid_trials * max_epochs
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        run["curve"] = curve(run["results"], mode)
        by.setdefault(run["strategy"], []).append(run)
    lines = [
        f"Search efficiency on {space.name} ({space.benchmark}), objective {metric} ({mode}), {max_epochs} epochs per trial",
        "grid: "
        + " x ".join(f"{n} in {v}" for n, v in grid.items())
        + f" = {grid_trials} trials x {max_epochs} epochs = {grid_epochs} epochs"
        + " (cell centres of each range: uniform linear, loguniform log; choice: all values)",
        f"sampled strategies: {args.samples or space.num_samples} trials each, searcher seeds {' '.join(map(str, args.seeds))} "
        f"(trials train with the space's seed; the grid runs once); {args.max_concurrent or 'as many as the CPUs allow'} at a time",
        "best = best objective of any reported epoch of any trial so far (last-epoch = the launcher's table's definition); "
        "test = test/delta_m of that same trial and epoch; mean ± sd over seeds",
    ]
    if "asha_tpe" in by:
        from mtlsearch import spaces as _spaces
        from mtlsearch.optuna_search import describe_settings

        budget: dict[str, Any] = {"num_samples": args.samples or space.num_samples}
        if args.max_concurrent:
            budget["max_concurrent_trials"] = args.max_concurrent
        tpe = _spaces.override(space, **budget)
        lines.append(
            f"ASHA+TPE's sampler (mtlsearch.optuna_search.sampler_settings): {describe_settings(tpe)}; its first "
            "n_startup_trials trials are random, with the same seed as ASHA+random's"
        )
    lines.append("")
    header = ["strategy", "runs", "epochs spent", "% of grid", "wall s", f"best {metric}", "test/delta_m", "best (last-epoch)"]
    header += [f"best@{f:.0%}" for f in args.fractions]
    rows = []
    for strategy in args.strategies:
        group = by.get(strategy, [])
        if not group:
            continue
        spent = [len(r["results"]) for r in group]
        finals = [r["curve"][-1] if r["curve"] else (0, None, None) for r in group]
        row = [
            STRATEGIES[strategy],
            str(len(group)),
            f"{statistics.mean(spent):.1f}",
            f"{statistics.mean(spent) / grid_epochs:.0%}" if grid_epochs else "-",
            f"{statistics.mean(r['wall_s'] for r in group):.0f}",
            mean_sd([f[1] for f in finals]),
            mean_sd([f[2] for f in finals]),
            mean_sd([best_last_epoch(r["results"], mode) for r in group]),
        ]
        row += [mean_sd([best_at(r["curve"], f * grid_epochs) for r in group]) for f in args.fractions]
        rows.append(row)
    lines.append(table(header, rows))
    met = None
    if "grid" in by and "asha_tpe" in by:
        grid_best = by["grid"][0]["curve"][-1][1]
        budget = args.target_fraction * grid_epochs
        at = [best_at(r["curve"], budget) for r in by["asha_tpe"]]
        gaps = [(grid_best - a if mode == "max" else a - grid_best) if a is not None else math.inf for a in at]
        mean_gap = statistics.mean(gaps)
        met = mean_gap <= args.target_points
        within = sum(g <= args.target_points for g in gaps)
        lines += [
            "",
            f"Target: ASHA+TPE within {args.target_points:g} point(s) of the full grid's best {metric} "
            f"({grid_best:.2f}) with <= {args.target_fraction:.0%} of its epochs ({budget:.0f} of {grid_epochs}): "
            f"ASHA+TPE's best by then {mean_sd(at)} (gap {mean_gap:.2f} mean over {len(at)} seed(s); "
            f"within in {within}/{len(at)}) -> {'MET' if met else 'NOT MET'}",
        ]
    return "\n".join(lines), met


# ------------------------------------------------------------------------------ main
def reprint(args) -> int:
    from mtlsearch import spaces

    for key, entry in json.loads(Path(args.from_json).read_text()).items():
        space = spaces.load_space(entry.get("space", key))
        for field in ("samples", "max_epochs", "seeds", "max_concurrent"):
            if field in entry:
                setattr(args, field, entry[field])
        args.strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in entry["runs"])]
        args.seeds = entry.get("seeds") or sorted({r["seed"] for r in entry["runs"] if r["strategy"] != "grid"})
        print(report(space, entry["runs"], entry["grid"], args)[0] + "\n")
    return 0


def start_ray(args) -> None:
    import ray

    from mtlsearch import console

    console.quiet_libraries()
    if args.address:
        ray.init(address=args.address, logging_level=console.ray_logging_level())
    else:
        ray.init(
            num_cpus=args.cpus or os.cpu_count(),
            include_dashboard=False,
            logging_level=console.ray_logging_level(),
            runtime_env=worker_env(console),
        )


def worker_env(console) -> dict[str, Any]:
    """The launcher's runtime_env for a local Ray, and this checkout on the workers' path (installed or not)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"worker_process_setup_hook": console.WORKER_SETUP_HOOK, "env_vars": {"PYTHONPATH": path}}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mtlsearch import spaces

    try:
        if args.samples < 0:
            raise ConfigError(f"must be >= 0 (0: the space's num_samples), got {args.samples}", field="--samples")
        if args.max_concurrent is not None and args.max_concurrent < 1:
            raise ConfigError(f"must be >= 1, got {args.max_concurrent}", field="--max-concurrent")
        if args.max_epochs is not None and args.max_epochs < 1:
            raise ConfigError(f"must be >= 1, got {args.max_epochs}", field="--max-epochs")
        if not 0 < args.cpus_per_trial:
            raise ConfigError(f"must be > 0, got {args.cpus_per_trial}", field="--cpus-per-trial")
        counts = parse_grid_counts(args.grid, args.grid_points)
        loaded = [spaces.load_space(name) for name in args.space]
        grids = [
            make_grid(space, counts, args.grid_points)
            if "grid" in args.strategies
            else {p.name: [] for p in space.params if p.kind != "value"}
            for space in loaded
        ]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.from_json:
        return reprint(args)
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mtlsearch_efficiency_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = sys.stdout if args.verbose else open(workdir / "launch.log", "a")
    start_ray(args)
    import ray

    print(
        f"Ray: {ray.cluster_resources().get('CPU', 0):g} CPUs, {args.cpus_per_trial:g} per trial; "
        f"work folder {workdir}{'' if keep else ' (removed at the end)'}",
        flush=True,
    )
    texts, dump, all_met = [], {}, []
    try:
        for name, space, grid in zip(args.space, loaded, grids):
            runs = []
            for strategy in args.strategies:
                for seed in [args.seeds[0]] if strategy == "grid" else args.seeds:
                    run = run_search(name, strategy, seed, grid, args, workdir, log)
                    print(f"  {space.name} {strategy} seed {seed}: {len(run['results'])} epochs spent, {run['wall_s']:.0f} s", flush=True)
                    runs.append(run)
            text, met = report(space, runs, grid, args)
            texts.append(text)
            all_met.append(met)
            print("\n" + text + "\n", flush=True)
            dump[space.name] = {
                "space": name,
                "samples": args.samples or space.num_samples,
                "max_epochs": args.max_epochs,
                "seeds": args.seeds,
                "max_concurrent": args.max_concurrent,
                "grid": grid,
                "runs": [{k: r[k] for k in ("strategy", "seed", "wall_s", "results")} for r in runs],
            }
    finally:
        ray.shutdown()
        if log is not sys.stdout:
            log.close()
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1))
        print(f"curves written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
