"""``python -m mtlsearch.launch --space NAME|PATH [...]``: run a search with Ray Tune.

The only place that builds a ``Tuner``: reads a space, picks the searcher (Optuna) and the scheduler
(ASHA), resources per trial, storage, MLflow destination and resume; prints progress and the results
table (their format, the silencing of Ray's, MLflow's and Optuna's own lines, ``--quiet`` and ``--dry-run``:
``mtlsearch.console``).  Embedded default: a local Ray started here, a SQLite MLflow store ``./mlflow.db`` and Ray
results under ``./ray_results``.  ``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI`` are honoured.

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
import json
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from mtlsearch import console, faults
from mtlsearch.errors import ConfigError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.launch",
        description="Search MTL balancing methods and hyperparameters with Ray Tune (Optuna + ASHA), logging to MLflow.",
    )
    p.add_argument("--space", required=True, help="search space name (search_spaces/NAME.yaml) or path to a YAML file")
    p.add_argument("--benchmark", help="override the space's benchmark: a built-in name, or your own as "
                   "module:Class or path/file.py:Class")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the space file (YAML value), e.g. --set budget.num_samples=50 "
                        "--set params.lr.loguniform=[1e-4,1e-2]; repeatable")
    p.add_argument("--protocol", help="a published protocol (nashmtl, libmtl; see mtlsearch.protocols) whose "
                   "settings the space's own parameters override")
    p.add_argument("--data-root", help="folder of a user-supplied dataset (real benchmarks)")
    p.add_argument("--num-samples", type=int, help="override the number of trials")
    p.add_argument("--max-epochs", type=int, help="override the epochs per trial (ASHA's max_t)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions pack trials onto one GPU")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--storage", help="Ray Tune storage path or URI (default: ./ray_results); on a multi-node "
                   "cluster a shared path (see --storage-is-shared) or a cloud URI such as s3://bucket/dir")
    p.add_argument("--storage-is-shared", action="store_true",
                   help="the --storage path is a shared filesystem (NFS, ...) mounted at the same path on every node")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default: the space's name)")
    p.add_argument("--name", help="name of this search's folder under the storage (default: SPACE-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the latest unfinished search of this space (or --name)")
    p.add_argument("--seed", type=int, help="seed of the searcher and of the trials")
    p.add_argument("--max-failures", type=int, default=0,
                   help="retries of a crashed trial (exception, lost worker or node) from its last checkpoint; "
                        "a trial whose loss became NaN/inf is not retrained")
    p.add_argument("--top", type=int, default=5, help="rows in the final results table")
    p.add_argument("--quiet", action="store_true", help="print only errors and the final results table")
    p.add_argument("--dry-run", action="store_true", help="validate the space, print its parameter ranges, the epoch "
                   "budget and an estimated time (one epoch timed here), and start nothing")
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
    if args.max_failures < -1:
        raise ConfigError(f"must be >= 0 (or -1: retry forever), got {args.max_failures}", field="--max-failures")
    space = spaces.load_space(args.space, validate=False, sets=getattr(args, "set", None) or ())
    if getattr(args, "protocol", None) or (space.protocol and args.benchmark):
        space = spaces.with_protocol(space, args.protocol or space.protocol, benchmark=args.benchmark,
                                     source=None if args.protocol else str(space.path),
                                     field_name="--protocol" if args.protocol else "protocol")
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
        space, benchmark=args.benchmark, num_samples=args.num_samples, max_epochs=args.max_epochs,
        # Absolute: trials run in their own working directories (relative = to where the launcher runs).
        data_root=os.path.abspath(os.path.expanduser(data_root)) if data_root else None,
        resources=resources, searcher=searcher, params=params,
    )
    if space.scheduler["grace_period"] > space.max_epochs:
        space.scheduler = {**space.scheduler, "grace_period": space.max_epochs}
    from mtlsearch import plugins

    space = plugins.prepare(space)  # a user's module:Class or file.py:Class: importable, the right class
    check_resource_shape(space, args)
    space.validate_trials()
    check_data_folder(space)
    plugins.check_space(space)  # a user's benchmark or method: importable, tasks, a first batch on the CPU
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


# ------------------------------------------------------------------------------ checks before Ray
def check_resource_shape(space, args: argparse.Namespace) -> None:
    """Ray takes a fraction of a GPU only below 1: 0.25 packs four trials on a GPU; 1.5 is not a request."""
    gpus = space.resources["gpus_per_trial"]
    if gpus > 1 and not float(gpus).is_integer():
        where = {"field": "--gpus-per-trial"} if args.gpus_per_trial is not None else {
            "source": str(space.path), "field": "resources.gpus_per_trial"}
        raise ConfigError(f"a trial takes a fraction of one GPU (0 < g <= 1) or a whole number of GPUs, got {gpus!r}", **where)


def check_data_folder(space) -> None:
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


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a ``ray job submit`` (Ray sets this variable)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def check_job_paths(args: argparse.Namespace) -> None:
    """Inside a Ray job the working directory is Ray's temporary copy of ``--working-dir``: results and
    MLflow runs written there by default would vanish with it."""
    if not in_ray_job():
        return
    why = ("inside a Ray job the working directory is a temporary copy of --working-dir that Ray deletes; "
           "give an absolute path or URI that outlives the job")
    if not args.storage:
        raise ConfigError(f"{why}: --storage /shared/ray_results (NFS, with --storage-is-shared) or s3://bucket/dir", field="--storage")
    if not args.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError(f"{why}: --tracking-uri http://MLFLOW-HOST:5000 or sqlite:////abs/path/mlflow.db", field="--tracking-uri")


def check_address(args: argparse.Namespace) -> None:
    address = args.address or os.environ.get("RAY_ADDRESS") or ""
    if address.startswith(("http://", "https://")):
        raise ConfigError(
            f"{address!r} is the job-submission (dashboard) address; the launcher connects to the cluster's "
            "GCS address HOST:6379, or run it with `ray job submit --address http://HOST:8265 -- python -m "
            "mtlsearch.launch ...`, where Ray sets RAY_ADDRESS", field="--address" if args.address else "RAY_ADDRESS")


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


# ------------------------------------------------------------------------------ Ray and the cluster
def _init_ray(address: str | None, runtime_env: dict[str, Any] | None = None, quiet: bool = False) -> bool:
    """Connect to ``address`` / ``$RAY_ADDRESS``, or start a local Ray; returns whether we started it.
    ``runtime_env``: what a remote cluster's workers need besides the job's own (a user's plugin modules)."""
    import ray

    if ray.is_initialized():  # e.g. a test or notebook already holds one
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        from ray.exceptions import AuthenticationError

        if not quiet:  # our line: Ray's own "Connecting to existing Ray cluster" is silenced
            print(f"Connecting to the Ray cluster at {address} ...", flush=True)
        try:
            ray.init(address=address, runtime_env=runtime_env, logging_level=console.ray_logging_level())  # an existing cluster: never start a second one
        except (AuthenticationError, ConnectionError, RuntimeError, ValueError) as err:
            chain, cause = [], err
            while cause is not None and len(chain) < 5:  # Ray wraps the AuthenticationError of the GCS client
                chain.append(getattr(cause, "message", None) or str(cause))
                cause = cause.__cause__ or cause.__context__
            hint = ""
            if any("InvalidAuthToken" in c or "uthentication" in c for c in chain):
                hint = ("; its authentication token is missing or incorrect: export RAY_AUTH_MODE=token and put the "
                        "cluster's token (the head's ~/.ray/auth_token) in ~/.ray/auth_token or RAY_AUTH_TOKEN")
            first = chain[0].strip().splitlines()[0] if chain[0].strip() else type(err).__name__
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {first}{hint}", field="--address") from None
    else:
        if not quiet:
            print("Starting a local Ray ...", flush=True)
        try:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=console.ray_logging_level(),
                     runtime_env={"worker_process_setup_hook": console.WORKER_SETUP_HOOK})
        except Exception as err:  # e.g. "The current node timed out during startup" on an overloaded machine
            ray.shutdown()
            raise faults.StartError(f"the local Ray did not start ({faults.first_line(err)}); see its logs under "
                                    f"{os.environ.get('RAY_TMPDIR', '/tmp')}/ray/session_latest/logs") from None
    return True


def cluster_nodes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alive nodes, node types an autoscaler may still add) as ``{"name", "CPU", "GPU", "max"}`` dicts.

    The node types come from the autoscaler's cluster config in the GCS (KubeRay, cluster launcher);
    it is read best-effort through a private Ray API and is empty on a fixed cluster."""
    import ray

    alive = [
        {"name": n.get("NodeManagerAddress", "?"), "CPU": float(n["Resources"].get("CPU", 0)),
         "GPU": float(n["Resources"].get("GPU", 0)), "max": 1}
        for n in ray.nodes() if n.get("Alive")
    ]
    types: list[dict[str, Any]] = []
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        for group in (config.node_group_configs if config is not None else []):
            if group.max_count != 0:
                types.append({"name": f"node type {group.name}", "CPU": float(group.resources.get("CPU", 0)),
                              "GPU": float(group.resources.get("GPU", 0)), "max": group.max_count})
    except Exception:  # noqa: BLE001 - an optional refinement; the alive nodes are authoritative
        types = []
    return alive, types


def _describe(nodes: list[dict[str, Any]]) -> str:
    return "; ".join(f"{n['name']}: {n['CPU']:g} CPU, {n['GPU']:g} GPU" for n in nodes) or "none"


NODE_WAIT_ENV = "MTLSEARCH_NODE_WAIT_S"


def check_cluster_resources(space, args: argparse.Namespace, alive, types, wait_s: float = 0.0):
    """A trial runs on one node: refuse asking for more CPUs/GPUs per trial than any node has (or, with
    an autoscaler, any node type could have) instead of leaving the trials pending forever.  On a
    remote cluster, nodes may still be joining (pods being scheduled, images pulled): wait up to
    ``wait_s`` for one that fits before refusing.  Returns the (possibly refreshed) nodes."""
    cpus, gpus = space.resources["cpus_per_trial"], space.resources["gpus_per_trial"]

    def fits(node):
        return node["CPU"] >= cpus and node["GPU"] >= gpus

    deadline = time.monotonic() + wait_s
    announced = False
    while not any(fits(n) for n in [*alive, *types]):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not announced:
            print(f"Waiting up to {wait_s:g} s ({NODE_WAIT_ENV}) for a node with {cpus:g} CPU and {gpus:g} GPU to "
                  f"join the cluster ({_describe(alive)})", flush=True)
            announced = True
        time.sleep(min(5.0, left))
        alive, types = cluster_nodes()
    nodes = [*alive, *types]
    if any(fits(n) for n in nodes):
        return alive, types
    waited = f" (after waiting {wait_s:g} s)" if wait_s > 0 else ""
    for key, flag, name, need in (("GPU", "--gpus-per-trial", "gpus_per_trial", gpus), ("CPU", "--cpus-per-trial", "cpus_per_trial", cpus)):
        have = max((n[key] for n in nodes), default=0.0)
        where = {"field": flag} if getattr(args, name) is not None else {"source": str(space.path), "field": f"resources.{name}"}
        if need > have:
            raise ConfigError(
                f"a trial asks for {need:g} {key} but no node of the cluster has more than {have:g}{waited} "
                f"({_describe(nodes)}); a trial runs on one node: ask for at most {have:g} "
                f"{'(fractions such as 0.5 share a GPU) ' if key == 'GPU' else ''}or add larger nodes",
                **where,
            )
    where = {"field": "--gpus-per-trial"} if args.gpus_per_trial is not None else {"source": str(space.path), "field": "resources.gpus_per_trial"}
    raise ConfigError(f"a trial asks for {cpus:g} CPU and {gpus:g} GPU on one node, but no node has both{waited} "
                      f"({_describe(nodes)}); lower --cpus-per-trial or --gpus-per-trial", **where)


def resolve_storage(args: argparse.Namespace, alive, types) -> tuple[str, Path | None]:
    """(storage URI or absolute path for Ray Tune, the local path or None for a cloud URI).

    A local path is only visible to the node it is on: on a multi-node cluster (alive nodes > 1, or an
    autoscaler that may add nodes) it is refused unless ``--storage-is-shared`` says that every node
    mounts it at the same path."""
    raw = args.storage
    if raw and is_uri(raw):
        return raw.rstrip("/"), None
    if raw and raw.startswith("file://"):
        raw = raw[len("file://"):]
    local = Path(raw).expanduser().resolve() if raw else Path.cwd() / "ray_results"
    grows = any(t["max"] != 0 for t in types) and (len(types) > 1 or any(t["max"] != 1 for t in types))
    if (len(alive) > 1 or grows) and not args.storage_is_shared:
        what = f"{len(alive)} nodes" if len(alive) > 1 else "an autoscaler that adds nodes"
        raise ConfigError(
            f"{'the default ' if not args.storage else ''}{str(local)!r} is a local path, but the cluster has {what} "
            f"({_describe(alive)}): trials on other nodes cannot write their checkpoints there. Give a cloud "
            "URI (s3://bucket/dir, gs://bucket/dir) or a shared filesystem mounted at the same path on every "
            "node plus --storage-is-shared",
            field="--storage",
        )
    return str(local), local


# ------------------------------------------------------------------------------ resume
def _experiment_unfinished(folder: Path) -> bool:
    """Whether Ray Tune's latest experiment state in ``folder`` has a trial that did not end."""
    states = sorted(folder.glob("experiment_state-*.json"))
    if not states:
        return True
    try:
        data = json.loads(states[-1].read_text())
        statuses = [json.loads(t[0]).get("status") for t in data.get("trial_data", [])]
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return True  # unreadable: let Ray decide
    return not statuses or any(s not in ("TERMINATED", "ERROR") for s in statuses)


def _latest_unfinished(storage: Path, space_name: str) -> Path | None:
    """The newest unfinished ``SPACE-YYYYmmdd-HHMMSS`` search folder (not a confirmation phase's)."""
    import re

    from ray.tune import Tuner

    if not storage.is_dir():
        return None
    pattern = re.compile(re.escape(space_name) + r"-\d{8}-\d{6}(-\d+)?")  # -2: started in the same second as another
    candidates = sorted((d for d in storage.iterdir() if d.is_dir() and pattern.fullmatch(d.name)),
                        key=lambda d: d.stat().st_mtime, reverse=True)
    for d in candidates:
        if Tuner.can_restore(str(d)) and _experiment_unfinished(d):
            return d
    return None


def find_restore_path(args: argparse.Namespace, space, storage_uri: str, local_storage: Path | None) -> str | None:
    """The experiment folder that ``--resume`` continues: ``--name``'s, else the latest unfinished search
    of this space under a local storage (a cloud storage needs ``--name``).  Without ``--resume``, a
    ``--name`` that is taken is refused: two searches in one folder would mix their trials."""
    from ray.tune import Tuner

    named = f"{storage_uri}/{args.name}" if args.name else None
    if not args.resume:
        if named and Tuner.can_restore(named):
            raise ConfigError(f"a search named {args.name!r} exists in {storage_uri}; add --resume to continue it "
                              "or choose another --name", field="--name")
        return None
    if named:
        if not Tuner.can_restore(named):
            raise ConfigError(f"no search to resume at {named!r}", field="--name")
        if local_storage is not None and not _experiment_unfinished(Path(named)):
            raise ConfigError(f"the search {args.name!r} in {storage_uri} has finished: nothing to resume", field="--resume")
        return named
    if local_storage is None:
        raise ConfigError("resuming from a cloud storage needs --name, the search folder that the interrupted run "
                          "printed (Ray results: URI/NAME)", field="--resume")
    found = _latest_unfinished(local_storage, space.name)
    if found is None:  # not a new full search: the user asked to continue one
        raise ConfigError(f"no unfinished search of {space.name!r} under {local_storage} to resume; run without "
                          "--resume to start a new one (or give --storage/--name of the interrupted search)", field="--resume")
    return str(found)


def resume_command(argv: Sequence[str], name: str) -> str:
    """The command line that resumes search ``name``: the same arguments plus ``--resume --name``."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--resume" or arg.startswith("--name="):
            continue
        if arg == "--name":
            skip = True
            continue
        rest.append(arg)
    return shlex.join(["python", "-m", "mtlsearch.launch", *rest, "--resume", "--name", name])


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default repeats the whole config in the name)."""
    return f"trial_{trial.trial_id}"


def make_progress_callback(space, quiet: bool = False):
    """The whole-search progress lines (mtlsearch.console)."""
    return console.make_progress_callback(space, quiet=quiet)


def _fmt(value: Any) -> str:
    from mtlsearch.console import fmt

    return fmt(value)


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


def run(args: argparse.Namespace, callbacks: Sequence[Any] = ()) -> int:
    """The search; ``callbacks``: extra Ray Tune callbacks (a notebook's display, a test's fault injector)."""
    from mtlsearch import preflight

    console.quiet_libraries()
    preflight.check_args(args)
    space = prepare_space(args)
    check_job_paths(args)
    check_address(args)
    # Before Ray and any trial, creating nothing: tasks, device, metrics, tracking URI, storage, resume.
    preflight.check(args, space)
    if getattr(args, "dry_run", False):
        return console.dry_run(space)
    from mtlsearch import plugins

    remote = bool(args.address or os.environ.get("RAY_ADDRESS"))
    try:
        started_ray = _init_ray(args.address, plugins.runtime_env(space, remote=remote, in_job=in_ray_job()),
                                quiet=getattr(args, "quiet", False))
    except KeyboardInterrupt:  # Ctrl-C while Ray starts: take down what it started
        import ray

        ray.shutdown()
        raise
    try:
        return _run_on_ray(args, space, callbacks)
    except BaseException as err:
        faults.end_runs_failed(getattr(args, "_tracker", None), f"the launcher stopped: {type(err).__name__}: {err}")
        raise
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _run_on_ray(args: argparse.Namespace, space, callbacks: Sequence[Any]) -> int:
    from mtlsearch import spaces, tracking

    # Everything that can refuse the search does so before MLflow or Ray Tune write anything.
    alive, types = cluster_nodes()
    remote = bool(args.address or os.environ.get("RAY_ADDRESS"))
    wait_s = float(os.environ.get(NODE_WAIT_ENV) or (300 if remote else 0))
    alive, types = check_cluster_resources(space, args, alive, types, wait_s)
    storage_uri, local_storage = resolve_storage(args, alive, types)
    restore_path = find_restore_path(args, space, storage_uri, local_storage)
    tracking_uri = args.tracking_uri or tracking.default_tracking_uri()
    experiment = args.experiment or space.name

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from trainables import train_mtl

    name = restore_path.rstrip("/").rsplit("/", 1)[-1] if restore_path else (args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if local_storage is not None:  # one driver per search folder, even for searches started at the same moment
        name, args._lock = faults.claim_folder(local_storage, name, numbered=not (restore_path or args.name))
    search_id = f"{storage_uri.rstrip('/')}/{name}"

    try:
        tracker = args._tracker = tracking.Tracker(tracking_uri, experiment, search_id)  # _tracker: see run()
        tracker.start_search(space, {"benchmark": args.benchmark, "num_samples": args.num_samples, "max_epochs": args.max_epochs, "seed": args.seed},
                             results_dir=local_storage / name if local_storage is not None else None)
    except Exception as err:  # the store passed the pre-flight; another writer, a full disk, a server gone since
        raise faults.StartError(f"MLflow at {tracking_uri} failed as the search started ({faults.first_line(err)}); "
                                "nothing was trained; run the same command again") from None
    args.search_ref = (tracking_uri, experiment, tracker.parent_run_id)  # for mtlsearch.search(): where to read back
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

    book = _trial_book()

    def make_run_config(suffix: str | None = None, num_trials: int | None = None):
        shown = spaces.override(space, num_samples=num_trials) if num_trials else space
        return tune.RunConfig(
            name=f"{name}-{suffix}" if suffix else name, storage_path=storage_uri, verbose=0,
            callbacks=[callback, make_progress_callback(shown, getattr(args, "quiet", False)), book, faults.no_retry_after_nonfinite(), *callbacks],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
        )

    run_config = make_run_config()
    tune_config = tune.TuneConfig(
        metric=space.metric, mode=space.mode, search_alg=search_alg, scheduler=scheduler,
        num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent_trials,
        trial_dirname_creator=trial_dirname,
        reuse_actors=True,  # a trial's worker runs the next trial: torch and the data stay loaded (trainables.mtl)
    )
    if restore_path is not None:
        if not getattr(args, "quiet", False):
            print(f"Resuming {restore_path}")
        # resume_errored: a trial that used up its retries (a lost node, ...) gets another chance from its
        # last checkpoint; one whose loss became NaN/inf fails again at once (see trainables.mtl).
        tuner = tune.Tuner.restore(restore_path, trainable, resume_errored=True)
        _use_this_runs_callbacks(tuner, run_config)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

    if not getattr(args, "quiet", False):
        print(f"Search {name!r}: {console.total_trials(space)} trials x up to {space.max_epochs} epochs of {space.benchmark!r}, "
              f"objective {space.metric} ({space.mode}); MLflow experiment {experiment!r} at {tracking_uri}")
    grid = None
    stuck = faults.StopWatchdog(lambda: _interrupted(args, tracker, f"{storage_uri}/{name}", name,
                                                      None, book.unfinished, book=book, space=space))
    with _sigterm_as_sigint(stuck):
        try:
            grid = tuner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C while Tune was already stopping
            pass
    if grid is None or book.unfinished or len(grid) < space.num_samples:
        return _interrupted(args, tracker, f"{storage_uri}/{name}", name, grid, book.unfinished, book=book, space=space)

    rows, columns = summarize(grid, space, 0)
    errors = [r for r in grid if r.error is not None]
    if errors and len(errors) == len(grid):
        return faults.all_errored(tracker, grid, space)
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
    print(f"Best trials by {space.metric} ({space.mode}, {console.BEST_BY}); {len(grid)} trials, {len(errors)} errored:")
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
    return 0


def _use_this_runs_callbacks(tuner, run_config) -> None:
    """``Tuner.restore`` brings back the RunConfig pickled when the search started, callbacks included
    (the first driver's MLflow tracker and progress printer) and ``max_failures``; this driver's replace
    them.  Ray offers no public setter, hence the private attribute (checked, so a Ray that renames it
    fails loudly here rather than logging through stale callbacks)."""
    internal = getattr(tuner, "_local_tuner", None)
    restored = internal.get_run_config() if internal is not None else None
    if restored is None or not hasattr(restored, "callbacks"):
        raise RuntimeError("this Ray version's Tuner has no _local_tuner.get_run_config(); update _use_this_runs_callbacks")
    restored.callbacks = run_config.callbacks
    restored.failure_config = run_config.failure_config


class _sigterm_as_sigint:
    """SIGTERM (``ray job stop``, a scheduler ending the job) stops the search the way Ctrl-C does:
    Ray Tune's SIGINT handler ends the trials and saves the experiment state."""

    def __init__(self, watchdog=None):
        self.watchdog = watchdog  # faults.StopWatchdog: a bounded wait for Ray Tune's stop

    def _on_sigterm(self, signum, frame):
        if self.watchdog is not None:
            self.watchdog.arm()
        os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc):
        if self.watchdog is not None:
            self.watchdog.disarm()
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _trial_book():
    """A callback that knows which trials this driver started and saw end.  After Ctrl-C, Ray Tune
    marks the trials it stopped TERMINATED in memory (the saved state says RUNNING), so the statuses in
    the ResultGrid cannot tell an interrupted search from a finished one; this can."""
    from ray.tune import Callback

    class TrialBook(Callback):
        def __init__(self):
            self.started: set[str] = set()
            self.ended: set[str] = set()

        @property
        def unfinished(self) -> set[str]:
            return self.started - self.ended

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started.add(trial.trial_id)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended.add(trial.trial_id)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended.add(trial.trial_id)

    return TrialBook()


def _interrupted(args: argparse.Namespace, tracker, folder: str, name: str, grid, unfinished: set[str], *,
                 book=None, space=None) -> int:
    """After Ctrl-C: mark the MLflow runs of unfinished trials and the search KILLED, print the results so
    far and how to resume.  Finished = ended in this driver, or before it (a resumed search); a trial
    that never started is not finished."""
    from mtlsearch import tracking

    for trial_id in sorted(unfinished):
        if trial_id in tracker.trial_runs:
            run_id = tracker.trial_runs[trial_id]
            tracker.client.set_tag(run_id, tracking.TAG_STATUS, "interrupted")
            tracker.client.set_terminated(run_id, status="KILLED")
    tracker.end_search(None, status="KILLED")
    if book is not None:
        earlier = {(r.metrics or {}).get("trial_id") for r in (grid or []) if r is not None and (r.metrics or {}).get("epoch")}
        done = len(book.ended | (earlier - book.started - {None}))
    else:
        done = len(grid) - len(unfinished) if grid is not None else 0
    argv = getattr(args, "argv", None) or sys.argv[1:]
    print(f"\nInterrupted: {done} trial(s) finished, {len(unfinished)} stopped; the search's state is saved in "
          f"{folder}.", flush=True)
    if space is not None and grid is not None:
        rows, columns = summarize(grid, space, args.top)
        if rows:
            print(f"Results so far by {space.metric} ({space.mode}, {console.BEST_BY}):")
            print(results_table(rows, columns))
    print(f"Resume it with:\n  {resume_command(argv, name)}", flush=True)
    return 130


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
