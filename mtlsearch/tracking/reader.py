"""The read side: a search as the :class:`~mtlsearch.tracking.writer.Tracker` wrote it, for the report,
``mtlsearch ui``, the API and the launcher's checks (finding a search, its runs, its space file, a metric's
history)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlsearch.errors import ConfigError
from mtlsearch.tracking.names import (
    STATUS_RUNNING,
    TAG_CHECKPOINT,
    TAG_EPOCHS,
    TAG_ERROR,
    TAG_KIND,
    TAG_SEARCH,
    TAG_STATUS,
    TAG_TIME,
    TAG_TRIAL,
    parse_param,
)
from mtlsearch.tracking.reach import open_store

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Run
    from mlflow.tracking import MlflowClient


def _latest_search(client: MlflowClient, experiment_ids: list[str]) -> Run | None:
    runs = client.search_runs(
        experiment_ids, filter_string=f"tags.`{TAG_KIND}` = 'search'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def find_search(client: MlflowClient, experiment: str | None) -> tuple[Experiment, Run]:
    """(experiment, parent run) of ``experiment``'s latest search, else of the store's latest search."""
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ConfigError(
                f"no experiment {experiment!r} in this store; its experiments: {', '.join(repr(n) for n in names) or 'none'}",
                field="--experiment",
            )
        parent = _latest_search(client, [exp.experiment_id])
        if parent is None:
            raise ConfigError(
                f"experiment {experiment!r} holds no mtlsearch search (no run tagged {TAG_KIND}=search)", field="--experiment"
            )
        return exp, parent
    ids = [e.experiment_id for e in client.search_experiments()]
    parent = _latest_search(client, ids) if ids else None
    if parent is None:
        raise ConfigError("this store holds no mtlsearch search; run one first or pass the store it used", field="--tracking-uri")
    return client.get_experiment(parent.info.experiment_id), parent


def search_objectives(parent: Run) -> list[list[str]]:
    """``[[metric, mode], ...]`` of a search from its parent run's params (:func:`search_info`)."""
    params = parent.data.params
    if "objective_metrics" in params:
        return [list(o) for o in zip(json.loads(params["objective_metrics"]), json.loads(params["objective_modes"]))]
    return [[params.get("objective_metric", "val/delta_m"), params.get("objective_mode", "max")]]


def search_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list[Run]:
    """Every run matching ``filter_string`` (all pages)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def count_search_runs(tracking_uri: str, experiment: str, search_id: str) -> int:
    """How many runs (parent and trials) of search ``search_id`` the experiment holds (0 if it does not exist)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    return len(search_runs(client, [exp.experiment_id], f"tags.`{TAG_SEARCH}` = '{search_id}'"))


def read_search(tracking_uri: str, experiment: str, search: str | None = None) -> dict[str, Any]:
    """A search as the tracker wrote it: ``search`` = a parent run id, search id or run name (default:
    the latest search of the experiment).  Returns plain values: the parent's ``name``, ``search_id``,
    ``parent_run_id``, objective (``metric``, ``mode``, ``objectives``), ``max_epochs``, ``resources``
    (None if not logged), ``benchmark``, and ``trials``: one dict per trial run (``trial_id``,
    ``run_id``, ``params``, ``status``, ``final`` metrics, ``epochs`` (None while running),
    ``time_total_s``, ``checkpoint``, ``error``, ``metric_keys`` and ``history()``: ``{metric: [(epoch,
    value), ...]}`` fetched when called)."""
    client = open_store(tracking_uri)  # a missing SQLite file is refused, not created
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"no experiment {experiment!r} at {tracking_uri}; there are: {', '.join(names) or 'none'}", field="--experiment")
    parents = search_runs(client, [exp.experiment_id], f"tags.`{TAG_KIND}` = 'search'", order_by=["attributes.start_time DESC"])
    if search:
        parents = [r for r in parents if search in (r.info.run_id, r.data.tags.get(TAG_SEARCH), r.info.run_name)]
    if not parents:
        raise ConfigError(
            f"experiment {experiment!r} has no search{f' {search!r}' if search else ''} (parent run tagged {TAG_KIND}=search)",
            field="--search" if search else "--experiment",
        )
    parent = parents[0]
    params = parent.data.params
    search_id = parent.data.tags[TAG_SEARCH]
    metric = params.get("objective_metric") or params.get("scalar_metric") or "val/delta_m"
    mode = params.get("objective_mode") or params.get("scalar_mode") or "max"
    if "objective_metrics" in params:
        objectives = list(zip(json.loads(params["objective_metrics"]), json.loads(params["objective_modes"])))
    else:
        objectives = [(metric, mode)]

    trials = []
    for run in search_runs(client, [exp.experiment_id], f"tags.`{TAG_SEARCH}` = '{search_id}' and tags.`{TAG_KIND}` = 'trial'"):
        tags = run.data.tags
        run_id = run.info.run_id
        keys = list(run.data.metrics)

        def history(run_id: str = run_id, keys: list[str] = keys) -> dict[str, list[tuple[int, float]]]:
            return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}

        trials.append(
            {
                "trial_id": tags.get(TAG_TRIAL, run_id),
                "run_id": run_id,
                "params": {k: parse_param(v) for k, v in run.data.params.items()},
                "status": tags.get(TAG_STATUS, STATUS_RUNNING),
                "final": dict(run.data.metrics),
                "metric_keys": keys,
                "epochs": int(tags[TAG_EPOCHS]) if TAG_EPOCHS in tags else None,
                "time_total_s": float(tags[TAG_TIME]) if TAG_TIME in tags else None,
                "checkpoint": tags.get(TAG_CHECKPOINT),
                "error": tags.get(TAG_ERROR),
                "history": history,
            }
        )
    return {
        "name": parent.info.run_name or Path(search_id).name,
        "search_id": search_id,
        "experiment_id": exp.experiment_id,
        "parent_run_id": parent.info.run_id,
        "metric": metric,
        "mode": mode,
        "objectives": objectives,
        "max_epochs": int(params.get("override.max_epochs") or params.get("max_epochs") or 0),
        "resources": json.loads(params["resources"] or "{}") if "resources" in params else None,
        "benchmark": params.get("override.benchmark") or params.get("benchmark"),
        "trials": trials,
        "params": dict(params),
    }


def read_space_text(tracking_uri: str, run_id: str) -> str | None:
    """The space file a search ran (its parent run's ``space/`` artifact, ``--set`` lines included), or None."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no "Downloading artifacts" bar in the report
    try:
        files = [a.path for a in client.list_artifacts(run_id, "space") if not a.is_dir]
        if not files:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, files[0], tmp)).read_text()
    except Exception:
        return None
    finally:
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """One metric of one run: ``[(epoch, value), ...]`` sorted by epoch."""
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, key))
