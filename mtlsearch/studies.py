"""Where a search's Optuna study is kept, so ``optuna-dashboard <storage>`` can open a finished search.

Ray Tune's ``OptunaSearch`` keeps its study in memory unless it is given a storage; the launcher gives it
an Optuna ``RDBStorage`` on a SQLite file, the study named after the search (its Ray results folder's
name, unique under one ``--storage``):

* beside the MLflow store when that is a SQLite file: ``sqlite:///path/mlflow.db`` ->
  ``sqlite:///path/mlflow-optuna.db`` (the embedded default: ``./mlflow-optuna.db``);
* else (an MLflow server, a database) in the search's local ``--storage`` folder: ``<storage>/optuna.db``;
* nowhere (in memory, as before) when neither is a local path (a cloud ``--storage`` with a remote
  MLflow): the report then rebuilds what it needs from MLflow.

Only the driver writes to it (one writer per search, as with MLflow).  The study names its objective(s)
and holds each trial's parameters, its true state (:mod:`mtlsearch.optuna_search`): COMPLETE with its
value at ``max_epochs``, PRUNED when ASHA stopped it (its last epoch as the last intermediate value, which
Optuna keeps as its value), FAIL when it errored; the objective of every epoch as intermediate values;
and the user attributes ``ray_trial_id``, ``mlflow_run_id``, ``epochs`` and ``status``, so a trial in
``optuna-dashboard`` is found in MLflow.  The location is a
param of the search's parent run (``optuna_storage``, ``optuna_study``) and of ``mtlsearch.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: SQLite waits this long for another writer's lock (two searches on one store) instead of failing.
SQLITE_TIMEOUT_S = 60


def storage_url(tracking_uri: str, local_storage: Path | None) -> str | None:
    """The SQLite URL of the Optuna storage for a search (see the module docstring), or None."""
    from mtlsearch.tracking import _sqlite_path

    db = _sqlite_path(tracking_uri)
    if db is not None:
        return f"sqlite:///{db.parent.resolve() / (db.stem + '-optuna.db')}"
    if local_storage is not None:
        return f"sqlite:///{Path(local_storage).resolve() / 'optuna.db'}"
    return None


def open_storage(url: str, study_name: str | None = None, *, fresh: bool = False) -> Any:
    """An Optuna ``RDBStorage`` on ``url`` (created if missing) that waits for a busy SQLite file.

    ``fresh``: a new search (not ``--resume``) deletes a study left under its name by a search whose Ray
    folder is gone (the launcher refuses a name whose folder still holds a search), so that its trials
    cannot warm-start the sampler: a new search samples as it would with an in-memory study."""
    import optuna

    from mtlsearch.tracking import _store_lock

    # Two launchers started at once on a new file would create its tables together: one at a time.
    with _store_lock(url):
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    if fresh and study_name:
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        except KeyError:  # the usual case: no such study yet
            pass
    return storage


def describe(url: str, study_name: str | None) -> str:
    """One line: the study and the command that opens it."""
    return f"Optuna study {study_name!r}: optuna-dashboard {url}"
