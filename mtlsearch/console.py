"""What a search prints on the console: our own lines only.

* :func:`quiet_libraries` silences Ray, Ray Tune, MLflow and Optuna at their source (logger levels,
  Tune's legacy reporter at verbosity 0, env vars Ray documents), before they are imported where it
  matters: a successful search prints no log line or traceback of theirs; their errors still show.
* :func:`quiet_trial_exit` (called in each trial's worker): a trial that ASHA stops ends its training
  thread with ``SystemExit``, which Python reports as "Exception ignored ... SystemExit" on the worker's
  stderr (forwarded to the driver by ``log_to_driver``); that one known message is dropped there.
* :class:`Progress` keeps the whole-search line (trials done/running, epochs spent of the budget,
  elapsed, ETA) and the live best; :data:`BEST_BY` is the one definition of "best" that the live line
  and the final table share: a trial's value at its **last** reported epoch.
* :func:`dry_run`: the ranges, the epoch budget and an estimated time, starting nothing.

Nothing here imports Ray or MLflow at module level.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mtlsearch.results import fmt  # a value in a progress line is written as in a results table

if TYPE_CHECKING:
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    from mtlsearch.spaces import Param, SearchSpace

BEST_BY = "value at each trial's last epoch, the mean over its seeds"


def quiet_libraries() -> None:
    """Before Ray Tune, MLflow or Optuna run in this process (the driver)."""
    # Tune's new output engine prints a configuration box, "View detailed results here" and a
    # TensorBoard hint even at verbose=0; the legacy reporter is silent at verbose=0 (Ray documents
    # RAY_AIR_NEW_OUTPUT=0 to switch back to it).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ray warns about frequent experiment snapshots; with epoch-sized checkpoints they are expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial MLflow database tables"
    for name, level in (
        ("ray.tune", logging.WARNING),
        # "Wrote the latest version of all result files" (INFO); its warnings: see _TuneRunFilter.
        ("ray.tune.tune", logging.WARNING),
        ("ray.tune.execution.experiment_state", logging.ERROR),
        # After Ctrl-C: "Failed to fetch metrics" of a trial that had not reported yet.
        ("ray.tune.analysis.experiment_analysis", logging.ERROR),
        # "Token authentication is enabled for this Ray cluster": Ray's default, nothing to act on.
        ("ray._private.authentication.authentication_token_setup", logging.ERROR),
        ("mlflow", logging.WARNING),
        # MLflow logs a ~60-line traceback of any SQLite error before raising it; we report it in one line.
        ("mlflow.store.db.utils", logging.CRITICAL),
        ("alembic", logging.WARNING),
        # "sample_from functions that take a spec dict are deprecated", once per conditional parameter:
        # spaces.ConditionalSample reads ``spec.config`` on purpose, since that access is what makes Ray
        # resolve the parameter a ``when`` depends on first (a plain config dict would show it unresolved).
        ("ray.tune.search.sample", logging.ERROR),
    ):
        logging.getLogger(name).setLevel(level)
    tune_run = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _TuneRunFilter) for f in tune_run.filters):
        tune_run.addFilter(_TuneRunFilter())
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _TrialErrorFilter) for f in controller.filters):
        controller.addFilter(_TrialErrorFilter())
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    except ImportError:  # optuna is only needed by spaces that use it
        pass


class _TuneRunFilter(logging.Filter):
    """Ray Tune's own lines around Ctrl-C: its "Stop signal received" warning becomes one line of ours
    (feedback while the trials stop); its advice to call ``Tuner.restore`` is dropped (the launcher
    prints the command that resumes), and so is its "Trials did not complete" list (the launcher's
    summary and each errored trial's progress line say it); its other errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Trials did not complete"):  # the launcher's summary counts them
            return False
        if record.getMessage().startswith("Stop signal received"):
            print(
                "\nStopping the search: ending its trials and saving its state (Ctrl-C again to skip saving) ...",
                file=sys.stderr,
                flush=True,
            )
            return False
        return record.levelno >= logging.ERROR


class _TrialErrorFilter(logging.Filter):
    """Ray Tune's "Trial task failed for trial ..." with the trial's whole traceback (some 50 lines a
    trial): our progress line says it in one (``ERRORED: <the error's line>``); the traceback stays in
    the trial's error.txt and its MLflow run's ``error`` tag."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trial task failed for trial")


def ray_logging_level() -> int:
    """``ray.init(logging_level=...)``: no "Started a local Ray instance" line; warnings stay."""
    return logging.WARNING


def quiet_trial_exit() -> None:
    """In a trial's worker: drop Python's "Exception ignored ... SystemExit" report of a training thread
    that Ray Tune ends (ASHA stopped the trial); every other unraisable exception is reported as before."""
    previous = sys.unraisablehook
    if getattr(previous, "_mtlsearch", False):
        return

    def hook(unraisable: Any) -> None:  # sys.UnraisableHookArgs
        if isinstance(unraisable.exc_value, SystemExit):
            return
        previous(unraisable)

    hook._mtlsearch = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


WORKER_SETUP_HOOK = "mtlsearch.console.quiet_worker"


def quiet_worker() -> None:
    """Ray's ``worker_process_setup_hook`` of a local Ray the launcher starts: runs in each worker before
    a trial's actor, so Tune's "Restored on ... from checkpoint" INFO line (a resumed or retried trial)
    is not forwarded to the console; warnings and errors are."""
    for name in ("ray.tune.trainable", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_trial_exit()


# ------------------------------------------------------------------------------ formatting
def duration(seconds: float | None) -> str:
    """``1:05`` (m:ss) or ``1:02:03``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = round(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def total_trials(space: SearchSpace) -> int:
    """Trials a search runs: grid parameters are crossed with ``num_samples`` (:mod:`mtlsearch.fairness`)."""
    from mtlsearch.fairness import total_trials as crossed

    return crossed(space)


def final_epochs(space: SearchSpace) -> int:
    """Epochs of the ``final`` stage at most: every group of ``per`` (its values when it is searched by
    choice or grid, else one group) x ``top`` x seeds x ``max_epochs``."""
    if not space.final:
        return 0
    per = next((p for p in space.params if p.name == space.final["per"] and p.dist.categorical), None)
    groups = len(per.args) if per is not None else 1
    return groups * int(space.final["top"]) * len(space.final["seeds"]) * space.max_epochs


def searched_names(space: SearchSpace) -> list[str]:
    return [p.name for p in space.params if p.kind != "value"]


# ------------------------------------------------------------------------------ live progress
class Progress:
    """The state behind the progress lines (no Ray here: :func:`make_progress_callback` feeds it)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        quiet: bool = False,
        out: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.space = space
        self.quiet = quiet
        self.total = total_trials(space)
        self.budget = self.total * space.max_epochs
        self.sign = 1 if space.mode == "max" else -1
        self.clock = clock
        self.start = clock()
        self.out = out or (lambda line: print(line, flush=True))
        self.epochs: dict[str, int] = {}  # trial -> last epoch reported
        self.last: dict[str, float] = {}  # trial -> objective at its last epoch (BEST_BY)
        self.running: set[str] = set()
        self.ended: dict[str, str] = {}  # trial -> "completed" | "stopped" | "errored"
        self.spent_here = 0  # epochs trained by this driver (for the rate; a resumed search's earlier ones excluded)

    # ---------------------------------------------------------------- counts
    @property
    def spent(self) -> int:
        return sum(self.epochs.values())

    @property
    def saved(self) -> int:
        """Epochs the budget will not spend: trials ASHA stopped (or that errored) before max_epochs."""
        return sum(self.space.max_epochs - self.epochs.get(t, 0) for t, how in self.ended.items() if how != "completed")

    def eta(self) -> float | None:
        left = max(0, self.budget - self.spent - self.saved)
        if left == 0:
            return 0.0
        elapsed = self.clock() - self.start
        if self.spent_here <= 0 or elapsed <= 0:
            return None
        return left * elapsed / self.spent_here  # an upper bound: ASHA usually stops more trials early

    def best(self) -> tuple[float, str] | None:
        if not self.last:
            return None
        trial = max(self.last, key=lambda t: self.sign * self.last[t])
        return self.last[trial], trial

    def _unspent(self, how: str) -> int:
        return sum(self.space.max_epochs - self.epochs.get(t, 0) for t, ended in self.ended.items() if ended == how)

    @property
    def asha(self) -> bool:
        return self.space.scheduler.get("type") == "asha"

    def status(self) -> str:
        notes = []
        if stopped := self._unspent("stopped"):
            notes.append(f"ASHA saved {stopped}" if self.asha else f"{stopped} not run: stopped")
        if errored := self._unspent("errored"):
            notes.append(f"{errored} not run: errored")
        return (
            f"[{len(self.ended)}/{self.total} done, {len(self.running)} running | "
            f"{self.spent}/{self.budget - self.saved} epochs"
            + (f" ({', '.join(notes)})" if notes else "")
            + f" | {duration(self.clock() - self.start)} elapsed, ETA {duration(self.eta())}]"
        )

    # ---------------------------------------------------------------- events
    def seen(self, trial_id: str, last_result: Mapping[str, Any] | None) -> None:
        """A trial known from a resumed search: its earlier epochs count as spent."""
        if trial_id not in self.epochs and last_result:
            self.epochs[trial_id] = int(last_result.get("epoch", 0) or 0)
            value = last_result.get(self.space.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.last[trial_id] = float(value)

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self.ended.pop(trial_id, None)  # a retried trial runs again

    def result(self, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        epoch = int(result.get("epoch", 0) or 0)
        if epoch > self.epochs.get(trial_id, 0):
            self.spent_here += epoch - self.epochs.get(trial_id, 0)
            self.epochs[trial_id] = epoch
        self.running.add(trial_id)
        value = result.get(self.space.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.last[trial_id] = float(value)
        if self.quiet:
            return
        params = " ".join(f"{k}={fmt(config[k])}" for k in searched_names(self.space) if k in config)
        best = self.best()
        shown = f"best {fmt(best[0])} ({best[1]})" if best else ""
        self.out(
            f"{self.status()} {trial_id} epoch {epoch}/{self.space.max_epochs} {params} "
            f"{self.space.metric}={fmt(value) if value is not None else '-'}  {shown}".rstrip()
        )

    def ended_ok(self, trial_id: str, last_result: Mapping[str, Any] | None) -> None:
        self.running.discard(trial_id)
        epochs = int((last_result or {}).get("epoch", 0) or self.epochs.get(trial_id, 0))
        self.epochs[trial_id] = max(epochs, self.epochs.get(trial_id, 0))
        self.ended[trial_id] = "completed" if epochs >= self.space.max_epochs else "stopped"
        if self.quiet:
            return
        if epochs >= self.space.max_epochs:
            self.out(f"{self.status()} {trial_id} completed ({epochs} epochs)")
        else:
            self.out(f"{self.status()} {trial_id} stopped early{' by ASHA' if self.asha else ''} at epoch {epochs}")

    def errored(self, trial_id: str, reason: str = "") -> None:
        """A trial errored; ``reason``: the first line of its error (:func:`trial_error`)."""
        self.running.discard(trial_id)
        self.ended[trial_id] = "errored"
        self.last.pop(trial_id, None)  # an errored trial is never the live best
        # An error is shown even with --quiet.
        why = f": {reason}" if reason else " (see its MLflow run / error file)"
        self.out(f"{self.status()} {trial_id} ERRORED{why}")


def trial_error(trial: Any) -> str:
    """The one-line reason of a trial's (last) error, from the error file Ray wrote for it; '' if none."""
    from mtlsearch.faults import error_line, strip_ansi

    error_file = getattr(trial, "error_file", None)
    try:
        text = strip_ansi(open(error_file).read()) if error_file else ""
    except OSError:
        return ""
    last = text.rsplit("Failure #", 1)[-1].strip()
    return error_line(last) if last else ""


def make_progress_callback(space: SearchSpace, *, quiet: bool = False) -> Callback:
    """The Ray Tune callback that feeds a :class:`Progress` (one line per result and per ended trial)."""
    from ray.tune import Callback

    class ProgressCallback(Callback):
        def __init__(self) -> None:
            self.progress = Progress(space, quiet=quiet)
            self._seeded = False

        def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
            if not self._seeded:  # a resumed search: what its trials did before counts
                self._seeded = True
                for t in trials:
                    self.progress.seen(t.trial_id, t.last_result)

        def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            self.progress.started(trial.trial_id)

        def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
            self.progress.result(trial.trial_id, trial.config, result)

        def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            self.progress.ended_ok(trial.trial_id, trial.last_result)

        def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            self.progress.errored(trial.trial_id, trial_error(trial))

    return ProgressCallback()


# ------------------------------------------------------------------------------ --dry-run
def describe_param(p: Param) -> str:
    when = (" when " + ", ".join(f"{k}={v}" for k, v in p.when.items())) if p.when else ""
    return f"{p.name}: {p.dist.describe()}{when}"


def time_one_epoch(space: SearchSpace) -> tuple[float, float]:
    """(seconds to build the first trial config's data and model, seconds of its first epoch), measured
    here in this process on the CPU with a trial's thread count, writing nothing."""
    from mtlsearch.config import TrialConfig
    from mtlsearch.multiseed import build_trainer

    import torch

    probe = {**space.probe_configs()[0], "device": "cpu"}  # dry_run times CPU trials only

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(space.resources.get("cpus_per_trial") or 1)))  # as a trial does
    try:
        t0 = time.perf_counter()
        cfg = TrialConfig.from_dict(probe, source=str(space.path))
        trainer = build_trainer(cfg)  # all of a trial's seeds (budget.seeds)
        t1 = time.perf_counter()
        next(iter(trainer.run(1)))
        return t1 - t0, time.perf_counter() - t1
    finally:
        torch.set_num_threads(threads)


def dry_run(space: SearchSpace, *, timed: bool = True, out: Callable[[str], None] = print, where: Sequence[str] = ()) -> int:
    """What the search would do, starting nothing (no Ray, no MLflow store, nothing written); ``where``:
    the lines saying where its results would go (:func:`mtlsearch.launch.results_destination`)."""
    total = total_trials(space)
    budget = total * space.max_epochs
    out(
        f"Dry run of {space.name!r} ({space.path}): benchmark {space.benchmark!r}, objective "
        f"{space.metric} ({space.mode}); the space and every trial configuration are valid."
    )
    out("Searched parameters:")
    for p in space.params:
        if p.kind != "value":
            out(f"  {describe_param(p)}")
    fixed = ", ".join(f"{p.name}={fmt(p.args)}" for p in space.params if p.kind == "value")
    if fixed:
        out(f"Fixed: {fixed}")
    sched = space.scheduler
    asha = (
        f"; ASHA may stop trials from epoch {sched['grace_period']} on (reduction factor {sched['reduction_factor']})"
        if sched.get("type") == "asha"
        else ""
    )
    seeds = f" (each epoch trains {space.seeds} seeds together, budget.seeds)" if getattr(space, "seeds", 1) > 1 else ""
    out(f"Epoch budget: {total} trials x {space.max_epochs} epochs = {budget} epochs at most{seeds}{asha}.")
    from mtlsearch.optuna_search import describe_settings

    out(f"Searcher: {describe_settings(space)}.")
    final = final_epochs(space)
    if final and space.final:
        budget += final
        out(
            f"Final stage: the best {space.final['top']} configuration(s) per {space.final['per'] or 'search'} re-run with seeds "
            f"{space.final['seeds']} for {space.max_epochs} epochs, no early stopping: {final} epochs at most; {budget} in all."
        )
    cpus = os.cpu_count() or 1
    per = space.resources.get("cpus_per_trial") or 1
    parallel = max(1, int(cpus // per))
    if space.max_concurrent_trials:
        parallel = min(parallel, space.max_concurrent_trials)
    parallel = min(parallel, total)
    if space.resources.get("gpus_per_trial"):
        # Trials train on GPUs: an epoch on this CPU says little (and may take long); say so.
        out(
            f"Estimated time: not measured: trials ask for {space.resources['gpus_per_trial']:g} GPU each; time one "
            "trial epoch with --num-samples 1 --max-epochs 1 and multiply by the epoch budget."
        )
        timed = False
    if not timed:
        for line in where:
            out(line)
        out("Nothing was started or written (no Ray, no MLflow store); run without --dry-run to search.")
        return 0
    setup_s, epoch_s = time_one_epoch(space)
    # Each worker builds the data and model once (workers run trial after trial, the data is built once per
    # search: trainables.mtl); epochs then run `parallel` at a time on this machine.
    estimate = setup_s + budget * epoch_s / parallel
    out(
        f"Estimated time: about {duration(estimate)} on this machine ({cpus} CPUs, {parallel} trial(s) at a time) if "
        f"every trial ran all its epochs: one epoch of the first trial configuration took {epoch_s:.2f} s here after "
        f"{setup_s:.2f} s to build its data and model; "
        f"not counted: ASHA's early stops (shorter), Ray's start and the workers' start (longer: ~10 s, a few s each)."
    )
    for line in method_cost_lines(space, epoch_s, setup_s, parallel):
        out(line)
    for line in where:
        out(line)
    out("Nothing was started or written (no Ray, no MLflow store); run without --dry-run to search.")
    return 0


# ------------------------------------------------------------------------------ --dry-run: a method axis
def method_step_costs(space: SearchSpace, steps: int = 5) -> dict[str, float] | None:
    """Where the space searches ``method`` (choice or grid of several): each method's training-step time
    relative to the first trial configuration's method (the one :func:`time_one_epoch` timed), measured
    here on the CPU with a trial's thread count on one batch of each method's first configuration (the fastest of
    ``steps`` rounds, each timing one step of every method in a shuffled order, after a warm-up step);
    None without a method axis."""
    import random

    import torch

    from mtlsearch.config import TrialConfig
    from mtlsearch.trainer import Trainer

    axis = next((p for p in space.params if p.name == "method" and p.dist.categorical), None)
    if axis is None or len(axis.args) < 2:
        return None
    probes: dict[str, dict[str, Any]] = {}
    for probe in space.probe_configs():  # the first configuration of each method
        probes.setdefault(str(probe.get("method")), {**probe, "device": "cpu"})
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(space.resources.get("cpus_per_trial") or 1)))
    samples: dict[str, list[float]] = {m: [] for m in probes}
    try:
        built = {}
        for method, probe in probes.items():
            trainer = Trainer(TrialConfig.from_dict(probe, source=str(space.path)))  # the data is built once per process
            x, targets = next(iter(trainer.splits["train"].batches(trainer.config.batch_size, shuffle=False)))
            x, targets = trainer._to_device(x, targets)
            trainer.train_step(x, targets)  # warm-up: lazy state, first allocations
            built[method] = (trainer, x, targets)
        order = list(built)
        rng = random.Random(0)
        for _ in range(steps):  # rounds over every method in a shuffled order, so that drift hits all alike
            rng.shuffle(order)
            for method in order:
                trainer, x, targets = built[method]
                t0 = time.perf_counter()
                trainer.train_step(x, targets)
                samples[method].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    times = {m: min(s) for m, s in samples.items()}  # the fastest round: a loaded machine only adds time
    timed = str(space.probe_configs()[0].get("method"))
    return {m: t / times[timed] for m, t in times.items()}


def method_cost_lines(space: SearchSpace, epoch_s: float, setup_s: float, parallel: int) -> list[str]:
    """The dry run's lines for a method axis: each method's measured step cost relative to the timed one,
    the trials each method gets, and the estimate weighted by those costs."""
    costs = method_step_costs(space)
    if not costs:
        return []
    timed = str(space.probe_configs()[0].get("method"))
    per_method = total_trials(space) / len(costs)  # the method axis is crossed with the samples (same budget each)
    weighted = setup_s + sum(per_method * space.max_epochs * epoch_s * c for c in costs.values()) / parallel
    ranked = sorted(costs.items(), key=lambda kv: kv[1])
    return [
        f"Methods: {len(costs)}, {per_method:g} trial(s) each ({total_trials(space)} trials = {len(costs)} methods x "
        f"{total_trials(space) / len(costs):g}); step time relative to {timed!r} (the timed epoch's method), measured here "
        "on one batch (fastest of 5 rounds): " + ", ".join(f"{m} {c:.2f}" for m, c in ranked) + ".",
        f"With these costs the search takes about {duration(weighted)} on this machine if every trial ran all its epochs "
        f"(the estimate above assumes every method costs what {timed!r} does).",
    ]
