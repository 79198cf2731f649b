"""The Ray cluster and the storage, checked before any trial starts: inside a Ray job, the address, the
local Ray or the cluster's connection, the nodes (and an autoscaler's node types) against the resources
per trial, and a storage every trial can write to."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlsearch import console, faults
from mtlsearch.errors import ConfigError, first_line
from mtlsearch.plugins import in_ray_job

if TYPE_CHECKING:
    from mtlsearch.options import SearchOptions
    from mtlsearch.spaces import SearchSpace


def check_job_paths(args: SearchOptions) -> None:
    """Inside a Ray job the working directory is Ray's temporary copy of ``--working-dir``: results and
    MLflow runs written there by default would vanish with it."""
    if not in_ray_job():
        return
    why = (
        "inside a Ray job the working directory is a temporary copy of --working-dir that Ray deletes; "
        "give an absolute path or URI that outlives the job"
    )
    if not args.storage:
        raise ConfigError(f"{why}: --storage /shared/ray_results (NFS, with --storage-is-shared) or s3://bucket/dir", field="--storage")
    if not args.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError(f"{why}: --tracking-uri http://MLFLOW-HOST:5000 or sqlite:////abs/path/mlflow.db", field="--tracking-uri")


def check_address(args: SearchOptions) -> None:
    address = args.address or os.environ.get("RAY_ADDRESS") or ""
    if address.startswith(("http://", "https://")):
        raise ConfigError(
            f"{address!r} is the job-submission (dashboard) address; the launcher connects to the cluster's "
            "GCS address HOST:6379, or run it with `ray job submit --address http://HOST:8265 -- python -m "
            "mtlsearch.launch ...`, where Ray sets RAY_ADDRESS",
            field="--address" if args.address else "RAY_ADDRESS",
        )


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


# ------------------------------------------------------------------------------ Ray and the cluster
def init_ray(address: str | None, runtime_env: dict[str, Any] | None = None, quiet: bool = False) -> bool:
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
            ray.init(
                address=address, runtime_env=runtime_env, logging_level=console.ray_logging_level()
            )  # an existing cluster: never start a second one
        except (AuthenticationError, ConnectionError, RuntimeError, ValueError) as err:
            chain: list[str] = []
            cause: BaseException | None = err
            while cause is not None and len(chain) < 5:  # Ray wraps the AuthenticationError of the GCS client
                chain.append(getattr(cause, "message", None) or str(cause))
                cause = cause.__cause__ or cause.__context__
            hint = ""
            if any("InvalidAuthToken" in c or "uthentication" in c for c in chain):
                hint = (
                    "; its authentication token is missing or incorrect: export RAY_AUTH_MODE=token and put the "
                    "cluster's token (the head's ~/.ray/auth_token) in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                )
            first = first_line(err, typed=False, limit=None, text=chain[0])
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {first}{hint}", field="--address") from None
    else:
        if not quiet:
            print("Starting a local Ray ...", flush=True)
        try:
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                logging_level=console.ray_logging_level(),
                runtime_env={"worker_process_setup_hook": console.WORKER_SETUP_HOOK},
            )
        except Exception as err:  # e.g. "The current node timed out during startup" on an overloaded machine
            ray.shutdown()
            raise faults.StartError(
                f"the local Ray did not start ({first_line(err)}); see its logs under "
                f"{os.environ.get('RAY_TMPDIR', '/tmp')}/ray/session_latest/logs"
            ) from None
    return True


def cluster_nodes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alive nodes, node types an autoscaler may still add) as ``{"name", "CPU", "GPU", "max"}`` dicts.

    The node types come from the autoscaler's cluster config in the GCS (KubeRay, cluster launcher);
    it is read best-effort through a private Ray API and is empty on a fixed cluster."""
    import ray

    alive = [
        {
            "name": n.get("NodeManagerAddress", "?"),
            "CPU": float(n["Resources"].get("CPU", 0)),
            "GPU": float(n["Resources"].get("GPU", 0)),
            "max": 1,
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]
    types: list[dict[str, Any]] = []
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        for group in config.node_group_configs if config is not None else []:
            if group.max_count != 0:
                types.append(
                    {
                        "name": f"node type {group.name}",
                        "CPU": float(group.resources.get("CPU", 0)),
                        "GPU": float(group.resources.get("GPU", 0)),
                        "max": group.max_count,
                    }
                )
    except Exception:  # an optional refinement; the alive nodes are authoritative
        types = []
    return alive, types


def _describe(nodes: list[dict[str, Any]]) -> str:
    return "; ".join(f"{n['name']}: {n['CPU']:g} CPU, {n['GPU']:g} GPU" for n in nodes) or "none"


NODE_WAIT_ENV = "MTLSEARCH_NODE_WAIT_S"


def check_cluster_resources(
    space: SearchSpace, args: SearchOptions, alive: list[dict[str, Any]], types: list[dict[str, Any]], wait_s: float = 0.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A trial runs on one node: refuse asking for more CPUs/GPUs per trial than any node has (or, with
    an autoscaler, any node type could have) instead of leaving the trials pending forever.  On a
    remote cluster, nodes may still be joining (pods being scheduled, images pulled): wait up to
    ``wait_s`` for one that fits before refusing.  Returns the (possibly refreshed) nodes."""
    cpus, gpus = space.resources["cpus_per_trial"], space.resources["gpus_per_trial"]

    def fits(node: dict[str, Any]) -> bool:
        return node["CPU"] >= cpus and node["GPU"] >= gpus

    deadline = time.monotonic() + wait_s
    announced = False
    while not any(fits(n) for n in [*alive, *types]):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not announced:
            print(
                f"Waiting up to {wait_s:g} s ({NODE_WAIT_ENV}) for a node with {cpus:g} CPU and {gpus:g} GPU to "
                f"join the cluster ({_describe(alive)})",
                flush=True,
            )
            announced = True
        time.sleep(min(5.0, left))
        alive, types = cluster_nodes()
    nodes = [*alive, *types]
    if any(fits(n) for n in nodes):
        return alive, types
    waited = f" (after waiting {wait_s:g} s)" if wait_s > 0 else ""
    for key, flag, name, need, given in (
        ("GPU", "--gpus-per-trial", "gpus_per_trial", gpus, args.gpus_per_trial),
        ("CPU", "--cpus-per-trial", "cpus_per_trial", cpus, args.cpus_per_trial),
    ):
        have = max((n[key] for n in nodes), default=0.0)
        where = {"field": flag} if given is not None else {"source": str(space.path), "field": f"resources.{name}"}
        if need > have:
            raise ConfigError(
                f"a trial asks for {need:g} {key} but no node of the cluster has more than {have:g}{waited} "
                f"({_describe(nodes)}); a trial runs on one node: ask for at most {have:g} "
                f"{'(fractions such as 0.5 share a GPU) ' if key == 'GPU' else ''}or add larger nodes",
                **where,
            )
    where = (
        {"field": "--gpus-per-trial"}
        if args.gpus_per_trial is not None
        else {"source": str(space.path), "field": "resources.gpus_per_trial"}
    )
    raise ConfigError(
        f"a trial asks for {cpus:g} CPU and {gpus:g} GPU on one node, but no node has both{waited} "
        f"({_describe(nodes)}); lower --cpus-per-trial or --gpus-per-trial",
        **where,
    )


def resolve_storage(args: SearchOptions, alive: list[dict[str, Any]], types: list[dict[str, Any]]) -> tuple[str, Path | None]:
    """(storage URI or absolute path for Ray Tune, the local path or None for a cloud URI).

    A local path is only visible to the node it is on: on a multi-node cluster (alive nodes > 1, or an
    autoscaler that may add nodes) it is refused unless ``--storage-is-shared`` says that every node
    mounts it at the same path."""
    uri, local = args.storage_location()
    if local is None:
        return uri, None
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
    return uri, local


PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


def trials_at_once(space: SearchSpace, alive: list[dict[str, Any]]) -> int:
    """How many trials the alive nodes run side by side (a trial runs on one node), at most
    ``budget.max_concurrent_trials`` and the search's trials; at least 1."""
    cpus, gpus = space.resources["cpus_per_trial"], space.resources["gpus_per_trial"]
    fit = 0
    for node in alive:
        per_node = [math.floor(node[key] / need + 1e-9) for key, need in (("CPU", cpus), ("GPU", gpus)) if need]
        fit += min(per_node) if per_node else 0
    if space.max_concurrent_trials:
        fit = min(fit, space.max_concurrent_trials)
    return max(1, min(fit, console.total_trials(space)))


@contextmanager
def trials_queued_ahead(space: SearchSpace, alive: list[dict[str, Any]]) -> Iterator[int]:
    """While the search runs, let Ray Tune ask the searcher for as many trials ahead as run at once.

    Ray Tune asks a searcher of its own kind (Optuna's) for one pending trial at a time
    (``TUNE_MAX_PENDING_TRIALS_PG``, default 1 for such searchers; 200 for its random/grid generator).
    With ``reuse_actors`` that starves short trials: the pending trial asks for a new worker, a running
    trial ends first and hands it its worker, the new worker (still importing torch) is killed, and the
    next pending trial asks for another.  The search ran 2 or 3 trials where 4 fit, with a worker
    always starting and dying beside them (``perf/trial_cost.py``: 300 one-epoch trials, 4 at a time on
    2 CPUs, 72.7 s, 2 or 3 worker processes ran trials; with this, 60.7 s and 4).  With as many trials
    pending as fit at once, every worker is requested at the start, and a trial that ends always finds a
    pending trial to take its worker.  A value the user set is kept."""
    ahead = trials_at_once(space, alive)
    if PENDING_ENV in os.environ:
        yield int(os.environ[PENDING_ENV]) if os.environ[PENDING_ENV].strip().isdigit() else ahead
        return
    os.environ[PENDING_ENV] = str(ahead)
    try:
        yield ahead
    finally:
        os.environ.pop(PENDING_ENV, None)
