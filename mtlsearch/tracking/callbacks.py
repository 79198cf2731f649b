"""The Ray Tune callbacks that mirror a search's trial events into MLflow through a
:class:`~mtlsearch.tracking.writer.Tracker`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlsearch.tracking.names import STATUS_ERRORED, trial_status
from mtlsearch.tracking.writer import Tracker

if TYPE_CHECKING:
    from ray.tune import Callback
    from ray.tune.experiment import Trial


def make_callback(tracker: Tracker, metric: str, max_epochs: int) -> Callback:
    """A Ray Tune callback that mirrors trial events into MLflow through ``tracker``.

    ``tracker`` is tolerant (see the module docstring): an MLflow failure never stops the search.
    """
    from ray.tune import Callback

    class MLflowTrials(Callback):
        def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            tracker.start_trial(trial.trial_id, trial.config)

        def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
            tracker.log_result(trial.trial_id, trial.config, result)

        def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            last = trial.last_result or {}
            epochs = int(last.get("epoch", 0))
            checkpoint = getattr(trial, "checkpoint", None)
            tracker.end_trial(
                trial.trial_id,
                trial.config,
                trial_status(epochs, max_epochs),
                checkpoint=getattr(checkpoint, "path", None),
                epochs=epochs,
                time_total_s=last.get("time_total_s"),
            )

        def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            err = None
            error_file = getattr(trial, "error_file", None)
            if error_file and os.path.exists(error_file):
                from mtlsearch.faults import strip_ansi

                err = strip_ansi(Path(error_file).read_text())  # a plain-text tag: no terminal colour codes
            last = trial.last_result or {}
            checkpoint = getattr(trial, "checkpoint", None)
            tracker.end_trial(
                trial.trial_id,
                trial.config,
                STATUS_ERRORED,
                error=err,
                checkpoint=getattr(checkpoint, "path", None),
                epochs=int(last.get("epoch", 0)),
                time_total_s=last.get("time_total_s"),
            )

    return MLflowTrials()


def make_resume_callback(tracker: Tracker) -> Callback:
    """For a resumed search only: at the first step of the restored Tuner (its trials are then exactly those
    of Ray's saved state), the runs of trials Ray lost go (:meth:`Tracker.drop_lost_trials`)."""
    from ray.tune import Callback

    class DropLostTrials(Callback):
        def __init__(self) -> None:
            self.done = False

        def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
            if self.done:
                return
            self.done = True
            lost = tracker.drop_lost_trials(t.trial_id for t in trials)
            for trial_id in lost or []:
                print(
                    f"note: trial {trial_id} started just before the search was stopped and Ray had not saved it; "
                    "its MLflow run is moved to the deleted runs and its place in the search is sampled again",
                    flush=True,
                )

    return DropLostTrials()
