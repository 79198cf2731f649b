"""Ray Tune's ``OptunaSearch`` for a study kept in a persistent storage (:mod:`mtlsearch.studies`).

A search resumed after its driver was killed restores the searcher from Ray's last experiment
checkpoint, but the study lives in the SQLite file, which may be ahead of it: a trial that finished
after that checkpoint is COMPLETE in the file while Ray resumes it from its own checkpoint.  Ray's
``OptunaSearch`` then reports the resumed trial's epochs to a finished Optuna trial, Optuna raises
``UpdateFinishedTrialError`` and the whole search ends (found by the driver-kill test of
``tests/test_faults.py``).  Here such a report is dropped: the study already holds that trial's result.
A completion Ray already tolerates (``OptunaSearch.on_trial_complete`` logs what Optuna refuses).
"""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that ignores results for trials its storage already holds as finished."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished in the storage after Ray's last experiment checkpoint: its result is there
