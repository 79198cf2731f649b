"""Ray Tune's ``OptunaSearch`` as the launcher uses it: a study whose trial states are true, whose method
axis gets an equal share, whose sampler settings follow the budget, and that survives ``--resume``.

**True states.**  Ray's ``OptunaSearch`` tells Optuna COMPLETE for every trial that returned a value: a
trial ASHA stopped at epoch 3 and even one that errored after an epoch.  Here a trial that reached
``max_epochs`` is COMPLETE with its last value; one stopped before (ASHA) is PRUNED, its last epoch
reported as an intermediate value (Optuna stores it as the pruned trial's value, so TPE still learns
from it); one that errored is FAIL.  Intermediate values (the objective per epoch, ``step`` = epoch) are
reported as they come (single objective: Optuna keeps none for several).

**What each trial carries** (user attributes, for ``optuna-dashboard`` beside MLflow): ``ray_trial_id``,
``mlflow_run_id`` (from the tracker's runs, linked by :meth:`ResumableOptunaSearch.link_runs`),
``epochs`` and ``status`` (``completed`` / ``stopped early by ASHA`` / ``errored``, as in MLflow).  The
study names its objectives (``study.set_metric_names``).

**Equal budget.**  When the space has strata (:func:`mtlsearch.fairness.strata`: grid values, a method
``choice``), each new trial's cell (the one with the fewest trials) is fixed with ``study.enqueue_trial``
before Ray asks; the sampler fills in the rest.

**Resume.**  A search resumed after its driver was killed restores the searcher from Ray's last experiment
checkpoint, but the study lives in the SQLite file, which may be ahead of it: a trial that finished after
that checkpoint is finished in the file while Ray resumes it.  Reports and completions for such a trial
are dropped (found by the driver-kill test of ``tests/e2e/test_faults.py``): the study already holds it.

**Sampler settings** (:func:`sampler_settings`): see its docstring; printed by ``--dry-run`` and tagged on
the parent run.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, Mapping

import optuna
from ray.tune.search.optuna import OptunaSearch

from mtlsearch import fairness
from mtlsearch.distributions import CONSTANT
from mtlsearch.space_sections import SAMPLERS

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace

log = logging.getLogger(__name__)

#: Optuna user attributes of each trial (see the module docstring).
ATTR_TRIAL = "ray_trial_id"
ATTR_RUN = "mlflow_run_id"
ATTR_EPOCHS = "epochs"
ATTR_STATUS = "status"


def sampler_settings(space: SearchSpace) -> dict[str, Any]:
    """The keyword arguments of the space's Optuna sampler, chosen from its budget and shape.

    TPE (Optuna's defaults are for long studies: 10 random trials first, one dimension at a time, no
    account of running trials):

    * ``n_startup_trials = min(10, max(3, trials // 4))``, ``trials`` = every trial the search runs (grid
      cells x ``num_samples``): a quarter of a small search is random, never fewer than 3 nor more than 10;
    * ``constant_liar=True`` unless ``budget.max_concurrent_trials`` is 1: trials run side by side, and the
      running ones count as bad so that TPE does not propose the same point four times;
    * ``multivariate=True`` when two or more parameters are sampled (p and lr interact); ``group=True`` too
      when some are conditional (``when:``), so each group of parameters that appear together is modelled
      jointly.

    Other samplers get their seed only."""
    settings: dict[str, Any] = {"seed": space.searcher["seed"]}
    if space.searcher["sampler"] != "tpe":
        return settings
    stratified = set(fairness.stratified_names(space))
    sampled = [p for p in space.params if p.kind != CONSTANT and not p.dist.crossed and p.name not in stratified]
    settings["n_startup_trials"] = min(10, max(3, fairness.total_trials(space) // 4))
    settings["constant_liar"] = space.max_concurrent_trials != 1
    if len(sampled) >= 2:
        settings["multivariate"] = True
        if any(p.when for p in space.params):
            settings["group"] = True
    return settings


def describe_settings(space: SearchSpace) -> str:
    """One line: the sampler, its settings and the strata (``--dry-run``, the parent run's tag)."""
    if space.searcher["type"] != "optuna":
        line = f"Ray's variant generator (random, seed {space.searcher['seed']})"
    else:
        kwargs = ", ".join(f"{k}={v}" for k, v in sampler_settings(space).items())
        line = f"Optuna {space.searcher['sampler']} ({kwargs})"
    methods = fairness.method_axis(space)
    if methods is not None:
        share, extra = divmod(fairness.total_trials(space), len(methods.args))
        line += f"; {len(methods.args)} methods, {share}{'-' + str(share + 1) if extra else ''} trials each (dealt in turn)"
    return line


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The space's Optuna sampler with :func:`sampler_settings`."""
    kwargs = sampler_settings(space)
    cls = getattr(optuna.samplers, SAMPLERS[space.searcher["sampler"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate, group, constant_liar
        return cls(**kwargs)


def make_searcher(space: SearchSpace, storage: Any = None, study_name: str | None = None) -> ResumableOptunaSearch:
    """The space's searcher as a search runs it: its sampler (:func:`make_sampler`), objective(s), full budget and
    strata.  Multi-objective: the metric/mode lists go on the searcher only; Tune and ASHA keep the scalar."""
    objectives = space.objectives()
    return ResumableOptunaSearch(
        space=space.define_by_run(),
        sampler=make_sampler(space),
        metric=[m for m, _ in objectives] if space.multi_objective else space.metric,
        mode=[m for _, m in objectives] if space.multi_objective else space.mode,
        storage=storage,
        study_name=study_name,
        max_epochs=space.max_epochs,
        strata=fairness.strata(space),
        strata_seed=space.searcher["seed"],
    )


class ResumableOptunaSearch(OptunaSearch):
    """``OptunaSearch`` with true trial states, per-trial attributes, strata and a safe resume (see the
    module docstring).  ``max_epochs``: a trial's full budget (COMPLETE vs PRUNED); ``strata``: the cells
    of :func:`mtlsearch.fairness.strata`; ``strata_seed``: the order ties are broken in."""

    # Defaults for a searcher unpickled from a search started before these existed (``--resume``).
    _max_epochs: int | None = None
    _strata: list[dict[str, Any]] = []
    _strata_seed = 0
    _last_step: dict[str, int] = {}
    _run_ids: Mapping[str, str] | None = None

    def __init__(
        self,
        *args: Any,
        max_epochs: int | None = None,
        strata: list[dict[str, Any]] | None = None,
        strata_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self._max_epochs = max_epochs
        self._strata = list(strata or [])
        self._strata_seed = strata_seed
        self._last_step: dict[str, int] = {}
        self._run_ids: Mapping[str, str] | None = None
        super().__init__(*args, **kwargs)
        self._name_objectives()

    # ------------------------------------------------------------------ links that are not saved
    def link_runs(self, run_ids: Mapping[str, str]) -> None:
        """Where the MLflow run id of a Ray trial is found (the tracker's ``trial_runs``), set again by
        each driver (not pickled: a resumed search links its own tracker)."""
        self._run_ids = run_ids

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_run_ids"] = None
        state.pop("_steps_here", None)  # a resumed driver asks the storage, which may be ahead of Ray's checkpoint
        return state

    def save(self, checkpoint_path: str) -> None:
        import pickle

        state = self.__getstate__()
        state.pop("_run_ids")  # restore() updates __dict__: keep this driver's link
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def _name_objectives(self) -> None:
        if self._ot_study is None:
            return
        names = list(self._metric) if isinstance(self._metric, list) else [self._metric]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if self._ot_study.metric_names != names:
                    self._ot_study.set_metric_names(names)
        except Exception as err:  # a name is a nicety: never stop a search for it
            log.debug("could not name the study's objectives: %s", err)

    # ------------------------------------------------------------------ Ray's Searcher interface
    def suggest(self, trial_id: str) -> dict | None:
        new = trial_id not in self._ot_trials
        if new and self._strata and self._ot_study is not None:
            asked = [t.params for t in self._ot_study.get_trials(deepcopy=False)]
            self._ot_study.enqueue_trial(fairness.next_stratum(self._strata, asked, self._strata_seed), skip_if_exists=False)
        params = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:
            self._here().setdefault(trial_id, set())  # asked by this driver: its reports are known here
            self._set_attrs(trial_id, {ATTR_TRIAL: trial_id})
        return params

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        step = result.get("training_iteration")
        if step is not None:
            self.__dict__.setdefault("_last_step", {})[trial_id] = int(step)  # not the class default
        if trial_id in self._ot_trials and self._reported(trial_id, step):
            return
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished in the storage after Ray's last experiment checkpoint: its result is there
        else:
            self._mark_reported(trial_id, step)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        from mtlsearch.tracking import trial_status

        ot_trial = self._ot_trials[trial_id]
        study: Any = self._ot_study  # set by Ray's __init__ (typed None there)
        metric: Any = self._metric
        result = result or {}
        epochs = int(result.get("training_iteration") or self._last_step.get(trial_id, 0))
        single = not isinstance(metric, list)
        values: Any = None
        if not error and result:
            values = result.get(metric) if single else [result.get(m) for m in metric]
        full = self._max_epochs is None or epochs >= self._max_epochs
        if error or values is None or (not single and any(v is None for v in values)):
            state = optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED
        elif full:
            state = optuna.trial.TrialState.COMPLETE
        else:
            state = optuna.trial.TrialState.PRUNED
        attrs: dict[str, Any] = {ATTR_EPOCHS: epochs, ATTR_STATUS: trial_status(epochs, self._max_epochs or epochs, errored=error)}
        run_id = (self._run_ids or {}).get(trial_id)
        if run_id:
            attrs[ATTR_RUN] = run_id
        try:
            self._set_attrs(trial_id, attrs)
            if state != optuna.trial.TrialState.FAIL and single and values is not None and epochs:
                # The result a scheduler stops a trial on (ASHA's rung, or max_t) reaches the searcher only
                # here: the last intermediate value (a pruned trial's value).
                if not self._reported(trial_id, epochs) and _finite(values):
                    ot_trial.report(float(values), epochs)
                    self._mark_reported(trial_id, epochs)
            if state == optuna.trial.TrialState.COMPLETE:
                study.tell(ot_trial, values, state=state)
            else:
                study.tell(ot_trial, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # already finished in the storage (a resumed search): the study holds its result
        except Exception as exc:  # Ray's own behaviour: e.g. a NaN value
            log.warning("%s", exc)
        self._completed_trials.add(trial_id)

    # ------------------------------------------------------------------ helpers
    def _here(self) -> dict[str, set[int]]:
        """The steps reported to the study by this driver, per trial that this driver asked for (not pickled)."""
        return self.__dict__.setdefault("_steps_here", {})

    def _mark_reported(self, trial_id: str, step: Any) -> None:
        if step is not None and trial_id in self._here() and not isinstance(self._metric, list):
            self._here()[trial_id].add(int(step))

    def _reported(self, trial_id: str, step: Any) -> bool:
        """Whether the study already holds an intermediate value of ``trial_id`` at ``step``: known here for a
        trial this driver asked for (one storage read less per result); else read from the storage, which
        may be ahead of Ray's checkpoint (a resumed search)."""
        if step is None:
            return False
        if trial_id in self._here():
            return int(step) in self._here()[trial_id]
        study: Any = self._ot_study  # set by Ray's __init__ (typed None there)
        frozen = study._storage.get_trial(self._ot_trials[trial_id]._trial_id)
        return int(step) in frozen.intermediate_values

    def _set_attrs(self, trial_id: str, attrs: Mapping[str, Any]) -> None:
        ot_trial = self._ot_trials[trial_id]
        try:
            if len(attrs) > 1 and _set_user_attrs_at_once(ot_trial, attrs):
                return
            for key, value in attrs.items():
                ot_trial.set_user_attr(key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass


def _set_user_attrs_at_once(ot_trial: Any, attrs: Mapping[str, Any]) -> bool:
    """A trial's user attributes in one transaction of an RDB storage (``Trial.set_user_attr`` commits each:
    on SQLite, one disk sync per attribute); False where the storage offers no such path (then one call each)."""
    from optuna.storages import RDBStorage

    try:
        from optuna.storages._cached_storage import _CachedStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:  # another Optuna's layout
        return False
    storage = ot_trial.storage
    if isinstance(storage, _CachedStorage):  # a study's RDB storage (its cache holds finished trials only)
        storage = storage._backend
    if not isinstance(storage, RDBStorage) or not hasattr(storage, "_set_trial_attr_without_commit"):
        return False
    with _create_scoped_session(storage.scoped_session, True) as session:
        for key, value in attrs.items():
            storage._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, ot_trial._trial_id, key, value)
    for key, value in attrs.items():
        ot_trial._cached_frozen_trial.user_attrs[key] = value  # as Trial.set_user_attr keeps it
    return True


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
