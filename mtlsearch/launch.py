"""``python -m mtlsearch.launch --space NAME|PATH [...]``: run a search with Ray Tune.

The command line: parses the flags into :class:`~mtlsearch.options.SearchOptions` and nothing more; runs the
pre-flight (``mtlsearch.preflight``: the space read, the flags applied, every check),
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
import sys
from typing import TYPE_CHECKING, Any, Sequence

from mtlsearch import cluster, console, faults, runner
from mtlsearch.errors import ConfigError
from mtlsearch.options import SearchOptions, SearchResult

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


def prepare_space(args: SearchOptions | argparse.Namespace) -> SearchSpace:
    """The space of a command line with its flags applied, through the pre-flight's checks of the space
    (:func:`mtlsearch.preflight.prepare_space`)."""
    from mtlsearch import preflight

    return preflight.prepare_space(SearchOptions.of(args))


def results_destination(options: SearchOptions, space: SearchSpace) -> list[str]:
    """Where a search with these options writes (``--dry-run`` says it; it writes nothing)."""
    from mtlsearch import studies

    tracking_uri = options.resolved_tracking_uri()
    storage, local = options.storage_location()
    name = options.name or f"{space.name}-<date>-<time>"
    lines = [
        f"MLflow: experiment {options.experiment or space.name!r} in {tracking_uri} (one parent run for the search, one nested run per trial)",
        f"Ray Tune's results and checkpoints: {storage}/{name}",
    ]
    if space.searcher["type"] == "optuna":
        study = studies.storage_url(tracking_uri, local)
        lines.append(f"Optuna study {name!r}: {study}" if study else "Optuna study: in memory (a cloud --storage with a remote MLflow)")
    return ["Results will be written to:", *(f"  {line}" for line in lines)]


def execute(options: SearchOptions, callbacks: Sequence[Any] = ()) -> SearchResult:
    """The search: the pre-flight, Ray connected or started, the run (:func:`mtlsearch.runner.run_search`);
    ``callbacks``: extra Ray Tune callbacks (a notebook's display, a test's fault injector)."""
    from mtlsearch import preflight

    console.quiet_libraries()
    # Before Ray and any trial, creating nothing: the options, the space, tasks, device, metrics, stores, resume.
    space = preflight.run(options)
    if options.dry_run:
        return SearchResult(console.dry_run(space, where=results_destination(options, space)))
    from mtlsearch import plugins

    try:
        started_ray = cluster.init_ray(
            options.address, plugins.runtime_env(space, remote=options.remote, in_job=cluster.in_ray_job()), quiet=options.quiet
        )
    except KeyboardInterrupt:  # Ctrl-C while Ray starts: take down what it started
        import ray

        ray.shutdown()
        raise
    try:
        return runner.run_search(options, space, callbacks)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def run(args: SearchOptions | argparse.Namespace, callbacks: Sequence[Any] = ()) -> int:
    """:func:`execute` for a parsed command line; returns the exit code."""
    return execute(SearchOptions.of(args), callbacks).exit_code


def main(argv: Sequence[str] | None = None, *, callbacks: Sequence[Any] = ()) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = SearchOptions.from_namespace(build_parser().parse_args(argv), argv)
    try:
        return execute(options, callbacks).exit_code
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
