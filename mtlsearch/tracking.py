"""MLflow, written from the driver only: the one module that owns the naming conventions.

* One experiment per search name (``--experiment`` overrides it).
* One parent run per search: the space file (artifact), objective, budget, scheduler and searcher
  (params), the project's git commit and package versions (tags), and at the end the best trial.
* One nested run per trial (tag ``mlflow.parentRunId``): its config as params, tags ``trial_id`` and
  ``status`` (completed / stopped early by ASHA / errored), and every reported metric at every epoch
  (``step = epoch``).  Only the metric names of DESIGN.md are logged: Tune's bookkeeping (pid,
  timestamps, config copies, ...) is not.
* Runs are looked up by (search id, trial id) before they are created, so a resumed search reuses
  its runs instead of duplicating them; an epoch already logged (a trial resumed from a checkpoint
  older than its last logged epoch, after the driver was killed) is not logged twice.

Workers never talk to MLflow, so they need no credentials, and a SQLite store has one writer.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

TAG_SEARCH = "mtlsearch.search_id"
TAG_TRIAL = "mtlsearch.trial_id"
TAG_STATUS = "mtlsearch.status"
TAG_KIND = "mtlsearch.kind"  # "search" or "trial"
PARENT_TAG = "mlflow.parentRunId"
METRIC_ROOTS = ("train", "val", "test", "weights", "dominance")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def is_metric(key: str, value: Any) -> bool:
    """Whether a reported key is one of ours (``<root>/...`` with a finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    root = key.split("/", 1)[0]
    return "/" in key and (root in METRIC_ROOTS or key.endswith("/solver_failures")) and math.isfinite(value)


def select_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if is_metric(k, v)}


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("mtlsearch", "torch", "ray", "optuna", "mlflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


class Tracker:
    """Driver-side MLflow writer for one search."""

    def __init__(self, tracking_uri: str, experiment: str, search_id: str):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._mlflow = mlflow
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.experiment = experiment
        self.search_id = search_id
        self.parent_run_id: str | None = None
        self.trial_runs: dict[str, str] = {}
        self._last_step: dict[str, int] = {}  # run id -> last epoch logged

    def _find_run(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def start_search(self, space, overrides: Mapping[str, Any]) -> str:
        run_id = self._find_run(**{TAG_SEARCH: self.search_id, TAG_KIND: "search"})
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=self.search_id,
                tags={TAG_SEARCH: self.search_id, TAG_KIND: "search", **({"git_commit": c} if (c := _git_commit()) else {}),
                      **{f"version.{k}": v for k, v in _versions().items()}},
            )
            run_id = run.info.run_id
            params = {
                "space": space.name, "benchmark": space.benchmark, "objective_metric": space.metric,
                "objective_mode": space.mode, "num_samples": space.num_samples, "max_epochs": space.max_epochs,
                "scheduler": json.dumps(space.scheduler), "searcher": json.dumps(space.searcher),
                "resources": json.dumps(space.resources),
            }
            params.update({f"override.{k}": v for k, v in overrides.items() if v is not None})
            for key, value in params.items():
                self.client.log_param(run_id, key, _param_value(value))
            self.client.log_text(run_id, space.text, f"space/{Path(str(space.path)).name}")
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

    def trial_run(self, trial_id: str, config: Mapping[str, Any]) -> str:
        if trial_id in self.trial_runs:
            return self.trial_runs[trial_id]
        run_id = self._find_run(**{TAG_SEARCH: self.search_id, TAG_TRIAL: trial_id})
        if run_id is None:
            name = f"{trial_id} {config.get('method', '')}".strip()
            run = self.client.create_run(
                self.experiment_id, run_name=name,
                tags={PARENT_TAG: self.parent_run_id, TAG_SEARCH: self.search_id, TAG_TRIAL: trial_id,
                      TAG_KIND: "trial", TAG_STATUS: "running"},
            )
            run_id = run.info.run_id
            self._last_step[run_id] = -1
            for key, value in config.items():
                self.client.log_param(run_id, key, _param_value(value))
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.trial_runs[trial_id] = run_id
        return run_id

    def log_result(self, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        run_id = self.trial_run(trial_id, config)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if run_id not in self._last_step:  # a run found again (resumed search): what is logged already?
            keys = sorted(self.client.get_run(run_id).data.metrics, key=lambda k: not k.startswith("train/"))
            history = self.client.get_metric_history(run_id, keys[0]) if keys else []
            self._last_step[run_id] = max((m.step for m in history), default=-1)
        if step <= self._last_step[run_id]:
            return
        self._last_step[run_id] = step
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in select_metrics(result).items()]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])

    def end_trial(self, trial_id: str, config: Mapping[str, Any], status: str, *, error: str | None = None,
                  checkpoint: str | None = None) -> None:
        run_id = self.trial_run(trial_id, config)
        self.client.set_tag(run_id, TAG_STATUS, status)
        if error:
            self.client.set_tag(run_id, "error", error[:4900])
        if checkpoint:
            self.client.set_tag(run_id, "checkpoint", checkpoint)
        self.client.set_terminated(run_id, status="FAILED" if status == "errored" else "FINISHED")

    def end_search(self, best: Mapping[str, Any] | None, status: str = "FINISHED") -> None:
        if self.parent_run_id is None:
            return
        if best:
            self.client.set_tag(self.parent_run_id, "best_trial_id", str(best["trial_id"]))
            if best.get("run_id"):
                self.client.set_tag(self.parent_run_id, "best_run_id", best["run_id"])
            self.client.set_tag(self.parent_run_id, "best_config", json.dumps(best["config"], default=str)[:4900])
            for key, value in select_metrics(best["metrics"]).items():
                self.client.log_metric(self.parent_run_id, f"best/{key}", value)
        self.client.set_terminated(self.parent_run_id, status=status)


def make_callback(tracker: Tracker, metric: str, max_epochs: int):
    """A Ray Tune callback that mirrors trial events into MLflow through ``tracker``."""
    from ray.tune import Callback

    class MLflowTrials(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            tracker.trial_run(trial.trial_id, trial.config)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            tracker.log_result(trial.trial_id, trial.config, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            epochs = int(last.get("epoch", 0))
            status = "completed" if epochs >= max_epochs else "stopped early by ASHA"
            checkpoint = getattr(trial, "checkpoint", None)
            ckpt = getattr(checkpoint, "path", None)
            tracker.end_trial(trial.trial_id, trial.config, status, checkpoint=ckpt)

        def on_trial_error(self, iteration, trials, trial, **info):
            err = None
            error_file = getattr(trial, "error_file", None)
            if error_file and os.path.exists(error_file):
                err = Path(error_file).read_text()
            tracker.end_trial(trial.trial_id, trial.config, "errored", error=err)

    return MLflowTrials()
