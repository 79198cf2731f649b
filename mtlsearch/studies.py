"""Where a search's Optuna study is kept, so ``optuna-dashboard <storage>`` can open a finished search.

Ray Tune's ``OptunaSearch`` keeps its study in memory unless it is given a storage; the launcher gives it
an Optuna ``RDBStorage`` on a SQLite file, the study named after the search (its Ray results folder's
name, unique under one ``--storage``):

* beside the MLflow store when that is a SQLite file: ``sqlite:///path/mlflow.db`` ->
  ``sqlite:///path/mlflow-optuna.db`` (the embedded default: ``./mlflow-optuna.db``);
* else (an MLflow server, a database) in the search's local ``--storage`` folder: ``<storage>/optuna.db``;
* nowhere (in memory, as before) when neither is a local path (a cloud ``--storage`` with a remote
  MLflow): the report then rebuilds what it needs from MLflow.

Only the driver writes to it (one writer per search, as with MLflow).  The study holds each trial's
parameters, its value (the objective at its last epoch: Ray records a trial ASHA stopped as COMPLETE
with its partial value, an errored one as FAIL) and, as Optuna's intermediate values, the objective of
every epoch but the last (Ray gives the searcher the result a scheduler stops a trial on only as the
trial's final value).  The location is a
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

    from mtlsearch.faults import StartError, first_line

    # Two launchers started at once on a new file would create its tables together: one at a time.
    try:
        with _store_lock(url):
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    except Exception as err:  # noqa: BLE001 - the file passed the pre-flight; locked, filled or replaced since
        raise StartError(
            f"the Optuna study file {url[len('sqlite:///') :]} failed as the search started ({first_line(err)}); "
            "nothing was trained; run the same command again"
        ) from None
    if fresh and study_name:
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        except KeyError:  # the usual case: no such study yet
            pass
    return storage


def describe(url: str, study_name: str | None) -> str:
    """One line: the study and the command that opens it."""
    return f"Optuna study {study_name!r}: optuna-dashboard {url}"
