"""Which store a tracking URI names (MLflow's schemes, a SQLite file, a server) and the SQLite store's own
knowledge: creating it in one step under a lock, its schema, its deleted experiments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

#: MLflow's built-in tracking-store schemes (plugins add theirs through the ``mlflow.tracking_store`` entry point).
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc", "file")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_store_schemes() -> set[str]:
    """MLflow's schemes and those of installed tracking-store plugins."""
    from importlib.metadata import entry_points

    try:
        plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
    except Exception:  # a broken plugin's metadata is not the user's input
        plugins = set()
    return set(TRACKING_SCHEMES) | plugins


def uri_scheme(uri: str) -> str | None:
    """The store's scheme (``postgresql+psycopg2://`` is ``postgresql``); None for a plain path."""
    return uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else None


def is_server(uri: str) -> bool:
    """An MLflow tracking server (HTTP or HTTPS)."""
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).expanduser().resolve()


class store_lock:
    """For a SQLite store: an exclusive ``flock`` on the database's folder while MLflow creates or
    migrates its tables and our experiment.  Two launchers started at once on a new ``mlflow.db``
    otherwise run the migrations together and leave a half-migrated store.  Nothing is created."""

    def __init__(self, tracking_uri: str):
        self.db = sqlite_path(tracking_uri)
        self.fd: int | None = None

    def __enter__(self) -> store_lock:
        if self.db is not None and self.db.parent.is_dir():
            import fcntl

            self.fd = os.open(self.db.parent, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
        return False


#: The prefix of a SQLite store being created (:func:`create_sqlite_store`), beside the store's file.
CREATING_PREFIX = ".creating-"


def create_sqlite_store(db: Path) -> None:
    """Create MLflow's SQLite store ``db`` as one step: its tables are made and migrated in a temporary file
    beside it, which is then linked into place (atomic, and never over a store made meanwhile).  A process
    killed while MLflow migrates the tables thus leaves no half-made ``db`` (whose next use fails for
    good: ``duplicate column name``), only a temporary file that the next creation deletes.  Call it
    under :class:`store_lock` (one creator per folder); a store that exists is left alone."""
    if db.exists() or not db.parent.is_dir():
        return
    for stale in db.parent.glob(f".{db.name}{CREATING_PREFIX}*"):  # left by a creator killed midway (we hold the lock)
        stale.unlink(missing_ok=True)
    tmp = db.parent / f".{db.name}{CREATING_PREFIX}{os.getpid()}"
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)  # as MLflow makes a new store
        store.engine.dispose()
        if os.environ.get("MTLSEARCH_FAULT_BEFORE_STORE_LINK"):  # a testing aid: die as a killed driver would
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # made meanwhile by a process that does not take our lock: keep it
    finally:
        tmp.unlink(missing_ok=True)


def sqlite_store_schema(db: Path, timeout: float) -> tuple[set[str], str | None, int | None]:
    """(tables, Alembic revision or None, number of runs or None) of a SQLite MLflow store, read-only
    (``timeout``: seconds to wait for another writer's lock); raises ``sqlite3.Error``."""
    import sqlite3

    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=timeout)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = con.execute("SELECT version_num FROM alembic_version").fetchone() if "alembic_version" in tables else None
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else None
    finally:
        con.close()
    return tables, revision[0] if revision else None, runs


def latest_schema_revision() -> str:
    """The schema revision this MLflow makes and expects of a SQL store."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def deleted_experiment(uri: str, name: str, timeout: float) -> str | None:
    """The id of experiment ``name`` when the store holds it as deleted (in MLflow's trash), else None.
    A SQLite store is read directly and read-only (MLflow would create or migrate the file; ``timeout``:
    seconds to wait for another writer's lock); a server is asked; a store that cannot answer is left to
    the checks and writes that follow."""
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            return None
        import sqlite3

        try:
            con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=timeout)
            try:
                row = con.execute("SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?", (name,)).fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return None  # no experiments table yet (an empty file), or a store the write check refuses
        return str(row[0]) if row and row[1] == "deleted" else None
    if is_server(uri):
        try:
            from mlflow.tracking import MlflowClient

            exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
        except Exception:  # the server's own failure is reported where the search writes
            return None
        return exp.experiment_id if exp is not None and exp.lifecycle_stage == "deleted" else None
    return None
