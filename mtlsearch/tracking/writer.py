"""The writer: :class:`Tracker`, the driver's MLflow writer of one search (tolerant of MLflow failures; see
:mod:`mtlsearch.tracking`), and :func:`log_report`, the report's files on a search's parent run."""

from __future__ import annotations

import functools
import json
import sys
import time
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TypeVar

from mtlsearch.tracking.names import (
    PARENT_TAG,
    STATUS_ERRORED,
    STATUS_LOST,
    STATUS_RUNNING,
    TAG_CHECKPOINT,
    TAG_EPOCHS,
    TAG_ERROR,
    TAG_KIND,
    TAG_PHASE,
    TAG_PROTOCOL,
    TAG_SEARCH,
    TAG_STATUS,
    TAG_TIME,
    TAG_TRIAL,
    param_value,
    search_info,
    select_metrics,
    trial_params,
    trial_run_name,
    write_search_info,
)
from mtlsearch.tracking.reach import configure_http, git_commit, versions
from mtlsearch.tracking.reader import search_runs
from mtlsearch.tracking.stores import create_sqlite_store, sqlite_path, store_lock
from mtlsearch.tracking.view import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NUMERIC_DISTRIBUTIONS, are_numbers, set_trials_view

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace

F = TypeVar("F", bound=Callable[..., Any])


def _tolerant(method: F) -> F:
    """Tolerant mode: the first failure warns once and turns the tracker off; the search goes on."""

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        if self.offline_since is not None:
            self.missed += 1
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # MlflowException, requests' ConnectionError, sqlite errors, ...
            if not self.tolerant:
                raise
            self._go_offline(err)
            return None

    return typing.cast(F, wrapper)


class Tracker:
    """Driver-side MLflow writer for one search (``search_id`` = its Ray results folder)."""

    def __init__(self, tracking_uri: str, experiment: str, search_id: str, *, tolerant: bool = True):
        import mlflow  # noqa: F401  (registers the stores)
        from mlflow.tracking import MlflowClient

        configure_http(tracking_uri)
        self.tracking_uri = tracking_uri
        with store_lock(tracking_uri):  # the client opens (and creates or migrates) a SQLite store at once
            db = sqlite_path(tracking_uri)
            if db is not None:
                create_sqlite_store(db)  # all at once or not at all (see create_sqlite_store)
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self._find_or_create_experiment(experiment)
        self.experiment = experiment
        self.search_id = search_id
        self.tolerant = tolerant
        self.parent_run_id: str | None = None
        self.searched: list[str] = []  # the searched parameters, named in the trial runs' names
        self.trial_runs: dict[str, str] = {}
        self._steps: dict[str, dict[str, set[int]]] = {}  # run id -> metric -> epochs already logged
        # run id -> (status, tags) as this tracker last wrote or read them: a trial's start and end compare
        # against these instead of reading the run back (each read or write is a transaction of the store)
        self._runs: dict[str, tuple[str, dict[str, str]]] = {}
        self._fresh = False  # this tracker created the search's parent run: none of its trial runs exist yet
        self.offline_since: float | None = None
        self.missed = 0  # tracker calls skipped while offline

    def _find_or_create_experiment(self, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        for attempt in range(3):
            # Two searches started at once on a new store: both create its tables or the experiment, and
            # the slower one fails on what the other made; looking again then finds it.
            try:
                exp = self.client.get_experiment_by_name(experiment)
                if exp is not None:
                    self.experiment_id = exp.experiment_id
                    if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an earlier mtlsearch
                        self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                else:
                    db = sqlite_path(self.tracking_uri)
                    location = (db.parent / "mlruns").as_uri() if db is not None else None
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                    )
                break
            except Exception:  # artifacts out of reach: the report infers the space from the trials
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
                self.client = MlflowClient(tracking_uri=self.tracking_uri)

    # -------------------------------------------------------------- helpers
    def _go_offline(self, err: Exception) -> None:
        self.offline_since = time.time()
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        print(
            f"warning: MLflow at {self.tracking_uri} failed ({type(err).__name__}: {first}); the search goes on "
            f"without it and every result stays in Ray's storage. Copy them into MLflow later with:\n  "
            f"{self.sync_command()}",
            file=sys.stderr,
            flush=True,
        )

    def sync_command(self) -> str:
        return (
            f"python -m mtlsearch.report sync --results {self.search_id} --tracking-uri {self.tracking_uri} --experiment {self.experiment}"
        )

    def _find_run(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def _logged_steps(self, run_id: str) -> dict[str, set[int]]:
        """Epochs already in MLflow per metric (read once per run that existed before us)."""
        if run_id not in self._steps:
            steps: dict[str, set[int]] = {}
            for key in self.client.get_run(run_id).data.metrics:
                steps[key] = {m.step for m in self.client.get_metric_history(run_id, key)}
            self._steps[run_id] = steps
        return self._steps[run_id]

    def _known(self, run_id: str) -> tuple[str, dict[str, str]]:
        """(status, tags) of a run: as this tracker last wrote them, else read once."""
        if run_id not in self._runs:
            run = self.client.get_run(run_id)
            self._runs[run_id] = (run.info.status, dict(run.data.tags))
        return self._runs[run_id]

    def _finish(self, run_id: str, status: str) -> None:
        now, tags = self._known(run_id)
        if now != status:
            self.client.set_terminated(run_id, status=status)
            self._runs[run_id] = (status, tags)

    # -------------------------------------------------------------- the search
    def start_search(
        self,
        space: SearchSpace,
        overrides: Mapping[str, Any],
        results_dir: Path | None = None,
        study: tuple[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create (or find again, on resume) the parent run; write the search's description beside
        Ray's results when they are on a local disk (``tags`` too, so ``report sync`` recreates them).
        Not tolerant: failing here stops the launch."""
        info = search_info(space, overrides, study)
        if tags:
            info["tags"] = dict(tags)
        self.searched = [p.name for p in space.params if p.kind != "value"]
        numeric = [
            p.name for p in space.params if p.kind in NUMERIC_DISTRIBUTIONS or (p.kind in ("choice", "grid") and are_numbers(p.args))
        ]
        if results_dir is not None:
            write_search_info(
                Path(results_dir), {**info, "experiment": self.experiment, "tracking_uri": self.tracking_uri, "search_id": self.search_id}
            )
        run_id = self.start_search_from(info)
        always = [p.name for p in space.params if p.kind != "value" and not p.when]
        set_trials_view(
            self.client, self.experiment_id, run_id, Path(self.search_id).name, info["objectives"], self.searched, numeric, always
        )
        return run_id

    def start_search_from(self, info: Mapping[str, Any], *, reopen: bool = True) -> str:
        """Find or create the parent run from :func:`search_info`; ``reopen``: mark a found one RUNNING
        (a resumed search), else leave it as it is (a re-sync)."""
        run_id = self._find_run(**{TAG_SEARCH: self.search_id, TAG_KIND: "search"})
        if run_id is None:
            commit = git_commit()
            run = self.client.create_run(
                self.experiment_id,
                run_name=Path(self.search_id).name,
                tags={
                    TAG_SEARCH: self.search_id,
                    TAG_KIND: "search",
                    **({"git_commit": commit} if commit else {}),
                    **({TAG_PROTOCOL: info["params"]["protocol"]} if info.get("params", {}).get("protocol") else {}),
                    **{f"version.{k}": v for k, v in versions().items()},
                    **{k: str(v)[:4900] for k, v in (info.get("tags") or {}).items()},
                },
            )
            run_id = run.info.run_id
            self._fresh = True
            self._log_params(run_id, info.get("params", {}))
            if info.get("space_text"):
                self.client.log_text(run_id, info["space_text"], f"space/{info.get('space_file') or 'space.yaml'}")
        elif reopen and self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    @_tolerant
    def tag_search(self, key: str, value: str) -> None:
        """Set one tag of the search's parent run (tags, unlike params, may change on resume)."""
        if self.parent_run_id is not None:
            self.client.set_tag(self.parent_run_id, key, value[:4900])

    @_tolerant
    def end_search(
        self,
        best: Mapping[str, Any] | None,
        status: str = "FINISHED",
        *,
        pareto: Iterable[str] | None = None,
        standing: Mapping[str, Any] | None = None,
    ) -> None:
        """The search's parent run ends with its ``best`` trial (``trial_id``, ``config``, ``metrics``,
        ``run_id``), the Pareto set's trial ids, and ``standing`` (:func:`mtlsearch.results.best_standing`:
        the best configuration's interval, the trials tied with it, the test, the trial counts)."""
        if self.parent_run_id is None:
            return
        run = self.client.get_run(self.parent_run_id)
        tags = {}
        standing_metrics: dict[str, float] = {}
        if standing:
            for key in ("best_interval", "tied_with_best", "ranking_test", "trial_counts"):
                if standing.get(key) is not None:
                    tags[key] = str(standing[key])[:4900]
            metric = standing.get("metric")
            if standing.get("ci95") is not None and metric:
                low, high = standing["ci95"]
                standing_metrics.update({f"best_ci95_low/{metric}": float(low), f"best_ci95_high/{metric}": float(high)})
            if standing.get("seeds"):
                standing_metrics["best_seeds"] = float(standing["seeds"])
        if best:
            tags["best_trial_id"] = str(best["trial_id"])
            run_id = best.get("run_id") or self.trial_runs.get(str(best["trial_id"]))
            if run_id:
                tags["best_run_id"] = run_id
            tags["best_config"] = json.dumps(trial_params(best["config"]), sort_keys=True, default=str)[:4900]
        if pareto is not None:
            tags["pareto_trial_ids"] = " ".join(pareto)[:4900]
        for key, value in tags.items():
            if run.data.tags.get(key) != value:
                self.client.set_tag(self.parent_run_id, key, value)
        if best:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            values = {f"best/{k}": v for k, v in select_metrics(best["metrics"]).items()} | standing_metrics
            new = [Metric(k, v, now, 0) for k, v in values.items() if run.data.metrics.get(k) != v]
            if new:
                self.client.log_batch(self.parent_run_id, metrics=new)
        self._finish(self.parent_run_id, status)

    @_tolerant
    def record_final(self, standing: Mapping[str, Any], config: Mapping[str, Any] | None) -> None:
        """After the confirmation phase (:mod:`mtlsearch.confirm`): its ranking on the parent run, beside
        the search's own best: tags ``final_best_config``, ``final_best_interval``, ``final_tied_with_best``
        (the confirmed configurations tied with it); metrics ``final_best_ci95_low/<metric>``,
        ``final_best_ci95_high/<metric>``, ``final_best_seeds``."""
        if self.parent_run_id is None:
            return
        from mlflow.entities import Metric

        tags = {"final_best_interval": standing.get("best_interval"), "final_tied_with_best": standing.get("tied_with_best")}
        if config is not None:
            tags["final_best_config"] = json.dumps(trial_params(config), sort_keys=True, default=str)
        for key, value in tags.items():
            if value is not None:
                self.client.set_tag(self.parent_run_id, key, str(value)[:4900])
        metrics = {}
        if standing.get("ci95") is not None and standing.get("metric"):
            low, high = standing["ci95"]
            metrics.update(
                {f"final_best_ci95_low/{standing['metric']}": float(low), f"final_best_ci95_high/{standing['metric']}": float(high)}
            )
        if standing.get("seeds"):
            metrics["final_best_seeds"] = float(standing["seeds"])
        if metrics:
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])

    def report_offline(self) -> None:
        """At the end of a search: say again what was not logged and how to catch up."""
        if self.offline_since is not None:
            print(
                f"warning: MLflow was unreachable from {time.strftime('%H:%M:%S', time.localtime(self.offline_since))} "
                f"on ({self.missed} updates not logged). Copy the results into MLflow with:\n  {self.sync_command()}",
                file=sys.stderr,
                flush=True,
            )

    # -------------------------------------------------------------- trials
    def trial_run(self, trial_id: str, config: Mapping[str, Any]) -> str:
        """The trial's run: cached, else found by tags, else created with its params."""
        if trial_id in self.trial_runs:
            return self.trial_runs[trial_id]
        # A search this tracker started has no trial runs but those it made (cached above): no lookup.
        run_id = None if self._fresh else self._find_run(**{TAG_SEARCH: self.search_id, TAG_TRIAL: trial_id})
        if run_id is None:
            name = trial_run_name(trial_id, config, self.searched)
            tags = {
                **({PARENT_TAG: self.parent_run_id} if self.parent_run_id else {}),
                TAG_SEARCH: self.search_id,
                TAG_TRIAL: trial_id,
                TAG_KIND: "trial",
                TAG_STATUS: STATUS_RUNNING,
                **({TAG_PROTOCOL: str(config["protocol"])} if config.get("protocol") else {}),
            }
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            self._steps[run_id] = {}
            self._runs[run_id] = (run.info.status, dict(tags))
            self._log_params(run_id, trial_params(config))
        self.trial_runs[trial_id] = run_id
        return run_id

    @_tolerant
    def start_trial(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """A trial starts or resumes: its run is RUNNING with status ``running``."""
        run_id = self.trial_run(trial_id, config)
        status, tags = self._known(run_id)
        if tags.get(TAG_STATUS) != STATUS_RUNNING:
            self.client.set_tag(run_id, TAG_STATUS, STATUS_RUNNING)
            tags[TAG_STATUS] = STATUS_RUNNING
        if status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
            self._runs[run_id] = ("RUNNING", tags)

    @_tolerant
    def log_result(self, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any]) -> int:
        return self.log_results(trial_id, config, [result])

    def log_results(self, trial_id: str, config: Mapping[str, Any], results: Iterable[Mapping[str, Any]]) -> int:
        """Log epoch results (``step = epoch``), skipping (metric, epoch) pairs already in MLflow;
        returns how many values were written."""
        from mlflow.entities import Metric

        run_id = self.trial_run(trial_id, config)
        logged = self._logged_steps(run_id)
        metrics = []
        for result in results:
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            ts = int(1000 * float(result.get("timestamp", time.time())))
            for key, value in select_metrics(result).items():
                if step not in logged.setdefault(key, set()):
                    metrics.append(Metric(key, value, ts, step))
                    logged[key].add(step)
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])
        return len(metrics)

    @_tolerant
    def end_trial(
        self,
        trial_id: str,
        config: Mapping[str, Any],
        status: str,
        *,
        error: str | None = None,
        checkpoint: str | None = None,
        epochs: int | None = None,
        time_total_s: float | None = None,
    ) -> None:
        run_id = self.trial_run(trial_id, config)
        from mlflow.entities import RunTag

        tags = {TAG_STATUS: status}
        if error:
            tags[TAG_ERROR] = error[-4900:]
        if checkpoint:
            tags[TAG_CHECKPOINT] = str(checkpoint)
        if epochs is not None:
            tags[TAG_EPOCHS] = str(int(epochs))
        if time_total_s is not None:
            tags[TAG_TIME] = f"{float(time_total_s):.3f}"
        _, current = self._known(run_id)
        changed = [RunTag(key, value) for key, value in tags.items() if current.get(key) != value]
        if changed:
            self.client.log_batch(run_id, tags=changed)  # one transaction for the trial's end tags
            current.update((tag.key, tag.value) for tag in changed)
        self._finish(run_id, "FAILED" if status == STATUS_ERRORED else "FINISHED")

    def mark_phase(self, trial_id: str, phase: str) -> None:
        """Tag a trial's run with the search phase it belongs to (``final``: the confirmation phase)."""
        if trial_id in self.trial_runs:
            self.client.set_tag(self.trial_runs[trial_id], TAG_PHASE, phase)
            self._runs.pop(self.trial_runs[trial_id], None)

    def mark_interrupted(self, trial_ids: Iterable[str], *, error: str | None = None) -> None:
        """After Ctrl-C: the runs of the trials that had not ended are KILLED, status ``interrupted``
        (``error``: why the launcher stopped them, as their ``error`` tag)."""
        for trial_id in sorted(trial_ids):
            if trial_id in self.trial_runs:
                run_id = self.trial_runs[trial_id]
                self._runs.pop(run_id, None)
                self.client.set_tag(run_id, TAG_STATUS, "interrupted")
                if error:
                    self.client.set_tag(run_id, TAG_ERROR, error[-4900:])
                self.client.set_terminated(run_id, status="KILLED")

    def set_search_error(self, error: str) -> None:
        """Why the search ended early, as the parent run's ``error`` tag."""
        if self.parent_run_id is not None:
            self.client.set_tag(self.parent_run_id, TAG_ERROR, error[-4900:])

    def fail_running_runs(self, reason: str) -> None:
        """The search's runs still RUNNING (a start that failed) end FAILED with ``reason`` as their error."""
        for run_id in [*self.trial_runs.values(), self.parent_run_id]:
            if run_id:
                self._runs.pop(run_id, None)
            if run_id and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_tag(run_id, TAG_ERROR, reason[-4900:])
                if run_id != self.parent_run_id:
                    self.client.set_tag(run_id, TAG_STATUS, STATUS_ERRORED)
                self.client.set_terminated(run_id, status="FAILED")

    @_tolerant
    def drop_lost_trials(self, known: Iterable[str]) -> list[str]:
        """A resumed search: the trial runs of this search whose trial Ray's saved state does not hold are
        marked lost and moved to MLflow's deleted runs (restorable from its UI), so that the search keeps
        one run per trial.  Such a trial started in a driver killed before Ray next saved its state (Ray
        saves it every few seconds): Ray never continues it and samples its place again under a new id.
        Returns their trial ids."""
        known = set(known)
        query = f"tags.`{TAG_SEARCH}` = '{self.search_id}' and tags.`{TAG_KIND}` = 'trial'"
        lost = []
        for run in search_runs(self.client, [self.experiment_id], query):
            trial_id = run.data.tags.get(TAG_TRIAL)
            if not trial_id or trial_id in known or run.data.tags.get(TAG_PHASE):
                continue
            run_id = run.info.run_id
            self._runs.pop(run_id, None)
            self.client.set_tag(run_id, TAG_STATUS, STATUS_LOST)
            self.client.set_tag(
                run_id, TAG_ERROR, "lost: started just before the driver was killed, after Ray last saved the search's state"
            )
            if run.info.status == "RUNNING":
                self.client.set_terminated(run_id, status="KILLED")
            self.client.delete_run(run_id)
            self.trial_runs.pop(trial_id, None)
            lost.append(trial_id)
        return lost

    def count_search_runs(self) -> int:
        """How many runs (parent and trials) this search has in the experiment."""
        return len(search_runs(self.client, [self.experiment_id], f"tags.`{TAG_SEARCH}` = '{self.search_id}'"))


def log_report(tracking_uri: str, run_id: str, markdown: str, figures: Iterable[Path]) -> None:
    """The report of a search, logged to its parent run: ``report/leaderboard.md`` and the files under
    ``report/`` (the figures, the HTML page ``report.html``, the per-trial ``trials.csv``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_text(run_id, markdown, "report/leaderboard.md")
    for path in figures:
        client.log_artifact(run_id, str(path), "report")
