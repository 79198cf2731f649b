"""Where a search's Optuna study is kept, so ``optuna-dashboard <storage>`` can open a finished search.

Ray Tune's ``OptunaSearch`` keeps its study in memory unless it is given a storage; the launcher gives it
a file, the study named after the search (its Ray results folder's name, unique under one ``--storage``):

* beside the MLflow store when that is a SQLite file: ``sqlite:///path/mlflow.db`` ->
  ``/path/mlflow-optuna.journal`` (the embedded default: ``./mlflow-optuna.journal``);
* else (an MLflow server, a database) in the search's local ``--storage`` folder: ``<storage>/optuna.journal``;
* in the database that ``--optuna-storage URL`` (or ``MTLSEARCH_OPTUNA_STORAGE``) names, first of all: a
  team's shared PostgreSQL (``postgresql://user@host:5432/optuna``), where the studies of every search
  beside its MLflow tracking server live (docs/team.md); ``--optuna-storage`` may also name a journal file
  (a path ending in ``.journal``; another path is refused as a database URL without its scheme) or a SQLite
  file (``sqlite:///``);
* nowhere (in memory, as before) when neither is a local path (a cloud ``--storage`` with a remote
  MLflow): the report then rebuilds what it needs from MLflow.

**A journal file, not SQLite, by default** (:data:`JOURNAL_SUFFIX`): Optuna's ``JournalStorage`` appends one
line per change to a file and keeps the study in memory, where its ``RDBStorage`` makes a SQLAlchemy
transaction per change (a trial's creation, each parameter, each report, its end).  On a short trial that
was about half of what the launcher's driver spent per trial beyond bare Ray Tune (``perf/trial_cost.py``,
docs/speed.md).  A storage named by a path (no ``scheme://``) is a journal file (:func:`is_journal`);
``optuna-dashboard <path>`` opens it.  Searches started before keep their ``sqlite:///...-optuna.db``
(their parent run's param says which; ``--resume`` and ``mtlsearch ui --optuna`` use it).

Only the driver writes to it (one writer per search, as with MLflow).  The study names its objective(s)
and holds each trial's parameters, its true state (:mod:`mtlsearch.optuna_search`): COMPLETE with its
value at ``max_epochs``, PRUNED when ASHA stopped it (its last epoch as the last intermediate value, which
Optuna keeps as its value), FAIL when it errored; the objective of every epoch as intermediate values;
and the user attributes ``ray_trial_id``, ``mlflow_run_id``, ``epochs`` and ``status``, so a trial in
``optuna-dashboard`` is found in MLflow.  The location is a
param of the search's parent run (``optuna_storage``, ``optuna_study``) and of ``mtlsearch.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mtlsearch.errors import ConfigError, first_line

#: SQLite waits this long for another writer's lock (two searches on one store) instead of failing.
SQLITE_TIMEOUT_S = 60
#: The environment variable that names the studies' database when ``--optuna-storage`` is not given.
STORAGE_ENV = "MTLSEARCH_OPTUNA_STORAGE"
#: Database schemes an explicit study storage may use (SQLAlchemy URLs that Optuna's RDBStorage supports).
SCHEMES = ("sqlite", "postgresql", "mysql")
#: The default study file's suffix: an Optuna journal (one JSON line per change; see the module docstring).
JOURNAL_SUFFIX = ".journal"
#: The first bytes of a SQLite file (a journal path that holds a database instead is refused).
SQLITE_HEADER = b"SQLite format 3\x00"


def is_journal(url: str) -> bool:
    """Whether a study storage is a journal file: named by a path, not a ``scheme://`` URL."""
    return "://" not in url


def explicit_url(flag: str | None) -> tuple[str, str] | None:
    """``(url, where it came from)`` of a study storage the user named (the flag, else the variable)."""
    if flag:
        return flag, "--optuna-storage"
    env = os.environ.get(STORAGE_ENV)
    return (env, STORAGE_ENV) if env else None


def check_url(url: str, field: str) -> None:
    """A database URL Optuna can use, and (for a server) one that answers: one line naming ``field`` otherwise.
    Creates nothing: a server database is only connected to (``SELECT 1``)."""
    if is_journal(url) and url.endswith(JOURNAL_SUFFIX):
        check_journal(Path(url), field)
        return
    scheme = url.split("://", 1)[0].split("+", 1)[0] if not is_journal(url) else None
    if scheme not in SCHEMES:  # a path not named *.journal is taken for a database URL without its scheme
        hint = f"; for a SQLite file write sqlite:///{Path(url).resolve()}" if is_journal(url) else ""
        raise ConfigError(
            f"{url!r} is not a database URL; give one of {', '.join(s + '://' for s in SCHEMES)} "
            f"(e.g. postgresql://user@host:5432/optuna, or sqlite:////abs/path/optuna.db) or the path of a journal file "
            f"ending in {JOURNAL_SUFFIX} (e.g. ./optuna{JOURNAL_SUFFIX}){hint}",
            field=field,
        )
    if scheme == "sqlite":
        return  # created on first use, like the default file (the MLflow store's folder checks apply)
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10} if scheme == "postgresql" else {})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"no database driver for {scheme}:// ({err.name} is not installed); pip install 'mtlsearch[team]' "
            "installs the PostgreSQL one (psycopg)",
            field=field,
        ) from None
    except Exception as err:  # sqlalchemy.exc.OperationalError: refused, unknown database, bad password
        first = first_line(err, typed=False, limit=None, text=str(getattr(err, "orig", err) or err))
        raise ConfigError(f"cannot open the Optuna database {redacted(url)}: {first}", field=field) from None


def file_of(url: str) -> Path | None:
    """The local file of a study storage: a journal's path, a ``sqlite:///`` database's; None for a server."""
    if is_journal(url):
        return Path(url)
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def journal_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a study journal the search appends to, or None (a missing file is made)."""
    if path.is_dir():
        return "it is a directory"
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not (parent.is_dir() and os.access(parent, os.W_OK)):
            return f"its folder {parent} cannot be written"
        return None
    if not os.access(path, os.R_OK | os.W_OK):
        return "its permissions forbid reading or writing it"
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(SQLITE_HEADER):
        return f"it is a SQLite database, not a journal (name it sqlite:///{path.resolve()})"
    first = head.split(b"\n", 1)[0]
    if head and not (first.startswith(b"{") and b'"op_code"' in first):
        return "it is not an Optuna journal"
    return None


def check_journal(path: Path, field: str, what: str = "the Optuna study journal") -> None:
    """A journal file the search appends to: one line naming ``field``, the file and why, else nothing."""
    why = journal_problem(path)
    if why:
        raise ConfigError(f"{what} {path} cannot be used ({why}); earlier runs are untouched: move it aside or name another", field=field)


def study_names(url: str) -> list[str] | None:
    """The studies in a storage (None: it cannot be read as one); closes what it opened."""
    if is_journal(url) and journal_problem(Path(url)):
        return None
    try:
        storage = open_existing(url)
    except Exception:
        return None
    try:
        return [s.study_name for s in storage.get_all_studies()]
    except Exception:
        return None
    finally:
        close(storage)


def open_existing(url: str) -> Any:
    """An existing storage to read (``mtlsearch ui --optuna``, ``--resume``'s check): a journal file (which must
    exist) or a database whose tables are not created."""
    import optuna

    if is_journal(url):
        if not Path(url).is_file():
            raise FileNotFoundError(url)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    return optuna.storages.RDBStorage(url, skip_table_creation=True)


def close(storage: Any) -> None:
    """Let go of a storage's database connections (a journal holds none)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        storage.remove_session()
        engine.dispose()


def redacted(url: str) -> str:
    """``url`` without a password (``postgresql://user:***@host/db``)."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


def storage_url(tracking_uri: str, local_storage: Path | None, explicit: str | None = None) -> str | None:
    """The URL of the Optuna storage for a search (see the module docstring), or None.
    ``explicit``: ``--optuna-storage`` (else ``MTLSEARCH_OPTUNA_STORAGE``), used as given."""
    from mtlsearch.tracking import sqlite_path

    named = explicit_url(explicit)
    if named is not None:
        return str(Path(named[0]).resolve()) if is_journal(named[0]) else named[0]
    db = sqlite_path(tracking_uri)
    if db is not None:
        return str(db.parent.resolve() / (db.stem + "-optuna" + JOURNAL_SUFFIX))
    if local_storage is not None:
        return str(Path(local_storage).resolve() / ("optuna" + JOURNAL_SUFFIX))
    return None


def open_storage(url: str, study_name: str | None = None, *, fresh: bool = False) -> Any:
    """An Optuna ``JournalStorage`` on a journal file (:func:`is_journal`), else an ``RDBStorage`` on ``url``
    (created if missing) that waits for a busy SQLite file.

    ``fresh``: a new search (not ``--resume``) deletes a study left under its name by a search whose Ray
    folder is gone (the launcher refuses a name whose folder still holds a search), so that its trials
    cannot warm-start the sampler: a new search samples as it would with an in-memory study."""
    import optuna

    from mtlsearch.faults import StartError

    sqlite = url.startswith("sqlite:")
    # A server database (PostgreSQL) queues concurrent writers itself; a SQLite file waits for its lock.
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    try:
        storage = _open_journal(Path(url)) if is_journal(url) else _create_storage(url, engine_kwargs, sqlite)
    except Exception as err:  # the store passed the pre-flight; locked, filled, replaced or gone since
        where = f"journal {url}" if is_journal(url) else f"file {url[len('sqlite:///') :]}" if sqlite else f"database {redacted(url)}"
        raise StartError(
            f"the Optuna study {where} failed as the search started ({first_line(err)}); nothing was trained; run the same command again"
        ) from None
    if fresh and study_name:
        try:
            optuna.delete_study(study_name=study_name, storage=storage)
        except KeyError:  # the usual case: no such study yet
            pass
    return storage


def _open_journal(path: Path) -> Any:
    """``JournalStorage`` on ``path`` (made, with its folder, if missing).  Several drivers may append to one
    file: Optuna's lock file (``<path>.lock``) orders them, and one left by a killed driver is broken after 30 s."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _create_storage(url: str, engine_kwargs: dict[str, Any], sqlite: bool, attempts: int = 5) -> Any:
    """``RDBStorage(url)``; a SQLite file is created under its lock.  A server database (PostgreSQL) has no such
    lock: team members' searches started at once on a new database create Optuna's tables together, and all
    but one fail on the same table or type (a unique violation, 'already exists'); the tables then exist, so those
    try again."""
    import time

    import optuna

    from mtlsearch.tracking import store_lock

    for attempt in range(attempts):
        try:
            with store_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as err:
            racing = type(err).__name__ == "IntegrityError" or "already exists" in str(err)  # a unique violation, a table
            if sqlite or attempt == attempts - 1 or not racing:
                raise
            time.sleep(0.5 * 2**attempt)  # another driver is creating the schema: it exists once it commits
    raise AssertionError("unreachable")


def describe(url: str, study_name: str | None) -> str:
    """One line: the study and the command that opens it."""
    return f"Optuna study {study_name!r}: optuna-dashboard {redacted(url)}"
