"""The Ray run of a search: the ``Tuner`` (searcher, scheduler, resources, storage, callbacks), the
MLflow tracker's parent run, SIGTERM handled like Ctrl-C, the book of started and ended trials, what an
interrupted search leaves (runs marked, partial results, the resume command), the results table and
the final stage (:mod:`mtlsearch.final`, given a fit function built here).

The only place that builds a ``Tuner``; :mod:`mtlsearch.launch` calls :func:`run_search` once Ray is up.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Sequence

from mtlsearch import cluster, console, faults, resume, studies
from mtlsearch.errors import first_line
from mtlsearch.options import SearchOptions, SearchResult
from mtlsearch.results import best_standing, pareto_rows, results_table, status_counts, summarize, table_notes

if TYPE_CHECKING:
    from pathlib import Path

    from ray import tune
    from ray.tune import Callback, ResultGrid
    from ray.tune.experiment import Trial
    from ray.tune.search import SearchAlgorithm, Searcher

    from mtlsearch.spaces import SearchSpace
    from mtlsearch.tracking import Tracker


def trial_dirname(trial: Trial) -> str:
    """Short trial folders (Ray's default repeats the whole config in the name)."""
    return f"trial_{trial.trial_id}"


def make_progress_callback(space: SearchSpace, quiet: bool = False) -> Callback:
    """The whole-search progress lines (mtlsearch.console)."""
    return console.make_progress_callback(space, quiet=quiet)


def run_search(options: SearchOptions, space: SearchSpace, callbacks: Sequence[Any]) -> SearchResult:
    """Run the search on the Ray that the launcher connected to or started; returns its exit code and
    where MLflow holds it."""
    from mtlsearch import optuna_search, tracking

    # Everything that can refuse the search does so before MLflow or Ray Tune write anything.
    alive, types = cluster.cluster_nodes()
    wait_s = float(os.environ.get(cluster.NODE_WAIT_ENV) or (300 if options.remote else 0))
    alive, types = cluster.check_cluster_resources(space, options, alive, types, wait_s)
    storage_uri, local_storage = cluster.resolve_storage(options, alive, types)
    restore_path = resume.find_restore_path(options, space, storage_uri, local_storage)
    tracking_uri = options.resolved_tracking_uri()
    experiment = options.experiment or space.name

    name = (
        restore_path.rstrip("/").rsplit("/", 1)[-1] if restore_path else (options.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    lock = None  # held (open) until the search returns
    if local_storage is not None:  # one driver per search folder, even for searches started at the same moment
        name, lock = faults.claim_folder(local_storage, name, numbered=not (restore_path or options.name))
    search_id = f"{storage_uri.rstrip('/')}/{name}"

    # The Optuna study, kept beside the MLflow store for optuna-dashboard (mtlsearch.studies), named after the search.
    study_url = studies.storage_url(tracking_uri, local_storage, options.optuna_storage) if space.searcher["type"] == "optuna" else None
    tracker = None
    try:
        try:
            tracker = tracking.Tracker(tracking_uri, experiment, search_id)
            tracker.start_search(
                space,
                options.overrides(),
                results_dir=local_storage / name if local_storage is not None else None,
                study=(studies.redacted(study_url), name) if study_url else None,  # no password in MLflow
                tags={tracking.TAG_SEARCHER: optuna_search.describe_settings(space)},
            )
        except Exception as err:  # the store passed the pre-flight; another writer, a full disk, a server gone since
            raise faults.StartError(
                f"MLflow at {tracking_uri} failed as the search started ({first_line(err)}); "
                "nothing was trained; run the same command again"
            ) from None
        run = _Run(
            options,
            space,
            callbacks,
            tracker,
            name,
            storage_uri,
            restore_path,
            study_url,
            local_storage / name if local_storage else None,
        )
        code = _fit_and_report(run)
        return SearchResult(code, tracking_uri, experiment, tracker.parent_run_id, name)
    except BaseException as err:
        faults.end_runs_failed(tracker, f"the launcher stopped: {type(err).__name__}: {err}")
        raise
    finally:
        if lock is not None:
            lock.close()


@dataclass
class _Run:
    """One search's Ray run: what its steps share.  ``tracker``: the search's MLflow tracker; ``folder``:
    the search's folder when it is on a local (or mounted) disk, watched for failures to save."""

    options: SearchOptions
    space: SearchSpace
    callbacks: Sequence[Any]
    tracker: Tracker
    name: str
    storage_uri: str
    restore_path: str | None
    study_url: str | None = None
    folder: Path | None = None
    trainable: Any = None
    callback: Any = None  # the MLflow tracker's Ray callback, one for the search and its final stage
    book: Any = None
    stopper: _sigterm_as_sigint | None = None
    storage_watch: faults.StorageWatch | None = None

    def start(self) -> None:
        """What the Ray run needs before its ``Tuner``: the trainable, the callbacks, SIGTERM and the storage watched."""
        from ray import tune

        from mtlsearch import tracking
        from trainables import train_mtl

        from mtlsearch.plugins import with_locations  # plugin names relative to the space file: where they are

        resources = self.space.resources
        self.trainable = tune.with_resources(
            with_locations(train_mtl, self.space), {"cpu": resources["cpus_per_trial"], "gpu": resources["gpus_per_trial"]}
        )
        self.callback = tracking.make_callback(self.tracker, self.space.metric, self.space.max_epochs)
        self.book = _trial_book()
        self.stopper = _sigterm_as_sigint()
        self.storage_watch = faults.StorageWatch(self.folder, self.stopper.stop) if self.folder is not None else None

    @property
    def search_folder(self) -> str:
        return f"{self.storage_uri}/{self.name}"

    def failure(self) -> str | None:
        return self.storage_watch.failure if self.storage_watch is not None else None

    def run_config(self, suffix: str | None = None, num_trials: int | None = None) -> tune.RunConfig:
        from ray import tune

        from mtlsearch import spaces

        shown = spaces.override(self.space, num_samples=num_trials) if num_trials else self.space
        return tune.RunConfig(
            name=f"{self.name}-{suffix}" if suffix else self.name,
            storage_path=self.storage_uri,
            verbose=0,
            callbacks=[
                self.callback,
                make_progress_callback(shown, self.options.quiet),
                self.book,
                *([self.storage_watch.callback] if self.storage_watch is not None else []),
                faults.no_retry_after_nonfinite(),
                *self.callbacks,
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=self.options.max_failures),
        )

    def interrupted(self, grid: ResultGrid | None, failure: str | None = None) -> int:
        return _interrupted(
            self.options,
            self.tracker,
            self.search_folder,
            self.name,
            grid,
            self.book.unfinished,
            book=self.book,
            space=self.space,
            failure=failure,
        )


def _make_searcher(run: _Run) -> tuple[Searcher | SearchAlgorithm, dict[str, Any]]:
    """The searcher and Ray's ``param_space`` (empty for Optuna, which defines the parameters itself)."""
    from mtlsearch import optuna_search

    space = run.space
    if space.searcher["type"] == "optuna":
        searcher = optuna_search.make_searcher(
            space,
            storage=studies.open_storage(run.study_url, run.name, fresh=run.restore_path is None) if run.study_url else None,
            study_name=run.name if run.study_url else None,
        )
        searcher.link_runs(run.tracker.trial_runs)
        return searcher, {}
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=space.searcher["seed"]), space.tune_param_space()


def _make_tuner(run: _Run) -> tune.Tuner:
    """A new ``Tuner``, or the one ``--resume`` restores (with this driver's callbacks)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from mtlsearch import fairness, tracking

    space = run.space
    run_config = run.run_config()
    if run.restore_path is not None:
        if not run.options.quiet:
            print(f"Resuming {run.restore_path}")
        # resume_errored: a trial that used up its retries (a lost node, ...) gets another chance from its
        # last checkpoint; one whose loss became NaN/inf fails again at once (see trainables.mtl).
        tuner = tune.Tuner.restore(run.restore_path, run.trainable, resume_errored=True)
        run_config.callbacks = [*(run_config.callbacks or []), tracking.make_resume_callback(run.tracker)]
        _use_this_runs_callbacks(tuner, run_config)
        _link_restored_searcher(tuner, run.tracker)
        return tuner
    # ASHA: brackets dealt per method (same first rung for every method)
    scheduler: TrialScheduler = fairness.make_asha(space) if space.scheduler["type"] == "asha" else FIFOScheduler()
    search_alg, param_space = _make_searcher(run)
    tune_config = tune.TuneConfig(
        metric=space.metric,
        mode=space.mode,
        search_alg=search_alg,
        scheduler=scheduler,
        # Ray's variant generator crosses grid values with num_samples itself; the Optuna searcher asks for each.
        num_samples=space.num_samples if space.searcher["type"] != "optuna" else console.total_trials(space),
        max_concurrent_trials=space.max_concurrent_trials,
        trial_dirname_creator=trial_dirname,
        reuse_actors=True,  # a trial's worker runs the next trial: torch and the data stay loaded (trainables.mtl)
    )
    return tune.Tuner(run.trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _fit_and_report(run: _Run) -> int:
    """The Tuner's run and what is printed and logged after it."""
    space, tracker = run.space, run.tracker
    run.start()
    tuner = _make_tuner(run)
    if not run.options.quiet:
        print(
            f"Search {run.name!r}: {console.total_trials(space)} trials x up to {space.max_epochs} epochs of {space.benchmark!r}, "
            f"objective {space.metric} ({space.mode}); MLflow experiment {tracker.experiment!r} at {tracker.tracking_uri}"
        )
    grid = _fit(run, tuner)
    if run.failure() is not None:
        return run.interrupted(grid, failure=run.failure())
    if grid is None or run.book.unfinished or len(grid) < space.num_samples or never_ran(grid):
        return run.interrupted(grid)
    # ResultGrid iterates through __getitem__/__len__; Ray's class declares no __iter__ for type checkers.
    errors = [r for r in grid if r.error is not None]  # type: ignore[attr-defined]
    if errors and len(errors) == len(grid):
        return faults.all_errored(tracker, grid, space)
    rows, columns = _report(run, grid)
    if space.final and rows:
        _final_stage(run, rows, columns)
    print()
    tracker.report_offline()
    _print_where(run)
    return 0


def _fit(run: _Run, tuner: tune.Tuner) -> ResultGrid | None:
    """``tuner.fit()`` with SIGTERM as Ctrl-C and a bounded wait for Ray Tune's stop; None if interrupted twice."""
    assert run.stopper is not None
    run.stopper.watchdog = faults.StopWatchdog(lambda: run.interrupted(None, failure=run.failure()))
    grid = None
    # An Optuna searcher is asked for as many trials ahead as run at once (Ray's own generators queue more).
    ahead: AbstractContextManager[Any] = nullcontext()
    if run.space.searcher["type"] == "optuna":
        ahead = cluster.trials_queued_ahead(run.space, cluster.cluster_nodes()[0])
    with run.stopper, ahead:
        try:
            grid = tuner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C while Tune was already stopping
            pass
        except Exception as err:  # Ray Tune failing to write on a storage that failed: reported below
            if run.storage_watch is None or run.storage_watch.explain(err) is None:
                raise
    return grid


def _report(run: _Run, grid: ResultGrid) -> tuple[list[dict[str, Any]], list[str]]:
    """The search's end in MLflow (best trial, Pareto set, standing), the budget warning and the tables."""
    from mtlsearch import fairness, tracking

    space, tracker = run.space, run.tracker
    rows, columns = summarize(grid, space, 0)
    best = None
    if rows and rows[0]["best"]:  # never an errored trial (results.rank_with_uncertainty)
        top_row = rows[0]
        best = {
            "trial_id": top_row["trial"],
            "config": top_row["_config"],
            "metrics": top_row["_metrics"],
            "run_id": tracker.trial_runs.get(top_row["trial"]),
        }
    pareto = pareto_rows(rows, space.objectives(), space.max_epochs) if space.multi_objective else None
    tracker.end_search(
        best, pareto=[r["trial"] for r in pareto] if pareto is not None else None, standing=best_standing(rows, space.metric)
    )
    unequal = fairness.budget_warning(fairness.grid_budget(grid, space.max_epochs), fairness.methods_of(space))
    if unequal:
        print(unequal, file=sys.stderr, flush=True)
        tracker.tag_search(tracking.TAG_BUDGET_WARNING, unequal)
    print()
    print(f"Best trials by {space.metric} ({space.mode}, {console.BEST_BY}); {status_counts(rows)}:")
    print(results_table(rows[: run.options.top], columns) if rows else "(no trial reported the objective)")
    for note in table_notes(rows, final=bool(space.final)):
        print(note)
    if pareto is not None:
        names = ", ".join(f"{m} ({d})" for m, d in space.objectives())
        print(f"\nPareto set on {names}: {len(pareto)} trials not dominated among those that reached {space.max_epochs} epochs:")
        print(results_table(pareto, columns) if pareto else "(no trial reached max_epochs)")
    return rows, columns


def _final_stage(run: _Run, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """The final stage (``final:`` in the space): the best configurations re-run with more seeds."""
    from ray import tune

    from mtlsearch import final as final_stage

    space = run.space
    assert space.final is not None

    def fit(index: int, config: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
        """One small grid per configuration: its seeds run in parallel, without early stopping."""
        tuner = tune.Tuner(
            run.trainable,
            # One seed per trial: the final stage's seeds are its trials (not seeds: k trials of k seeds each).
            param_space={**{k: v for k, v in config.items() if k != "seeds"}, "seed": tune.grid_search(seeds)},
            tune_config=tune.TuneConfig(
                metric=space.metric, mode=space.mode, max_concurrent_trials=space.max_concurrent_trials, reuse_actors=True
            ),
            run_config=run.run_config(f"final{index}", len(seeds)),
        )
        grid = tuner.fit()
        return [
            {
                "trial_id": (r.metrics or {}).get("trial_id"),
                "config": r.config or {},
                "metrics": r.metrics or {},
                "error": r.error is not None,
            }
            for r in grid  # type: ignore[attr-defined]  # ResultGrid: no __iter__ declared
        ]

    confirmed = final_stage.run_confirmation(space, rows, fit, run.tracker)
    keys = [c for c in columns if c.startswith("val/")] + (["test/delta_m"] if "test/delta_m" in columns else [])
    print(
        f"\nMean ± 95% interval over seeds {space.final['seeds']} of the best configuration per {space.final['per'] or 'search'}, "
        f"ranked by {space.metric} ({space.mode}):"
    )
    print(results_table(confirmed, ["group", "config", "seeds", *keys, "tied"]))
    for note in table_notes(confirmed, what="configuration"):
        print(note)
    top_confirmed = next((r for r in confirmed if r.get("best")), None)
    run.tracker.record_final(best_standing(confirmed, space.metric, id_key="config"), top_confirmed["_config"] if top_confirmed else None)


def _print_where(run: _Run) -> None:
    from mtlsearch import tracking

    tracker = run.tracker
    study = f" (Optuna study of the same name: optuna-dashboard {run.study_url})" if run.study_url else ""
    print(f"Ray results: {run.search_folder}{study}")
    print(f"MLflow: experiment {tracker.experiment!r}, parent run {tracker.parent_run_id}")
    print(
        "Open the runs in the MLflow UI:\n  "
        f"{tracking.ui_command(tracker.tracking_uri, tracker.experiment, tracker.experiment_id, tracker.parent_run_id)}"
    )


def _use_this_runs_callbacks(tuner: tune.Tuner, run_config: tune.RunConfig) -> None:
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


def _link_restored_searcher(tuner: tune.Tuner, tracker: Tracker) -> None:
    """The searcher ``Tuner.restore`` unpickled knows no tracker (its link is not saved): give it this
    driver's, so the study's trials get their MLflow run ids (``mlflow_run_id``).  Private attribute as in
    :func:`_use_this_runs_callbacks`; a Ray that renames it only loses the run ids."""
    internal = getattr(tuner, "_local_tuner", None)
    searcher: Any = getattr(getattr(internal, "_tune_config", None), "search_alg", None)
    if hasattr(searcher, "link_runs"):
        searcher.link_runs(tracker.trial_runs)


class _sigterm_as_sigint:
    """SIGTERM (``ray job stop``, a scheduler ending the job) stops the search the way Ctrl-C does:
    Ray Tune's SIGINT handler ends the trials and saves the experiment state."""

    def __init__(self, watchdog: faults.StopWatchdog | None = None):
        self.watchdog = watchdog  # faults.StopWatchdog: a bounded wait for Ray Tune's stop

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the search as SIGTERM does (also the launcher's own reasons: results that cannot be saved)."""
        if self.watchdog is not None:
            self.watchdog.arm()
        os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self) -> _sigterm_as_sigint:
        self.previous: Any = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self.watchdog is not None:
            self.watchdog.disarm()
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def never_ran(results: Any) -> int:
    """How many of Ray Tune's results (``ResultGrid`` entries) neither reported an epoch nor failed: trials
    still pending when the search was stopped.  A finished search has none (an ASHA-stopped trial reported
    its rungs); without this, a search interrupted before its first trial ran printed an empty table and
    exited 0."""
    return sum(1 for r in results if "training_iteration" not in (r.metrics or {}) and r.error is None)


def _trial_book() -> Any:
    """A callback that knows which trials this driver started and saw end.  After Ctrl-C, Ray Tune
    marks the trials it stopped TERMINATED in memory (the saved state says RUNNING), so the statuses in
    the ResultGrid cannot tell an interrupted search from a finished one; this can."""
    from ray.tune import Callback

    class TrialBook(Callback):
        def __init__(self) -> None:
            self.started: set[str] = set()
            self.ended: set[str] = set()
            self.errored: set[str] = set()

        @property
        def unfinished(self) -> set[str]:
            return self.started - self.ended

        def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            self.started.add(trial.trial_id)

        def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            self.ended.add(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            self.ended.add(trial.trial_id)
            self.errored.add(trial.trial_id)

    return TrialBook()


def _interrupted(
    args: SearchOptions,
    tracker: Tracker,
    folder: str,
    name: str,
    grid: ResultGrid | None,
    unfinished: set[str],
    *,
    book: Any = None,
    space: SearchSpace | None = None,
    failure: str | None = None,
) -> int:
    """After Ctrl-C: mark the MLflow runs of unfinished trials and the search KILLED, print the results so
    far and how to resume.  Finished = ended in this driver, or before it (a resumed search); a trial
    that never started is not finished.  ``failure``: the search's results could not be saved
    (:class:`faults.StorageWatch`): the same, but the search ends FAILED with that reason, the message
    says where, why and what to do, no ranking is shown and the exit code is 1."""
    if failure is not None:
        return _storage_failed(args, tracker, folder, name, unfinished, book, failure)
    tracker.mark_interrupted(unfinished)
    tracker.end_search(None, status="KILLED")
    if book is not None:
        earlier = {
            (r.metrics or {}).get("trial_id")
            for r in (grid or [])  # type: ignore[union-attr]  # ResultGrid: no __iter__ declared
            if r is not None and (r.metrics or {}).get("epoch")
        }
        done = len(book.ended | (earlier - book.started - {None}))
    else:
        done = len(grid) - len(unfinished) if grid is not None else 0
    argv = args.argv or sys.argv[1:]
    print(f"\nInterrupted: {done} trial(s) finished, {len(unfinished)} stopped; the search's state is saved in {folder}.", flush=True)
    if space is not None and grid is not None:
        rows, columns = summarize(grid, space, args.top, unfinished=unfinished)
        if rows:
            print(f"Results so far by {space.metric} ({space.mode}, {console.BEST_BY}):")
            print(results_table(rows, columns))
            for note in table_notes(rows):
                print(note)
    print(f"Resume it with:\n  {resume.resume_command(argv, name)}", flush=True)
    return 130


def _storage_failed(args: SearchOptions, tracker: Tracker, folder: str, name: str, unfinished: set[str], book: Any, failure: str) -> int:
    """The search was stopped because its results cannot be saved: runs marked, one clear message, exit 1."""
    reason = f"the search's results cannot be saved in {folder}: {failure}"
    errored = set(getattr(book, "errored", set())) if book is not None else set()
    ended = set(getattr(book, "ended", set())) if book is not None else set()
    try:
        tracker.mark_interrupted(unfinished, error=reason)
        tracker.set_search_error(reason)
        tracker.end_search(None, status="FAILED")
    except Exception as err:  # the MLflow store may sit on the same failed disk
        print(f"warning: the MLflow runs could not be marked either ({first_line(err)})", file=sys.stderr)
    argv = args.argv or sys.argv[1:]
    full = failure.startswith(("no space", "the disk quota"))
    fix = "free space on that disk" if full else "make the folder writable again (or give --storage a writable folder and copy it there)"
    print(
        f"\nerror: {reason}. The search was stopped: {len(ended - errored)} trial(s) finished, {len(unfinished)} stopped before "
        f"their results were saved{f', {len(errored)} errored' if errored else ''}; their MLflow runs are marked. Ray's state of the "
        f"search is kept as last saved: the epochs after it are trained again on resume. To go on, {fix}, then resume with:"
        f"\n  {resume.resume_command(argv, name)}",
        file=sys.stderr,
        flush=True,
    )
    return faults.EXIT_STORAGE_FAILED
