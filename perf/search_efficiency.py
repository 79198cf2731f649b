"""Search efficiency: the best objective reached against epochs spent, per search strategy (prints tables).

    python perf/search_efficiency.py [--space gemtl_p ...] [--seeds 0 1 2] [--samples 20] [--grid p=5 imtl:lr=8]
                                     [--strategies ...] [--stop-at 0.35] [--later S ...] [--cpus N]
                                     [--cpus-per-trial 1] [--max-epochs E] [--json out.json [--resume]]

For each space (a bundled name or a YAML path; default ``gemtl_p``) it runs, through the launcher's own
code (``mtlsearch.launch.main``: the space file, ``--set`` overrides, Optuna, ASHA, Ray Tune, MLflow):

* ``asha_tpe``       the space as written: Optuna TPE sampler + ASHA (our default; TPE's settings from the
                     budget, ASHA-stopped trials reach TPE as PRUNED: docs/fair-comparison.md);
* ``asha_random``    ``--set searcher.sampler=random`` (Optuna's random sampler) + ASHA;
* ``tpe_fifo``       ``--set scheduler.type=fifo``: TPE, every trial runs all its epochs (no pruning);
* ``hyperband_tpe``  ``--set scheduler.brackets=3``: TPE + Ray's ASHA with 3 brackets, i.e. asynchronous
                     Hyperband (Li et al. 2020): the brackets start stopping at later rungs (with grace 3,
                     factor 3, 12 epochs: rungs 3 and 9; 9; none), each trial in one of them (dealt per method
                     on a method axis).  The launcher's own Hyperband-style pruning (Optuna's
                     HyperbandPruner is the same idea; the launcher prunes through Ray's scheduler, not Optuna's);
* ``bohb``           BOHB (Falkner et al. 2018) as Ray Tune ships it: ``TuneBOHB`` + ``HyperBandForBOHB``
                     (synchronous Hyperband, trials pause at a rung and resume from their checkpoint).  Needs
                     ``hpbandster`` and ``ConfigSpace`` (``pip install -e '.[perf]'``).  The launcher has no
                     BOHB searcher, so a small Ray Tune driver here runs it with the same trainable
                     (``trainables.train_mtl``), trial configs, resources, epochs and reduction factor; it
                     differs besides the searcher and scheduler in having no MLflow run per trial, no Optuna
                     study, no console and no equal budget per method (see :func:`run_bohb`);
* ``grid``           the full grid: every searched parameter on a grid (``searcher.type=random`` with
                     ``grid`` distributions, ``scheduler.type=fifo``, one trial per grid point).  A
                     ``uniform``/``quniform`` range gets K points at the centres of K equal cells, a
                     ``loguniform`` range K cell centres on the log scale, ``randint`` K evenly spaced
                     integers, ``choice`` all its values (``--grid NAME=K`` or ``SPACE:NAME=K``, default
                     ``--grid-points``).

The sampled strategies run ``--samples`` trials each, once per seed of ``--seeds``; a seed is the
searcher's (``searcher.seed``): trials train with the space's own seed, so the grid, which has no
randomness of its own, runs once.  "Epochs spent" counts the epochs the trials reported, in the order
the driver received them; "best" is the best objective of any reported epoch of any trial so far,
and its test/delta_m the value of that same trial at that same epoch (in a space with ``budget.seeds``
the objective is the seeds' mean, as ASHA and the searcher see it).  ``best@x%`` is the best after x% of
the grid's epochs were spent (a strategy that spent fewer epochs in all shows its final best).

"Reached the grid's best": a best@35% at least the low end (mode max) of the 95% t-interval over the
seeds of the grid's best trial at its best epoch, where trials train several seeds; with one seed per
trial there is no interval and it means within ``--target-points`` (1) of the grid's best.  The target
line: ASHA + TPE reached it with at most ``--target-fraction`` (35%) of the grid's epochs in at least
``--target-share`` (0.8: 4 of 5) of the searcher seeds, and its mean best@35% is no worse than ASHA +
random's.  A table per space gives the same count and mean for every strategy.

``--stop-at F`` stops each sampled search after F of the grid's epochs, the launcher's searches with the
launcher's own stop (SIGTERM, as ``ray job stop`` sends it); nothing before the stop depends on what
comes after it, so the curve up to F is the whole search's.  The grids run first, then one searcher seed
at a time over every space and strategy (``--later``: those strategies after every seed of the others);
``--json`` is rewritten after every search and ``--resume`` runs only the searches it lacks, so a long
measurement cut short keeps what it finished.

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
import signal
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
    "hyperband_tpe": "async Hyperband + TPE",
    "bohb": "BOHB (Ray Tune)",
    "grid": "full grid",
}
#: The strategies that run through the launcher (``mtlsearch.launch.main``); ``bohb`` has its own driver.
LAUNCHER = ("asha_tpe", "asha_random", "tpe_fifo", "hyperband_tpe", "grid")
#: Brackets of the Hyperband strategy (Ray's ASHA with several brackets: asynchronous Hyperband).
HYPERBAND_BRACKETS = 3
BOHB_INSTALL = "pip install -e '.[perf]'  (or: pip install hpbandster ConfigSpace)"


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
        help="target where trials train one seed: within this many objective points of the grid's best (a space "
        "with budget.seeds is judged against the grid's best trial's 95%% interval over its seeds) (default: %(default)s)",
    )
    p.add_argument(
        "--target-fraction", type=float, default=0.35, help="target: with at most this fraction of the grid's epochs (default: %(default)s)"
    )
    p.add_argument(
        "--target-share",
        type=float,
        default=0.8,
        help="target: in at least this share of the searcher seeds (0.8: 4 of 5) (default: %(default)s)",
    )
    p.add_argument(
        "--stop-at",
        type=float,
        metavar="FRACTION",
        help="stop each sampled search once it has spent this fraction of the full grid's epochs (e.g. 0.35: "
        "all the target needs; the tables show nothing beyond it). A search's results up to then are those "
        "it would have had without the stop (default: every search runs to its end)",
    )
    p.add_argument(
        "--later",
        nargs="*",
        default=[],
        metavar="S",
        help="strategies to run after every seed of the others (e.g. the costly ones: a run cut short still has the others on every seed)",
    )
    p.add_argument("--workdir", help="keep MLflow runs and Ray results here (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write every search's (epochs spent, objective, test) curve to this file (after each search)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --json: keep the searches that file holds already and run only the missing ones",
    )
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
    """``NAME=K`` (every space searching NAME) or ``SPACE:NAME=K`` (that space only) -> {name: K}."""
    out = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"expected NAME=K or SPACE:NAME=K with K a whole number >= 1, got {item!r}", field="--grid")
        out[name] = int(count)
    if default < 1:
        raise ConfigError(f"must be >= 1, got {default}", field="--grid-points")
    return out


def make_grid(space, counts: dict[str, int], default: int) -> dict[str, list[Any]]:
    searched = [p for p in space.params if p.kind != "value"]
    prefix = f"{space.name}:"
    # NAME=K for every space, SPACE:NAME=K (which wins) for this one; other spaces' entries are theirs
    counts = {k: v for k, v in counts.items() if ":" not in k} | {
        k.removeprefix(prefix): v for k, v in counts.items() if k.startswith(prefix)
    }
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
def make_recorder(metric: str, cap: int | None = None, stop=None):
    """The callback that records every result; with ``cap``, once ``cap`` epochs are recorded it calls
    ``stop()`` once and records nothing more (results still in flight are not epochs of the budget)."""
    from ray.tune import Callback

    class Recorder(Callback):
        """Every result the driver receives, in order: one entry per epoch spent."""

        def __init__(self):
            self.results: list[dict[str, Any]] = []
            self.capped = False

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if self.capped:
                return
            entry = {
                "trial": trial.trial_id,
                "epoch": int(result.get("training_iteration", 0)),
                "val": result.get(metric),
                "test": result.get("test/delta_m"),
            }
            seeds = seed_values(result, metric)
            if seeds:  # a space with budget.seeds: the objective is their mean, the interval comes from them
                entry["seeds"] = seeds
            self.results.append(entry)
            if cap is not None and len(self.results) >= cap:
                self.capped = True
                if stop is not None:
                    stop()

    return Recorder()


def seed_values(result: dict[str, Any], metric: str) -> list[float]:
    """The seeds' own values of ``metric`` in one result (``seed<s>/<metric>``, by seed), [] for one seed."""
    found = []
    for key, value in result.items():
        head, sep, tail = key.partition("/")
        if sep and tail == metric and head.startswith("seed") and head[4:].isdigit() and value is not None:
            found.append((int(head[4:]), float(value)))
    return [v for _, v in sorted(found)]


def stop_cap(args, grid: dict[str, list[Any]], space) -> int | None:
    """``--stop-at``: the epochs after which a sampled search stops (that fraction of the full grid's)."""
    if args.stop_at is None:
        return None
    return max(1, math.ceil(args.stop_at * math.prod(len(v) for v in grid.values()) * (args.max_epochs or space.max_epochs)))


def run_search(space_name: str, strategy: str, seed: int, grid: dict[str, list[Any]], args, workdir: Path, log) -> dict[str, Any]:
    from mtlsearch import launch, spaces

    if strategy == "bohb":
        return run_bohb(space_name, seed, grid, args, workdir, log)
    space = spaces.load_space(space_name, validate=False)
    sets = [f"searcher.seed={seed}"]
    samples = args.samples or space.num_samples
    if strategy == "asha_tpe":
        sets += ["searcher.type=optuna", "searcher.sampler=tpe", "scheduler.type=asha"]
    elif strategy == "asha_random":
        sets += ["searcher.type=optuna", "searcher.sampler=random", "scheduler.type=asha"]
    elif strategy == "tpe_fifo":
        sets += ["searcher.type=optuna", "searcher.sampler=tpe", "scheduler.type=fifo"]
    elif strategy == "hyperband_tpe":
        sets += ["searcher.type=optuna", "searcher.sampler=tpe", "scheduler.type=asha", f"scheduler.brackets={HYPERBAND_BRACKETS}"]
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
    cap = stop_cap(args, grid, space) if strategy != "grid" else None
    # The launcher's own stop (as `ray job stop` sends it): Ray Tune ends the trials, the launcher exits 130.
    recorder = make_recorder(space.metric, cap, lambda: os.kill(os.getpid(), signal.SIGTERM))
    started = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"\n=== {strategy} seed {seed}: python -m mtlsearch.launch {' '.join(argv)}", flush=True)
        code = launch.main(argv, callbacks=[recorder])
        log.flush()
    wall = time.perf_counter() - started
    if code != 0 and not (recorder.capped and code == 130):
        raise SystemExit(
            f"error: the {strategy} search of {space_name} (seed {seed}) ended with exit code {code}; "
            f"its output: {getattr(log, 'name', 'above')}"
        )
    return {"strategy": strategy, "seed": seed, "wall_s": wall, "results": recorder.results}


def bohb_missing() -> str | None:
    """Why BOHB cannot run here (its packages are missing, with how to install them), or None."""
    try:
        import ConfigSpace  # noqa: F401
        import hpbandster  # noqa: F401
    except ImportError as err:
        return f"the bohb strategy needs hpbandster and ConfigSpace ({err}); install them with: {BOHB_INSTALL}"
    return None


def bohb_param_space(space) -> dict[str, Any]:
    """The trial configs' constants and Ray Tune domains of the searched parameters (TuneBOHB converts them
    to a ConfigSpace: ``uniform``, ``loguniform``, ``quniform``, ``randint``, ``choice``)."""
    out: dict[str, Any] = dict(space.base_config())
    for p in space.params:
        if p.when or p.kind in ("grid", "simplex"):
            raise ConfigError(
                f"space {space.name!r}: parameter {p.name!r} ({p.kind}{', conditional' if p.when else ''}) has no BOHB "
                "equivalent here; allowed: uniform, loguniform, quniform, randint, choice without when (leave out 'bohb' "
                "with --strategies)",
                field="--space",
            )
        out[p.name] = p.dist.tune_domain()  # the kind's own Ray Tune domain (mtlsearch.distributions)
    return out


def plain(value: Any) -> Any:
    """``value`` with numpy scalars (in dicts and lists) turned into the Python values they hold."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    item = getattr(value, "item", None)
    return item() if callable(item) and type(value).__module__ == "numpy" else value


def budget_stopper(recorder):
    """A Ray Tune ``Stopper`` that ends the whole search (not only the trial) once ``recorder`` is capped."""
    from ray.tune import Stopper

    class BudgetStop(Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return recorder.capped

        def stop_all(self) -> bool:
            return recorder.capped

    return BudgetStop()


def run_bohb(space_name: str, seed: int, grid: dict[str, list[Any]], args, workdir: Path, log) -> dict[str, Any]:
    """BOHB (Falkner et al. 2018) as Ray Tune runs it: ``TuneBOHB`` (hpbandster's KDE model over configs
    and budgets) with ``HyperBandForBOHB`` (synchronous Hyperband: trials pause at each rung until the
    bracket's rung is full, then the best 1/eta resume from their checkpoint).  The same trainable
    (``trainables.train_mtl``), trial configs, resources, epochs, max_t and reduction factor as the
    launcher's searches; what differs besides the searcher and scheduler: no MLflow run per trial, no
    Optuna study, no launcher console, and no equal budget per method (BOHB picks the method itself)."""
    from ray import tune
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.bohb import TuneBOHB

    from mtlsearch import spaces
    from mtlsearch.runner import trial_dirname
    from trainables import train_mtl

    space = spaces.override(spaces.load_space(space_name, validate=False), num_samples=args.samples or None, max_epochs=args.max_epochs)
    concurrent = args.max_concurrent or max(1, int(float(args.cpus or os.cpu_count() or 1) // args.cpus_per_trial))

    class PlainBOHB(TuneBOHB):
        """TuneBOHB whose configs hold Python values: ConfigSpace gives a choice as ``numpy.str_``, which the
        trainer's checkpoint would keep, and ``torch.load(weights_only=True)`` refuses numpy scalars, so a
        trial that Hyperband paused could not resume."""

        def suggest(self, trial_id: str):
            config = super().suggest(trial_id)
            return plain(config) if isinstance(config, dict) else config

    searcher = ConcurrencyLimiter(PlainBOHB(seed=seed), max_concurrent=concurrent)
    scheduler = HyperBandForBOHB(
        time_attr="training_iteration", max_t=space.max_epochs, reduction_factor=space.scheduler["reduction_factor"]
    )
    recorder = make_recorder(space.metric, stop_cap(args, grid, space))
    tuner = tune.Tuner(
        tune.with_resources(train_mtl, {"cpu": args.cpus_per_trial, "gpu": 0}),
        param_space=bohb_param_space(space),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=space.num_samples,
            trial_dirname_creator=trial_dirname,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{space.name}-bohb-{seed}",
            storage_path=str(workdir / "ray_results"),
            verbose=0,
            callbacks=[recorder],
            stop=budget_stopper(recorder),  # --stop-at: the whole search ends once the budget is spent
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    started = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"\n=== bohb seed {seed}: TuneBOHB + HyperBandForBOHB on {space_name}", flush=True)
        grid = tuner.fit()
        log.flush()
    wall = time.perf_counter() - started
    # Ctrl-C ends Tuner.fit without an error: a search that neither spent its budget nor ended all its trials
    # was interrupted, and its curve is not a measurement.
    statuses = [t.status for t in getattr(getattr(grid, "_experiment_analysis", None), "trials", [])]
    if not recorder.capped and (len(grid) < space.num_samples or any(st not in ("TERMINATED", "ERROR") for st in statuses)):
        raise SystemExit(f"error: the bohb search of {space_name} (seed {seed}) was interrupted before its end")
    errors = [r.error for r in grid if r.error is not None]  # type: ignore[attr-defined]
    if errors and len(errors) == len(grid):
        raise SystemExit(f"error: every trial of the bohb search of {space_name} (seed {seed}) errored: {errors[0]}")
    return {"strategy": "bohb", "seed": seed, "wall_s": wall, "results": recorder.results}


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
    if getattr(args, "stop_at", None) is not None:
        lines.append(
            f"--stop-at {args.stop_at:g}: each sampled search stopped after {math.ceil(args.stop_at * grid_epochs)} epochs "
            "(its results until then are those of the whole search; 'epochs spent', 'best' and 'last-epoch' are as of the stop)"
        )
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
    fractions = [f for f in args.fractions if getattr(args, "stop_at", None) is None or f <= args.stop_at + 1e-9]
    header += [f"best@{f:.0%}" for f in fractions]
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
        row += [mean_sd([best_at(r["curve"], f * grid_epochs) for r in group]) for f in fractions]
        rows.append(row)
    lines.append(table(header, rows))
    met = None
    if "grid" in by and "asha_tpe" in by:
        verdict, met = target_lines(by, grid_epochs, metric, mode, args)
        lines += ["", *verdict]
    return "\n".join(lines), met


def best_entry(results: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The result (trial, epoch) with the best objective of a search, the first of equals."""
    best = None
    for r in results:
        v = r["val"]
        if v is not None and math.isfinite(v) and (best is None or (v > best["val"] if mode == "max" else v < best["val"])):
            best = r
    return best


def grid_bar(grid_run: dict[str, Any], mode: str, points: float) -> tuple[float, float, str]:
    """(the grid's best objective, the value a search must reach to count as having reached it, how): the
    low end (mode max; the high end for min) of the 95% t-interval over the seeds of the grid's best trial
    at its best epoch where the space trains several seeds per trial, else ``points`` from its value."""
    from mtlsearch import uncertainty

    entry = best_entry(grid_run["results"], mode)
    if entry is None:
        raise SystemExit("error: the full grid reported no finite objective")
    best = float(entry["val"])
    ci = uncertainty.interval(entry.get("seeds") or [])
    if ci is not None and ci.low is not None and ci.high is not None:
        bar = ci.low if mode == "max" else ci.high
        return best, bar, f"its {ci.n}-seed 95% interval [{ci.low:.2f}, {ci.high:.2f}]"
    bar = best - points if mode == "max" else best + points
    return best, bar, f"within {points:g} point(s) (one seed per trial: no interval)"


def target_lines(by: dict[str, list[dict[str, Any]]], grid_epochs: int, metric: str, mode: str, args) -> tuple[list[str], bool]:
    """Per strategy: in how many searcher seeds it reached the grid's best within ``--target-fraction`` of the
    grid's epochs, and its mean best by then; the target line (the default, ASHA + TPE: reached in at least
    ``--target-share`` of the seeds, and a mean best by then no worse than ASHA + random's) comes last."""
    best, bar, how = grid_bar(by["grid"][0], mode, args.target_points)
    budget = args.target_fraction * grid_epochs
    header = ["strategy", f"reached by {args.target_fraction:.0%}", f"best@{args.target_fraction:.0%} per seed", "mean", "gap to grid"]
    rows, summary = [], {}
    for strategy in args.strategies:
        if strategy == "grid" or not by.get(strategy):
            continue
        at = [best_at(r["curve"], budget) for r in by[strategy]]
        values = [a if a is not None else (-math.inf if mode == "max" else math.inf) for a in at]
        reached = sum((v >= bar) if mode == "max" else (v <= bar) for v in values)
        mean = statistics.mean(values)
        summary[strategy] = (reached, len(values), mean)
        rows.append(
            [
                STRATEGIES[strategy],
                f"{reached}/{len(values)}",
                " ".join(f"{v:.2f}" for v in values),
                f"{mean:.2f}",
                f"{(best - mean) if mode == 'max' else (mean - best):.2f}",
            ]
        )
    reached, n, mean = summary["asha_tpe"]
    need = math.ceil(args.target_share * n - 1e-9)
    ok_reached = reached >= need
    text = (
        f"Target: ASHA+TPE reaches the full grid's best {metric} ({best:.2f}; reached = at least {bar:.2f}, {how}) with "
        f"<= {args.target_fraction:.0%} of its epochs ({budget:.0f} of {grid_epochs}) in >= {need} of {n} searcher seeds: "
        f"{reached}/{n}"
    )
    ok_random = True
    if "asha_random" in summary:
        rand = summary["asha_random"][2]
        ok_random = (mean >= rand - 1e-9) if mode == "max" else (mean <= rand + 1e-9)
        text += f"; mean best@{args.target_fraction:.0%} {mean:.2f} vs ASHA+random's {rand:.2f} ({'not worse' if ok_random else 'worse'})"
    met = ok_reached and ok_random
    return [
        f"Reached the grid's best: best@{args.target_fraction:.0%} at least {bar:.2f} ({how} of the grid's best, {best:.2f})",
        table(header, rows),
        "",
        f"{text} -> {'MET' if met else 'NOT MET'}",
    ], met


# ------------------------------------------------------------------------------ main
def reprint(args) -> int:
    from mtlsearch import spaces

    for key, entry in json.loads(Path(args.from_json).read_text()).items():
        space = spaces.load_space(entry.get("space", key))
        for field in ("samples", "max_epochs", "seeds", "max_concurrent", "stop_at"):
            if field in entry:
                setattr(args, field, entry[field])
        args.strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in entry["runs"])]
        args.seeds = sorted({r["seed"] for r in entry["runs"] if r["strategy"] != "grid"}) or entry.get("seeds") or [0]  # those run so far
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


def _check_args(args: argparse.Namespace) -> None:
    """The flags' values, before anything is loaded (a ConfigError names the flag)."""
    if args.samples < 0:
        raise ConfigError(f"must be >= 0 (0: the space's num_samples), got {args.samples}", field="--samples")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"must be >= 1, got {args.max_concurrent}", field="--max-concurrent")
    if args.max_epochs is not None and args.max_epochs < 1:
        raise ConfigError(f"must be >= 1, got {args.max_epochs}", field="--max-epochs")
    if not 0 < args.cpus_per_trial:
        raise ConfigError(f"must be > 0, got {args.cpus_per_trial}", field="--cpus-per-trial")
    if args.stop_at is not None and not (0 < args.stop_at <= 1 and "grid" in args.strategies):
        raise ConfigError(f"must be in (0, 1] and needs the 'grid' strategy (its epochs), got {args.stop_at}", field="--stop-at")
    if set(args.later) - set(STRATEGIES):
        raise ConfigError(f"unknown {sorted(set(args.later) - set(STRATEGIES))}; choose from {', '.join(STRATEGIES)}", field="--later")


def _load(args: argparse.Namespace) -> tuple[list[Any], list[dict[str, list[Any]]]]:
    """The spaces and their grids (a ConfigError names the flag or the space)."""
    from mtlsearch import spaces

    _check_args(args)
    counts = parse_grid_counts(args.grid, args.grid_points)
    loaded = [spaces.load_space(name) for name in args.space]
    grids = [
        make_grid(space, counts, args.grid_points) if "grid" in args.strategies else {p.name: [] for p in space.params if p.kind != "value"}
        for space in loaded
    ]
    if "bohb" in args.strategies and not args.from_json:
        for space in loaded:
            bohb_param_space(space)
        missing = bohb_missing()
        if missing:
            raise ConfigError(missing, field="--strategies")
    return loaded, grids


def _plan(args: argparse.Namespace, n_spaces: int) -> list[tuple[int, str, int]]:
    """The grids first, then one searcher seed at a time over every space and strategy: a run cut short
    still compares every strategy on every space (on fewer seeds)."""
    plan = [(i, "grid", args.seeds[0]) for i in range(n_spaces) if "grid" in args.strategies]
    for group in ([st for st in args.strategies if st not in args.later], [st for st in args.strategies if st in args.later]):
        plan += [(i, st, seed) for seed in args.seeds for i in range(n_spaces) for st in group if st != "grid"]
    return plan


def _run_plan(
    args: argparse.Namespace, loaded: list[Any], grids: list[dict[str, list[Any]]], dump: dict[str, Any], workdir: Path, log: Any
) -> None:
    """Every search of the plan not in ``dump`` yet; the JSON file is written after each search."""
    for i, strategy, seed in _plan(args, len(loaded)):
        name, space, grid = args.space[i], loaded[i], grids[i]
        runs = dump[space.name]["runs"]
        if any(r["strategy"] == strategy and (r["seed"] == seed or strategy == "grid") for r in runs):
            print(f"  {space.name} {strategy} seed {seed}: in {args.json} already (--resume)", flush=True)
            continue
        run = run_search(name, strategy, seed, grid, args, workdir, log)
        if not run["results"]:  # e.g. stopped before its first epoch: a search, but not a measurement
            raise SystemExit(f"error: the {strategy} search of {name} (seed {seed}) reported no epoch; see {workdir / 'launch.log'}")
        print(f"  {space.name} {strategy} seed {seed}: {len(run['results'])} epochs spent, {run['wall_s']:.0f} s", flush=True)
        runs.append({k: run[k] for k in ("strategy", "seed", "wall_s", "results")})
        if args.json:
            tmp = Path(args.json + ".tmp")
            tmp.write_text(json.dumps(dump, indent=1))
            tmp.replace(args.json)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded, grids = _load(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.from_json:
        return reprint(args)
    dump: dict[str, Any] = {}
    if args.resume and args.json and Path(args.json).exists():
        dump = json.loads(Path(args.json).read_text())
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
    for name, space, grid in zip(args.space, loaded, grids):
        entry = dump.setdefault(space.name, {"space": name, "runs": []})
        entry.update(
            {
                "samples": args.samples or space.num_samples,
                "max_epochs": args.max_epochs,
                "seeds": args.seeds,
                "max_concurrent": args.max_concurrent,
                "stop_at": args.stop_at,
                "grid": grid,
            }
        )
    try:
        _run_plan(args, loaded, grids, dump, workdir, log)
    finally:
        ray.shutdown()
        if log is not sys.stdout:
            log.close()
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    for space, grid in zip(loaded, grids):
        runs = [dict(r) for r in dump[space.name]["runs"] if r["strategy"] == "grid" or r["seed"] in args.seeds]
        print("\n" + report(space, runs, grid, args)[0] + "\n", flush=True)
    if args.json:
        print(f"curves written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
