"""Loading a search: the data model (:class:`Search`, :class:`Trial`) from MLflow (through
:mod:`mtlsearch.tracking`'s read side) or from a Ray results folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mtlsearch import tracking
from mtlsearch.errors import ConfigError
from mtlsearch.tracking import STATUS_ERRORED, STATUS_RUNNING


# ======================================================================================= data model
@dataclass
class Trial:
    trial_id: str
    params: dict[str, Any]
    status: str
    final: dict[str, float]
    epochs: int
    time_total_s: float | None = None
    run_id: str | None = None
    checkpoint: str | None = None
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)  # raw rows (Ray folder only)
    _loader: Callable[[], dict[str, list[tuple[int, float]]]] | None = None
    _history: dict[str, list[tuple[int, float]]] | None = None

    def history(self) -> dict[str, list[tuple[int, float]]]:
        """``{metric: [(epoch, value), ...]}`` sorted by epoch (fetched lazily from MLflow)."""
        if self._history is None:
            self._history = self._loader() if self._loader else {}
        return self._history


@dataclass
class Search:
    name: str
    source: str
    search_id: str | None
    metric: str  # the scalar: ranks the leaderboard
    mode: str
    objectives: list[tuple[str, str]]
    max_epochs: int
    gpus_per_trial: float
    cpus_per_trial: float
    benchmark: str | None
    trials: list[Trial]
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    experiment_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    resources_known: bool = True

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def finished(self) -> bool:
        return bool(self.trials) and all(t.status != STATUS_RUNNING for t in self.trials)

    def delta_metric(self) -> str:
        """The Δm to plot: ``val/delta_m`` if reported, else the scalar."""
        return "val/delta_m" if any("val/delta_m" in t.final for t in self.trials) else self.metric


# ======================================================================================= loading
def load_mlflow(tracking_uri: str, experiment: str, search: str | None = None) -> Search:
    """A search from MLflow: ``search`` = a parent run id or search id (default: the latest)."""
    found = tracking.read_search(tracking_uri, experiment, search)
    trials = []
    for rec in found["trials"]:
        trial = Trial(
            trial_id=rec["trial_id"],
            params=rec["params"],
            status=rec["status"],
            final=rec["final"],
            epochs=rec["epochs"] or 0,
            time_total_s=rec["time_total_s"],
            run_id=rec["run_id"],
            checkpoint=rec["checkpoint"],
            error=rec["error"],
            _loader=rec["history"],
        )
        if rec["epochs"] is None and rec["metric_keys"]:  # still running: count the epochs logged so far
            trial.epochs = max((s for s, _ in trial.history().get(rec["metric_keys"][0], [])), default=0)
        trials.append(trial)
    trials.sort(key=lambda t: t.trial_id)
    resources = found["resources"] or {}
    return Search(
        name=found["name"],
        source=f"MLflow {tracking_uri} experiment {experiment!r}",
        search_id=found["search_id"],
        metric=found["metric"],
        mode=found["mode"],
        objectives=found["objectives"],
        max_epochs=found["max_epochs"],
        gpus_per_trial=float(resources.get("gpus_per_trial", 0.0)),
        cpus_per_trial=float(resources.get("cpus_per_trial", 1.0)),
        benchmark=found["benchmark"],
        trials=trials,
        parent_run_id=found["parent_run_id"],
        tracking_uri=tracking_uri,
        experiment=experiment,
        experiment_id=found.get("experiment_id"),
        info={"params": found["params"]},
        resources_known=found["resources"] is not None,
    )


def _ray_trial_states(folder: Path) -> dict[str, str]:
    """trial id -> Ray's status (TERMINATED, ERROR, RUNNING, ...) from the latest experiment state."""
    from mtlsearch.resume import experiment_state_file, saved_trials

    state = experiment_state_file(folder)
    if state is None:
        return {}
    try:
        return {str(head["trial_id"]): str(head.get("status", "")) for head in saved_trials(state)}
    except (ValueError, KeyError, TypeError, IndexError):
        return {}


def load_results(folder: str | Path) -> Search:
    """A search from a Ray results folder (``<storage>/<name>``: ``trial_*/result.json``, ``params.json``)."""
    folder = Path(folder).expanduser().resolve()
    trial_dirs = sorted(d for d in folder.iterdir() if (d / "params.json").is_file()) if folder.is_dir() else []
    if not trial_dirs:
        raise ConfigError(f"{folder} is not a Ray results folder (no <trial>/params.json in it)", field="--results")
    info = tracking.read_search_info(folder) or {}
    states = _ray_trial_states(folder)
    trials = []
    for d in trial_dirs:
        config = tracking.trial_params(json.loads((d / "params.json").read_text()))  # defaults too, as in MLflow
        rows = []
        result_file = d / "result.json"
        if result_file.is_file():
            for line in result_file.read_text().splitlines():
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:  # a line cut short by a crash
                        pass
        trial_id = str(rows[-1]["trial_id"]) if rows and "trial_id" in rows[-1] else d.name.removeprefix("trial_")
        history: dict[str, dict[int, float]] = {}
        for row in rows:
            step = int(row.get("epoch", row.get("training_iteration", 0)))
            for key, value in tracking.select_metrics(row).items():
                history.setdefault(key, {})[step] = value  # a resumed trial re-reports epochs: keep the last
        last = rows[-1] if rows else {}
        epochs = int(last.get("epoch", 0))
        max_epochs = int(info.get("max_epochs") or config.get("max_epochs") or 0)
        error_file = next((d / n for n in ("error.txt",) if (d / n).is_file()), None)
        state = states.get(trial_id)
        if error_file is not None or (d / "error.pkl").is_file() or state == "ERROR":
            status = STATUS_ERRORED
        elif state in (None, "TERMINATED"):
            status = tracking.trial_status(epochs, max_epochs)
        else:
            status = STATUS_RUNNING
        checkpoints = sorted(d.glob("checkpoint_*"))
        trials.append(
            Trial(
                trial_id=trial_id,
                params=config,
                status=status,
                final={k: v[max(v)] for k, v in history.items()},
                epochs=epochs,
                time_total_s=last.get("time_total_s"),
                checkpoint=str(checkpoints[-1]) if checkpoints else None,
                error=error_file.read_text() if error_file else None,
                results=rows,
                _history={k: sorted(v.items()) for k, v in history.items()},
            )
        )
    objectives = [tuple(o) for o in info.get("objectives", [])] or [(info.get("metric", "val/delta_m"), info.get("mode", "max"))]
    resources = info.get("resources") or {}
    return Search(
        name=folder.name,
        source=f"Ray results {folder}",
        search_id=info.get("search_id") or str(folder),
        metric=info.get("metric", "val/delta_m"),
        mode=info.get("mode", "max"),
        objectives=objectives,
        max_epochs=int(info.get("max_epochs") or max((int(t.params.get("max_epochs", 0)) for t in trials), default=0)),
        gpus_per_trial=float(resources.get("gpus_per_trial", 0.0)),
        cpus_per_trial=float(resources.get("cpus_per_trial", 1.0)),
        benchmark=info.get("benchmark") or trials[0].params.get("benchmark"),
        trials=trials,
        tracking_uri=info.get("tracking_uri"),
        experiment=info.get("experiment"),
        info=info,
        resources_known=bool(resources),
    )
