"""``python -m mtlsearch.launch --space NAME|PATH [...]``: run a search with Ray Tune.

The command line: reads a space and applies the flags, runs the pre-flight checks (``mtlsearch.preflight``),
connects to or starts Ray (``mtlsearch.cluster``), and hands over to ``mtlsearch.runner``, which builds
the ``Tuner`` (searcher, scheduler, resources per trial, storage, MLflow destination, resume:
``mtlsearch.resume``) and prints the results table (``mtlsearch.results``); progress lines, the silencing
of Ray's, MLflow's and Optuna's own lines, ``--quiet`` and ``--dry-run``: ``mtlsearch.console``.
Embedded default: a local Ray started here, a SQLite MLflow store ``./mlflow.db`` and Ray results under
``./ray_results``.  ``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI`` are honoured.

On a cluster (``--address`` / ``RAY_ADDRESS``, set by Ray inside ``ray job submit``) the launcher
connects and never starts a second Ray; before any trial starts it refuses (exit 2) a trial that asks
for more CPUs or GPUs than the largest node has, and a local ``--storage`` path on a multi-node
cluster unless ``--storage-is-shared`` vouches that every node mounts it.  Ctrl-C (or SIGTERM, e.g.
``ray job stop``) ends the search cleanly and prints the command that resumes it; ``--resume``
continues from Ray Tune's experiment state (finished trials are not re-run; MLflow keeps one run per
trial and each epoch once).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any, Sequence

from mtlsearch import cluster, console, faults, runner
from mtlsearch.errors import ConfigError

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.launch",
        description="Search MTL balancing methods and hyperparameters with Ray Tune (Optuna + ASHA), logging to MLflow.",
    )
    p.add_argument("--space", required=True, help="search space name (search_spaces/NAME.yaml) or path to a YAML file")
    p.add_argument("--benchmark", help="override the space's benchmark: a built-in name, or your own as module:Class or path/file.py:Class")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a key of the space file (YAML value), e.g. --set budget.num_samples=50 "
        "--set params.lr.loguniform=[1e-4,1e-2]; repeatable",
    )
    p.add_argument(
        "--protocol",
        help="a published protocol (nashmtl, libmtl; see mtlsearch.protocols) whose settings the space's own parameters override",
    )
    p.add_argument("--data-root", help="folder of a user-supplied dataset (real benchmarks)")
    p.add_argument("--num-samples", type=int, help="override the number of trials")
    p.add_argument("--max-epochs", type=int, help="override the epochs per trial (ASHA's max_t)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions pack trials onto one GPU")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument(
        "--storage",
        help="Ray Tune storage path or URI (default: ./ray_results); on a multi-node "
        "cluster a shared path (see --storage-is-shared) or a cloud URI such as s3://bucket/dir",
    )
    p.add_argument(
        "--storage-is-shared",
        action="store_true",
        help="the --storage path is a shared filesystem (NFS, ...) mounted at the same path on every node",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default: the space's name)")
    p.add_argument(
        "--optuna-storage",
        help="database URL of the Optuna studies (default: $MTLSEARCH_OPTUNA_STORAGE, else a SQLite file beside a "
        "SQLite MLflow store or in --storage), e.g. postgresql://user@host:5432/optuna for a team's shared database",
    )
    p.add_argument("--name", help="name of this search's folder under the storage (default: SPACE-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the latest unfinished search of this space (or --name)")
    p.add_argument("--seed", type=int, help="seed of the searcher and of the trials")
    p.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="retries of a crashed trial (exception, lost worker or node) from its last checkpoint; "
        "a trial whose loss became NaN/inf is not retrained",
    )
    p.add_argument("--top", type=int, default=5, help="rows in the final results table")
    p.add_argument("--quiet", action="store_true", help="print only errors and the final results table")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the space, print its parameter ranges, the epoch "
        "budget and an estimated time (one epoch timed here), and start nothing",
    )
    return p


def _positive(value: float | None, flag: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}", field=flag)


def prepare_space(args: argparse.Namespace) -> SearchSpace:
    """Load the space and apply the CLI overrides; every error here is a ConfigError (exit 2), attributed
    to the ``--set KEY=VALUE`` that wrote the key it is about (:func:`mtlsearch.spaces.blame_set`)."""
    from mtlsearch import spaces

    try:
        return _prepare_space(args)
    except ConfigError as err:
        raise spaces.blame_set(err, getattr(args, "set", None) or ()) from None


def _prepare_space(args: argparse.Namespace) -> SearchSpace:
    from mtlsearch import spaces

    _positive(args.num_samples, "--num-samples")
    _positive(args.max_epochs, "--max-epochs")
    if args.num_samples is not None:
        spaces.check_limit(args.num_samples, spaces.MAX_NUM_SAMPLES, "MTLSEARCH_MAX_NUM_SAMPLES", field="--num-samples")
    if args.max_epochs is not None:
        spaces.check_limit(args.max_epochs, spaces.MAX_EPOCHS, "MTLSEARCH_MAX_EPOCHS", field="--max-epochs")
    _positive(args.cpus_per_trial, "--cpus-per-trial", allow_zero=True)
    _positive(args.gpus_per_trial, "--gpus-per-trial", allow_zero=True)
    if args.max_failures < -1:
        raise ConfigError(f"must be >= 0 (or -1: retry forever), got {args.max_failures}", field="--max-failures")
    space = spaces.load_space(args.space, validate=False, sets=getattr(args, "set", None) or ())
    if getattr(args, "protocol", None) or (space.protocol and args.benchmark):
        space = spaces.with_protocol(
            space,
            args.protocol or space.protocol,
            benchmark=args.benchmark,
            source=None if args.protocol else str(space.path),
            field_name="--protocol" if args.protocol else "protocol",
        )
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
    data_root = args.data_root or space.data_root or os.environ.get("MTLSEARCH_DATA_ROOT")
    space = spaces.override(
        space,
        benchmark=args.benchmark,
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        # Absolute: trials run in their own working directories (relative = to where the launcher runs).
        data_root=os.path.abspath(os.path.expanduser(data_root)) if data_root else None,
        resources=resources,
        searcher=searcher,
        params=params,
    )
    if space.scheduler["grace_period"] > space.max_epochs:
        space.scheduler = {**space.scheduler, "grace_period": space.max_epochs}
    from mtlsearch import plugin_checks

    space = plugin_checks.prepare(space)  # a user's module:Class or file.py:Class: importable, the right class
    check_resource_shape(space, args)
    space.validate_trials()
    check_data_folder(space)
    plugin_checks.check_space(space)  # a user's benchmark or method: importable, tasks, a first batch on the CPU
    if space.metric.endswith("delta_m"):
        from mtlsearch.references import load_reference_file

        ref = load_reference_file(space.benchmark, space.data_root)
        split = space.metric.split("/")[0]
        if ref is None or split not in ref.get("splits", {}):
            raise ConfigError(
                f"objective {space.metric!r} needs single-task references for benchmark {space.benchmark!r} "
                f"on split {split!r}, and there are none; choose a task metric (e.g. 'val/<task>/<metric>') "
                f"or generate references with `python -m mtlsearch.references --benchmark {space.benchmark} --data-root DIR`",
                source=str(space.path),
                field="scheduler.metric" if space.multi_objective else "objective.metric",
            )
    return space


# ------------------------------------------------------------------------------ checks before Ray
def check_resource_shape(space: SearchSpace, args: argparse.Namespace) -> None:
    """Ray takes a fraction of a GPU only below 1: 0.25 packs four trials on a GPU; 1.5 is not a request."""
    gpus = space.resources["gpus_per_trial"]
    if gpus > 1 and not float(gpus).is_integer():
        where = (
            {"field": "--gpus-per-trial"}
            if args.gpus_per_trial is not None
            else {"source": str(space.path), "field": "resources.gpus_per_trial"}
        )
        raise ConfigError(f"a trial takes a fraction of one GPU (0 < g <= 1) or a whole number of GPUs, got {gpus!r}", **where)


def check_data_folder(space: SearchSpace) -> None:
    """Build the benchmark of a representative trial config: a user-supplied data folder that is missing
    or malformed fails here (the check is cheap: it lists files), before Ray or MLflow start.  The driver
    therefore needs the data folder at the same path as the nodes (shared filesystem or a copy)."""
    from mtlsearch.benchmarks import get_benchmark
    from mtlsearch.config import TrialConfig

    probe = space.probe_configs()[0]
    cfg = TrialConfig.from_dict(probe, source=str(space.path))
    try:
        get_benchmark(cfg.benchmark, data_root=cfg.data_root, **cfg.benchmark_options)
    except ConfigError as err:
        raise err.with_source(str(space.path)) from None


def results_destination(args: argparse.Namespace, space: SearchSpace) -> list[str]:
    """Where a search with these arguments writes (``--dry-run`` says it; it writes nothing)."""
    from mtlsearch import studies, tracking

    tracking_uri = args.tracking_uri or tracking.default_tracking_uri()
    storage = args.storage if args.storage and "://" in args.storage else os.path.abspath(os.path.expanduser(args.storage or "ray_results"))
    name = args.name or f"{space.name}-<date>-<time>"
    lines = [
        f"MLflow: experiment {args.experiment or space.name!r} in {tracking_uri} (one parent run for the search, one nested run per trial)",
        f"Ray Tune's results and checkpoints: {storage.rstrip('/')}/{name}",
    ]
    if space.searcher["type"] == "optuna":
        local = None if "://" in storage else Path(storage)
        study = studies.storage_url(tracking_uri, local)
        lines.append(f"Optuna study {name!r}: {study}" if study else "Optuna study: in memory (a cloud --storage with a remote MLflow)")
    return ["Results will be written to:", *(f"  {line}" for line in lines)]


def run(args: argparse.Namespace, callbacks: Sequence[Any] = ()) -> int:
    """The search; ``callbacks``: extra Ray Tune callbacks (a notebook's display, a test's fault injector)."""
    from mtlsearch import preflight

    console.quiet_libraries()
    preflight.check_args(args)
    space = prepare_space(args)
    cluster.check_job_paths(args)
    cluster.check_address(args)
    # Before Ray and any trial, creating nothing: tasks, device, metrics, tracking URI, storage, resume.
    preflight.check(args, space)
    if getattr(args, "dry_run", False):
        return console.dry_run(space, where=results_destination(args, space))
    from mtlsearch import plugins

    remote = bool(args.address or os.environ.get("RAY_ADDRESS"))
    try:
        started_ray = cluster.init_ray(
            args.address, plugins.runtime_env(space, remote=remote, in_job=cluster.in_ray_job()), quiet=getattr(args, "quiet", False)
        )
    except KeyboardInterrupt:  # Ctrl-C while Ray starts: take down what it started
        import ray

        ray.shutdown()
        raise
    try:
        return runner.run_search(args, space, callbacks)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def main(argv: Sequence[str] | None = None, *, callbacks: Sequence[Any] = ()) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return run(args, callbacks)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except faults.StartError as err:  # a start that failed for a reason that is not the user's input
        print(f"error: {err}", file=sys.stderr, flush=True)
        return faults.EXIT_START_FAILED
    except KeyboardInterrupt:  # before Ray Tune took over Ctrl-C (e.g. while Ray starts)
        print("Interrupted before the search started; nothing was run and nothing is left running.", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
