"""``python -m mtlsearch.launch --space NAME|PATH [...]``: run a search with Ray Tune.

The only place that builds a ``Tuner``: reads a space, picks the searcher (Optuna) and the scheduler
(ASHA), resources per trial, storage, MLflow destination and resume; prints progress and the results
table.  Embedded default: a local Ray started here, a SQLite MLflow store ``./mlflow.db`` and Ray
results under ``./ray_results``.  ``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI`` are honoured.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from mtlsearch.errors import ConfigError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.launch",
        description="Search MTL balancing methods and hyperparameters with Ray Tune (Optuna + ASHA), logging to MLflow.",
    )
    p.add_argument("--space", required=True, help="search space name (search_spaces/NAME.yaml) or path to a YAML file")
    p.add_argument("--benchmark", help="override the space's benchmark")
    p.add_argument("--data-root", help="folder of a user-supplied dataset (real benchmarks)")
    p.add_argument("--num-samples", type=int, help="override the number of trials")
    p.add_argument("--max-epochs", type=int, help="override the epochs per trial (ASHA's max_t)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions pack trials onto one GPU")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--storage", help="Ray Tune storage path or URI (default: ./ray_results)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default: the space's name)")
    p.add_argument("--name", help="name of this search's folder under the storage (default: SPACE-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the latest unfinished search of this space (or --name)")
    p.add_argument("--seed", type=int, help="seed of the searcher and of the trials")
    p.add_argument("--max-failures", type=int, default=0, help="retries of a crashed trial from its last checkpoint")
    p.add_argument("--top", type=int, default=5, help="rows in the final results table")
    return p


def _positive(value: float | None, flag: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}", field=flag)


def prepare_space(args: argparse.Namespace):
    """Load the space and apply the CLI overrides; every error here is a ConfigError (exit 2)."""
    from mtlsearch import spaces

    _positive(args.num_samples, "--num-samples")
    _positive(args.max_epochs, "--max-epochs")
    _positive(args.cpus_per_trial, "--cpus-per-trial", allow_zero=True)
    _positive(args.gpus_per_trial, "--gpus-per-trial", allow_zero=True)
    space = spaces.load_space(args.space, validate=False)
    resources = dict(space.resources)
    if args.cpus_per_trial is not None:
        resources["cpus_per_trial"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        resources["gpus_per_trial"] = args.gpus_per_trial
    searcher = dict(space.searcher)
    params = list(space.params)
    if args.seed is not None:
        searcher["seed"] = args.seed
        if not any(p.name == "seed" and p.kind != "value" for p in params):
            params = [p for p in params if p.name != "seed"] + [spaces.Param("seed", "value", args.seed)]
    space = spaces.override(
        space, benchmark=args.benchmark, num_samples=args.num_samples, max_epochs=args.max_epochs,
        data_root=args.data_root or space.data_root or os.environ.get("MTLSEARCH_DATA_ROOT"),
        resources=resources, searcher=searcher, params=params,
    )
    if space.scheduler["grace_period"] > space.max_epochs:
        space.scheduler = {**space.scheduler, "grace_period": space.max_epochs}
    space.validate_trials()
    if space.metric.endswith("delta_m"):
        from mtlsearch.references import load_reference_file

        ref = load_reference_file(space.benchmark, space.data_root)
        split = space.metric.split("/")[0]
        if ref is None or split not in ref.get("splits", {}):
            raise ConfigError(
                f"objective {space.metric!r} needs single-task references for benchmark {space.benchmark!r} "
                f"on split {split!r}, and there are none; choose a task metric (e.g. 'val/<task>/<metric>') "
                f"or generate references with `python -m mtlsearch.references --benchmark {space.benchmark} --data-root DIR`",
                source=str(space.path), field="scheduler.metric" if space.multi_objective else "objective.metric",
            )
    return space


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` / ``$RAY_ADDRESS``, or start a local Ray; returns whether we started it."""
    import ray

    if ray.is_initialized():  # e.g. a test or notebook already holds one
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)  # an existing cluster: never start a second one
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    return True


def _latest_unfinished(storage: Path, prefix: str) -> Path | None:
    from ray.tune import Tuner

    if not storage.is_dir():
        return None
    candidates = sorted((d for d in storage.iterdir() if d.is_dir() and (d.name == prefix or d.name.startswith(prefix + "-"))),
                        key=lambda d: d.stat().st_mtime, reverse=True)
    for d in candidates:
        if Tuner.can_restore(str(d)):
            return d
    return None


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default repeats the whole config in the name)."""
    return f"trial_{trial.trial_id}"


def make_progress_callback(space):
    """One line per trial result and per finished trial: live progress without Tune's wide tables."""
    from ray.tune import Callback

    searched = [p.name for p in space.params if p.kind != "value"]
    sign = 1 if space.mode == "max" else -1

    class Progress(Callback):
        def __init__(self):
            self.best: tuple[float, str] | None = None
            self.done = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(space.metric)
            if isinstance(value, (int, float)) and (self.best is None or sign * value > sign * self.best[0]):
                self.best = (value, trial.trial_id)
            params = " ".join(f"{k}={_fmt(trial.config[k])}" for k in searched if k in trial.config)
            running = sum(t.status == "RUNNING" for t in trials)
            best = f"best {_fmt(self.best[0])} ({self.best[1]})" if self.best else ""
            print(f"[{self.done}/{space.num_samples} done, {running} running] {trial.trial_id} "
                  f"epoch {int(result.get('epoch', 0))}/{space.max_epochs} {params} "
                  f"{space.metric}={_fmt(value) if value is not None else '-'}  {best}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            epochs = int((trial.last_result or {}).get("epoch", 0))
            how = "completed" if epochs >= space.max_epochs else f"stopped early by ASHA after {epochs} epochs"
            print(f"[{self.done}/{space.num_samples} done] {trial.trial_id} {how}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            print(f"[{self.done}/{space.num_samples} done] {trial.trial_id} ERRORED (see its MLflow run / error file)", flush=True)

    return Progress()


def _fmt(value: Any) -> str:
    if value is None:  # a conditional parameter that does not apply to this trial
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def results_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    header = list(columns)
    body = [[_fmt(r.get(c, "")) for c in header] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(out)


def summarize(result_grid, space, top: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (best first) of every trial's last result, with the searched parameters."""
    rows = []
    for result in result_grid:
        metrics = result.metrics or {}
        if space.metric not in metrics:
            continue
        cfg = result.config or {}
        row = {"trial": metrics.get("trial_id", ""), "epochs": int(metrics.get("epoch", 0))}
        row.update({p.name: cfg.get(p.name) for p in space.params if p.kind != "value" and p.name in cfg})
        row.update({k: v for k, v in metrics.items() if k.startswith("val/") or k == "test/delta_m"})
        row["_config"] = cfg
        row["_metrics"] = metrics
        rows.append(row)
    rows.sort(key=lambda r: r["_metrics"][space.metric], reverse=space.mode == "max")
    searched = [p.name for p in space.params if p.kind != "value"]
    metric_cols = sorted({k for r in rows for k in r if k.startswith("val/") and not k.endswith("delta_m")})
    tail = [c for c in ("val/delta_m", "test/delta_m") if any(c in r for r in rows)]
    columns = ["trial", *dict.fromkeys(searched), "epochs", *metric_cols, *tail]
    return rows[:top] if top else rows, columns


def run(args: argparse.Namespace) -> int:
    space = prepare_space(args)

    from mtlsearch import spaces, tracking

    tracking_uri = args.tracking_uri or tracking.default_tracking_uri()
    experiment = args.experiment or space.name
    storage = Path(args.storage).expanduser().resolve() if args.storage and "://" not in args.storage else None
    storage_uri = args.storage if args.storage and "://" in args.storage else str(storage or (Path.cwd() / "ray_results"))
    local_storage = storage or (None if "://" in storage_uri else Path(storage_uri))

    tracking.check_reachable(tracking_uri)  # before Ray and any trial: one error line, exit code 2

    # Ray warns about frequent experiment snapshots; with epoch-sized checkpoints they are expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started_ray = _init_ray(args.address)
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from trainables import train_mtl

    restore_path = None
    if args.resume and local_storage is not None:
        restore_path = _latest_unfinished(local_storage, args.name or space.name)
        if restore_path is None:
            print(f"No unfinished search of {args.name or space.name!r} under {local_storage}; starting a new one.")
    name = restore_path.name if restore_path else (args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    search_id = f"{storage_uri.rstrip('/')}/{name}"

    tracker = tracking.Tracker(tracking_uri, experiment, search_id)
    tracker.start_search(space, {"benchmark": args.benchmark, "num_samples": args.num_samples, "max_epochs": args.max_epochs, "seed": args.seed},
                         results_dir=local_storage / name if local_storage is not None else None)
    callback = tracking.make_callback(tracker, space.metric, space.max_epochs)

    trainable = tune.with_resources(
        train_mtl, {"cpu": space.resources["cpus_per_trial"], "gpu": space.resources["gpus_per_trial"]}
    )
    if space.scheduler["type"] == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=space.max_epochs, grace_period=space.scheduler["grace_period"],
            reduction_factor=space.scheduler["reduction_factor"], brackets=space.scheduler["brackets"],
        )
    else:
        scheduler = FIFOScheduler()
    if space.searcher["type"] == "optuna":
        import optuna

        seed = space.searcher["seed"]
        sampler = {
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
            "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
            "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        }[space.searcher["sampler"]]()
        # Multi-objective: the metric/mode lists go on OptunaSearch only; Tune and ASHA keep the scalar.
        objectives = space.objectives()
        search_alg = OptunaSearch(space=space.define_by_run(), sampler=sampler,
                                  metric=[m for m, _ in objectives] if space.multi_objective else space.metric,
                                  mode=[m for _, m in objectives] if space.multi_objective else space.mode)
        param_space: dict[str, Any] = {}
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=space.searcher["seed"])
        param_space = space.tune_param_space()

    def make_run_config(suffix: str | None = None, num_trials: int | None = None):
        shown = spaces.override(space, num_samples=num_trials) if num_trials else space
        return tune.RunConfig(
            name=f"{name}-{suffix}" if suffix else name, storage_path=storage_uri, verbose=0,
            callbacks=[callback, make_progress_callback(shown)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
        )

    run_config = make_run_config()
    tune_config = tune.TuneConfig(
        metric=space.metric, mode=space.mode, search_alg=search_alg, scheduler=scheduler,
        num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent_trials,
        trial_dirname_creator=trial_dirname,
    )
    if restore_path is not None:
        print(f"Resuming {restore_path}")
        tuner = tune.Tuner.restore(str(restore_path), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

    print(f"Search {name!r}: {space.num_samples} trials x up to {space.max_epochs} epochs of {space.benchmark!r}, "
          f"objective {space.metric} ({space.mode}); MLflow experiment {experiment!r} at {tracking_uri}")
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        tracker.end_search(None, status="KILLED")
        print(f"\nInterrupted. Resume with the same command plus --resume (folder {storage_uri}/{name}).")
        return 130

    rows, columns = summarize(grid, space, 0)
    errors = [r for r in grid if r.error is not None]
    best = None
    if rows:
        top_row = rows[0]
        best = {"trial_id": top_row["trial"], "config": top_row["_config"], "metrics": top_row["_metrics"],
                "run_id": tracker.trial_runs.get(top_row["trial"])}
    pareto = None
    if space.multi_objective:
        from mtlsearch.report import pareto_rows

        pareto = pareto_rows(summarize(grid, space, 0)[0], space.objectives(), space.max_epochs)
    tracker.end_search(best, pareto=[r["trial"] for r in pareto] if pareto is not None else None)

    print()
    print(f"Best trials by {space.metric} ({space.mode}); {len(grid)} trials, {len(errors)} errored:")
    print(results_table(rows[: args.top], columns) if rows else "(no trial reported the objective)")
    if pareto is not None:
        names = ", ".join(f"{m} ({d})" for m, d in space.objectives())
        print(f"\nPareto set on {names}: {len(pareto)} trials not dominated among those that reached {space.max_epochs} epochs:")
        print(results_table(pareto, columns) if pareto else "(no trial reached max_epochs)")
    if space.final and rows:
        from mtlsearch import final

        confirmed = final.run_final(space, rows, trainable, make_run_config, tracker)
        keys = [c for c in columns if c.startswith("val/")] + (["test/delta_m"] if "test/delta_m" in columns else [])
        print(f"\nMean ± std over seeds {space.final['seeds']} of the best configuration per {space.final['per'] or 'search'}:")
        print(results_table(confirmed, ["group", "seeds", *keys]))
    print()
    tracker.report_offline()
    print(f"Ray results: {storage_uri}/{name}")
    print(f"MLflow: experiment {experiment!r}, parent run {tracker.parent_run_id}")
    print(f"Open the runs in the MLflow UI:\n  {tracking.ui_command(tracking_uri)}")
    if started_ray:
        ray.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
