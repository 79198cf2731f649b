"""The Ray run of a search: the ``Tuner`` (searcher, scheduler, resources, storage, callbacks), the
MLflow tracker's parent run, SIGTERM handled like Ctrl-C, the book of started and ended trials, what an
interrupted search leaves (runs marked, partial results, the resume command), the results table and
the confirmation phase (:mod:`mtlsearch.confirm`, given a fit function built here).

The only place that builds a ``Tuner``; :mod:`mtlsearch.launch` calls :func:`run_search` once Ray is up.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Sequence

from mtlsearch import cluster, console, faults, resume, studies
from mtlsearch.results import best_standing, pareto_rows, results_table, status_counts, summarize, table_notes

if TYPE_CHECKING:
    from pathlib import Path

    from ray import tune
    from ray.tune import Callback, ResultGrid
    from ray.tune.experiment import Trial

    from mtlsearch.spaces import SearchSpace
    from mtlsearch.tracking import Tracker


def trial_dirname(trial: Trial) -> str:
    """Short trial folders (Ray's default repeats the whole config in the name)."""
    return f"trial_{trial.trial_id}"


def make_progress_callback(space: SearchSpace, quiet: bool = False) -> Callback:
    """The whole-search progress lines (mtlsearch.console)."""
    return console.make_progress_callback(space, quiet=quiet)


def run_search(args: argparse.Namespace, space: SearchSpace, callbacks: Sequence[Any]) -> int:
    """Run the search on the Ray that the launcher connected to or started; returns the exit code.
    ``args``: the launcher's parsed command line; ``args.search_ref`` is set to where MLflow holds it."""
    from mtlsearch import optuna_search, tracking

    # Everything that can refuse the search does so before MLflow or Ray Tune write anything.
    alive, types = cluster.cluster_nodes()
    remote = bool(args.address or os.environ.get("RAY_ADDRESS"))
    wait_s = float(os.environ.get(cluster.NODE_WAIT_ENV) or (300 if remote else 0))
    alive, types = cluster.check_cluster_resources(space, args, alive, types, wait_s)
    storage_uri, local_storage = cluster.resolve_storage(args, alive, types)
    restore_path = resume.find_restore_path(args, space, storage_uri, local_storage)
    tracking_uri = args.tracking_uri or tracking.default_tracking_uri()
    experiment = args.experiment or space.name

    name = restore_path.rstrip("/").rsplit("/", 1)[-1] if restore_path else (args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    lock = None  # held (open) until the search returns
    if local_storage is not None:  # one driver per search folder, even for searches started at the same moment
        name, lock = faults.claim_folder(local_storage, name, numbered=not (restore_path or args.name))
    search_id = f"{storage_uri.rstrip('/')}/{name}"

    # The Optuna study, kept beside the MLflow store for optuna-dashboard (mtlsearch.studies), named after the search.
    study_url = (
        studies.storage_url(tracking_uri, local_storage, getattr(args, "optuna_storage", None))
        if space.searcher["type"] == "optuna"
        else None
    )
    tracker = None
    try:
        try:
            tracker = tracking.Tracker(tracking_uri, experiment, search_id)
            tracker.start_search(
                space,
                {"benchmark": args.benchmark, "num_samples": args.num_samples, "max_epochs": args.max_epochs, "seed": args.seed},
                results_dir=local_storage / name if local_storage is not None else None,
                study=(studies.redacted(study_url), name) if study_url else None,  # no password in MLflow
                tags={tracking.TAG_SEARCHER: optuna_search.describe_settings(space)},
            )
        except Exception as err:  # the store passed the pre-flight; another writer, a full disk, a server gone since
            raise faults.StartError(
                f"MLflow at {tracking_uri} failed as the search started ({faults.first_line(err)}); "
                "nothing was trained; run the same command again"
            ) from None
        args.search_ref = (tracking_uri, experiment, tracker.parent_run_id)  # for mtlsearch.search(): where to read back
        return _fit_and_report(
            args, space, callbacks, tracker, name, storage_uri, restore_path, study_url, local_storage / name if local_storage else None
        )
    except BaseException as err:
        faults.end_runs_failed(tracker, f"the launcher stopped: {type(err).__name__}: {err}")
        raise
    finally:
        if lock is not None:
            lock.close()


def _fit_and_report(
    args: argparse.Namespace,
    space: SearchSpace,
    callbacks: Sequence[Any],
    tracker: Tracker,
    name: str,
    storage_uri: str,
    restore_path: str | None,
    study_url: str | None = None,
    folder: Path | None = None,
) -> int:
    """The Tuner's run and what is printed and logged after it; ``tracker``: the search's MLflow tracker;
    ``folder``: the search's folder when it is on a local (or mounted) disk, watched for failures to save."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import SearchAlgorithm, Searcher

    from mtlsearch import fairness, optuna_search, spaces, tracking
    from mtlsearch.optuna_search import ResumableOptunaSearch
    from trainables import train_mtl

    tracking_uri, experiment = tracker.tracking_uri, tracker.experiment
    callback = tracking.make_callback(tracker, space.metric, space.max_epochs)

    from mtlsearch.plugins import with_locations  # plugin names relative to the space file: where they are

    trainable = tune.with_resources(
        with_locations(train_mtl, space), {"cpu": space.resources["cpus_per_trial"], "gpu": space.resources["gpus_per_trial"]}
    )
    scheduler: TrialScheduler
    if space.scheduler["type"] == "asha":
        scheduler = fairness.make_asha(space)  # brackets dealt per method (same first rung for every method)
    else:
        scheduler = FIFOScheduler()
    search_alg: Searcher | SearchAlgorithm
    if space.searcher["type"] == "optuna":
        # Multi-objective: the metric/mode lists go on OptunaSearch only; Tune and ASHA keep the scalar.
        objectives = space.objectives()
        searcher = ResumableOptunaSearch(
            space=space.define_by_run(),
            sampler=optuna_search.make_sampler(space),
            metric=[m for m, _ in objectives] if space.multi_objective else space.metric,
            mode=[m for _, m in objectives] if space.multi_objective else space.mode,
            storage=studies.open_storage(study_url, name, fresh=restore_path is None) if study_url else None,
            study_name=name if study_url else None,
            max_epochs=space.max_epochs,
            strata=fairness.strata(space),
            strata_seed=space.searcher["seed"],
        )
        searcher.link_runs(tracker.trial_runs)
        search_alg = searcher
        param_space: dict[str, Any] = {}
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=space.searcher["seed"])
        param_space = space.tune_param_space()

    book = _trial_book()
    stopper = _sigterm_as_sigint()
    storage_watch = faults.StorageWatch(folder, stopper.stop) if folder is not None else None

    def make_run_config(suffix: str | None = None, num_trials: int | None = None) -> tune.RunConfig:
        shown = spaces.override(space, num_samples=num_trials) if num_trials else space
        return tune.RunConfig(
            name=f"{name}-{suffix}" if suffix else name,
            storage_path=storage_uri,
            verbose=0,
            callbacks=[
                callback,
                make_progress_callback(shown, getattr(args, "quiet", False)),
                book,
                *([storage_watch.callback] if storage_watch is not None else []),
                faults.no_retry_after_nonfinite(),
                *callbacks,
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
        )

    run_config = make_run_config()
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
    if restore_path is not None:
        if not getattr(args, "quiet", False):
            print(f"Resuming {restore_path}")
        # resume_errored: a trial that used up its retries (a lost node, ...) gets another chance from its
        # last checkpoint; one whose loss became NaN/inf fails again at once (see trainables.mtl).
        tuner = tune.Tuner.restore(restore_path, trainable, resume_errored=True)
        run_config.callbacks = [*(run_config.callbacks or []), tracking.make_resume_callback(tracker)]
        _use_this_runs_callbacks(tuner, run_config)
        _link_restored_searcher(tuner, tracker)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

    if not getattr(args, "quiet", False):
        print(
            f"Search {name!r}: {console.total_trials(space)} trials x up to {space.max_epochs} epochs of {space.benchmark!r}, "
            f"objective {space.metric} ({space.mode}); MLflow experiment {experiment!r} at {tracking_uri}"
        )
    grid = None

    def failure() -> str | None:
        return storage_watch.failure if storage_watch is not None else None

    stuck = faults.StopWatchdog(
        lambda: _interrupted(args, tracker, f"{storage_uri}/{name}", name, None, book.unfinished, book=book, space=space, failure=failure())
    )
    stopper.watchdog = stuck
    with stopper:
        try:
            grid = tuner.fit()
        except KeyboardInterrupt:  # a second Ctrl-C while Tune was already stopping
            pass
        except Exception as err:  # Ray Tune failing to write on a storage that failed: reported below
            if storage_watch is None or storage_watch.explain(err) is None:
                raise
    if failure() is not None:
        return _interrupted(args, tracker, f"{storage_uri}/{name}", name, grid, book.unfinished, book=book, space=space, failure=failure())
    if grid is None or book.unfinished or len(grid) < space.num_samples:
        return _interrupted(args, tracker, f"{storage_uri}/{name}", name, grid, book.unfinished, book=book, space=space)

    rows, columns = summarize(grid, space, 0)
    # ResultGrid iterates through __getitem__/__len__; Ray's class declares no __iter__ for type checkers.
    errors = [r for r in grid if r.error is not None]  # type: ignore[attr-defined]
    if errors and len(errors) == len(grid):
        return faults.all_errored(tracker, grid, space)
    best = None
    if rows and rows[0]["best"]:  # never an errored trial (results.rank_with_uncertainty)
        top_row = rows[0]
        best = {
            "trial_id": top_row["trial"],
            "config": top_row["_config"],
            "metrics": top_row["_metrics"],
            "run_id": tracker.trial_runs.get(top_row["trial"]),
        }
    pareto = None
    if space.multi_objective:
        pareto = pareto_rows(rows, space.objectives(), space.max_epochs)
    tracker.end_search(
        best, pareto=[r["trial"] for r in pareto] if pareto is not None else None, standing=best_standing(rows, space.metric)
    )

    unequal = fairness.budget_warning(fairness.grid_budget(grid, space.max_epochs), fairness.methods_of(space))
    if unequal:
        print(unequal, file=sys.stderr, flush=True)
        tracker.tag_search(tracking.TAG_BUDGET_WARNING, unequal)
    print()
    print(f"Best trials by {space.metric} ({space.mode}, {console.BEST_BY}); {status_counts(rows)}:")
    print(results_table(rows[: args.top], columns) if rows else "(no trial reported the objective)")
    for note in table_notes(rows, final=bool(space.final)):
        print(note)
    if pareto is not None:
        names = ", ".join(f"{m} ({d})" for m, d in space.objectives())
        print(f"\nPareto set on {names}: {len(pareto)} trials not dominated among those that reached {space.max_epochs} epochs:")
        print(results_table(pareto, columns) if pareto else "(no trial reached max_epochs)")
    if space.final and rows:
        from mtlsearch import final as final_stage

        def fit(index: int, config: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
            """One small grid per configuration: its seeds run in parallel, without early stopping."""
            tuner = tune.Tuner(
                trainable,
                # One seed per trial: the final stage's seeds are its trials (not seeds: k trials of k seeds each).
                param_space={**{k: v for k, v in config.items() if k != "seeds"}, "seed": tune.grid_search(seeds)},
                tune_config=tune.TuneConfig(
                    metric=space.metric, mode=space.mode, max_concurrent_trials=space.max_concurrent_trials, reuse_actors=True
                ),
                run_config=make_run_config(f"final{index}", len(seeds)),
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

        confirmed = final_stage.run_confirmation(space, rows, fit, tracker)
        keys = [c for c in columns if c.startswith("val/")] + (["test/delta_m"] if "test/delta_m" in columns else [])
        print(
            f"\nMean ± 95% interval over seeds {space.final['seeds']} of the best configuration per {space.final['per'] or 'search'}, "
            f"ranked by {space.metric} ({space.mode}):"
        )
        print(results_table(confirmed, ["group", "config", "seeds", *keys, "tied"]))
        for note in table_notes(confirmed, what="configuration"):
            print(note)
        top_confirmed = next((r for r in confirmed if r.get("best")), None)
        tracker.record_final(best_standing(confirmed, space.metric, id_key="config"), top_confirmed["_config"] if top_confirmed else None)
    print()
    tracker.report_offline()
    study = f" (Optuna study of the same name: optuna-dashboard {study_url})" if study_url else ""
    print(f"Ray results: {storage_uri}/{name}{study}")
    print(f"MLflow: experiment {experiment!r}, parent run {tracker.parent_run_id}")
    print(
        f"Open the runs in the MLflow UI:\n  {tracking.ui_command(tracking_uri, experiment, tracker.experiment_id, tracker.parent_run_id)}"
    )
    return 0


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
    args: argparse.Namespace,
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
    argv = getattr(args, "argv", None) or sys.argv[1:]
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


def _storage_failed(
    args: argparse.Namespace, tracker: Tracker, folder: str, name: str, unfinished: set[str], book: Any, failure: str
) -> int:
    """The search was stopped because its results cannot be saved: runs marked, one clear message, exit 1."""
    reason = f"the search's results cannot be saved in {folder}: {failure}"
    errored = set(getattr(book, "errored", set())) if book is not None else set()
    ended = set(getattr(book, "ended", set())) if book is not None else set()
    try:
        tracker.mark_interrupted(unfinished, error=reason)
        tracker.set_search_error(reason)
        tracker.end_search(None, status="FAILED")
    except Exception as err:  # the MLflow store may sit on the same failed disk
        print(f"warning: the MLflow runs could not be marked either ({faults.first_line(err)})", file=sys.stderr)
    argv = getattr(args, "argv", None) or sys.argv[1:]
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
