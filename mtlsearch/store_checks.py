"""The stores a search writes, checked before Ray or MLflow is touched (the pre-flight's last checks).

The SQLite MLflow store and the Optuna study file (readable, writable for real, a database, not held by
another writer: waited for, then one line), a store left half-made, an experiment deleted in the MLflow
UI, the storage (a writable local folder, or a cloud URI that answers), free space on the devices
written, and on ``--resume`` that the study Ray's saved searcher refers to is still in its file
(docs/faults.md).  :mod:`mtlsearch.preflight` calls these in its ordered lists; every refusal is a
:class:`~mtlsearch.errors.ConfigError` naming the flag, and nothing here creates a file or a store.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from mtlsearch.errors import ConfigError, first_line
from mtlsearch.options import storage_location

CLOUD_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az", "viewfs")
STORAGE_PROBE_TIMEOUT_S = float(os.environ.get("MTLSEARCH_STORAGE_PROBE_S", "20"))


def _writable_dir(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (tried for real, with an unnamed temporary file: root
    passes ``os.access`` on a read-only mount or a kernel folder that refuses files)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


#: How long the pre-flight waits for another writer's lock on a SQLite store (a second search, a sync).
SQLITE_LOCK_WAIT_S = float(os.environ.get("MTLSEARCH_SQLITE_LOCK_WAIT_S", "60"))


def _sqlite_problem(db: Path) -> tuple[str, str] | None:
    """Why an existing SQLite file cannot take the search's writes, as ``(kind, why)``, or None.

    ``kind`` is ``"readonly"`` (the file or its folder, where SQLite writes its journal, cannot be written),
    ``"locked"`` (another writer held the lock for more than :data:`SQLITE_LOCK_WAIT_S`: waited for first,
    as MLflow's own writes would, but before Ray), ``"notadb"`` (not an SQLite database: corrupt, or another
    kind of file) or ``"other"``.  The write is real and rolled back: ``BEGIN IMMEDIATE`` alone passes on a
    file SQLite opened read-only (it falls back to read-only where the file cannot be opened for writing),
    so a table is created inside the transaction and the transaction rolled back: the file is left byte
    for byte as it was."""
    import sqlite3

    if not os.access(db, os.R_OK):
        return "readonly", "the file cannot be read"
    if not os.access(db, os.W_OK):
        return "readonly", "the file is read-only"
    if not _writable_dir(db.parent):
        return "readonly", f"its folder {db.parent} is read-only, and SQLite writes its journal there"
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True, timeout=SQLITE_LOCK_WAIT_S, isolation_level=None)
    except sqlite3.Error as err:
        return "other", str(err)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: "file is not a database"
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TABLE mtlsearch_write_probe (x INTEGER)")  # a real write, rolled back below
        con.execute("ROLLBACK")
    except sqlite3.DatabaseError as err:
        text = str(err)
        if "locked" in text or "busy" in text:
            return "locked", f"locked by another writer for more than {SQLITE_LOCK_WAIT_S:g} s (MTLSEARCH_SQLITE_LOCK_WAIT_S)"
        if "readonly" in text or "read-only" in text:
            return "readonly", text
        if "not a database" in text or "malformed" in text:
            return "notadb", text
        return "other", text
    finally:
        con.close()
    return None


#: What to do, by kind of :func:`_sqlite_problem`.
_SQLITE_FIXES = {
    "readonly": "make the file and its folder writable (chmod u+w) or give {other}",
    "locked": "wait for the other search or sync to end (or raise MTLSEARCH_SQLITE_LOCK_WAIT_S), or give {other}",
    "notadb": "it is not an SQLite database (corrupt, or another file): move it aside (a new one is made) or give {other}",
    "other": "check the file, or give {other}",
}


def check_sqlite_file(db: Path, what: str, field: str, other: str) -> None:
    """An existing SQLite file the search will write (the MLflow store, the Optuna study): one line naming
    the file, the reason and the fix (see :func:`_sqlite_problem`)."""
    problem = _sqlite_problem(db)
    if problem:
        kind, why = problem
        raise ConfigError(
            f"{what} {db} cannot be written ({why}); earlier runs are untouched: {_SQLITE_FIXES[kind].format(other=other)}",
            field=field,
        )


def check_store_schema(db: Path, field: str) -> None:
    """A store whose tables MLflow did not finish making (a process killed while MLflow created it, before
    mtlsearch created stores in one step: :func:`mtlsearch.tracking.create_sqlite_store`) fails at its next
    use for good (``duplicate column name: step``): name the file to delete when it holds no runs; a store of
    another MLflow version gets MLflow's own upgrade command."""
    import sqlite3

    from mtlsearch.tracking import latest_schema_revision, sqlite_store_schema

    try:
        tables, revision, runs = sqlite_store_schema(db, SQLITE_LOCK_WAIT_S)
    except sqlite3.Error:
        return  # the write check above names what is wrong with the file
    if not tables - {"alembic_version"}:
        return  # an empty file: MLflow makes its tables
    head = latest_schema_revision()
    if revision == head:
        return
    if not runs:
        raise ConfigError(
            f"the SQLite store {db} was left half-made (a process was killed while MLflow created its tables: schema "
            f"version {revision or 'none'}, expected {head}) and holds no runs: delete it (rm {db}) and run again",
            field=field,
        )
    raise ConfigError(
        f"the SQLite store {db} has schema version {revision or 'none'}, and this MLflow expects {head} (a store of another "
        f"MLflow version): back up an older one's file, then run mlflow db upgrade sqlite:///{db}; a newer one's needs that "
        "MLflow, or give another --tracking-uri",
        field=field,
    )


def check_tracking_uri(uri: str, field: str = "--tracking-uri") -> None:
    """A known scheme; a SQLite store that can be written; an HTTP server that answers."""
    from mtlsearch.tracking import check_reachable, tracking_store_schemes, uri_scheme

    scheme = uri_scheme(uri)
    if scheme is None:
        target = Path(uri).expanduser().resolve()
        guess = target / "mlflow.db" if target.is_dir() or not target.suffix else target
        raise ConfigError(
            f"{uri!r} is a path, not a tracking URI; for a SQLite store write sqlite:///{guess} "
            "(or give http://HOST:PORT of an MLflow server)",
            field=field,
        )
    schemes = tracking_store_schemes()
    if scheme not in schemes:
        raise ConfigError(
            f"unknown scheme {scheme + '://'!r} in {uri!r}; MLflow knows "
            f"{', '.join(s + '://' for s in sorted(schemes))} (e.g. sqlite:////abs/path/mlflow.db)",
            field=field,
        )
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise ConfigError(f"a SQLite store is sqlite:///relative/mlflow.db or sqlite:////abs/mlflow.db, got {uri!r}", field=field)
        db = Path(uri[len("sqlite:///") :].split("?", 1)[0]).expanduser().resolve()
        if db.is_dir():
            raise ConfigError(f"{str(db)!r} is a directory; name the database file, e.g. sqlite:///{db / 'mlflow.db'}", field=field)
        if db.exists():
            check_sqlite_file(db, "the SQLite store", field, "another --tracking-uri")
            check_store_schema(db, field)
        elif db.parent.is_dir() and not _writable_dir(db.parent):
            raise ConfigError(
                f"the folder of the SQLite store {db} is not writable; give a writable place, e.g. sqlite:///$PWD/mlflow.db", field=field
            )
    if scheme == "file":
        folder = _existing_ancestor(Path(uri[len("file://") :]).expanduser().resolve())
        if not folder.is_dir() or not _writable_dir(folder):
            raise ConfigError(f"{uri!r}: {folder} is not a writable folder", field=field)
    check_reachable(uri)  # HTTP answers; a SQLite store's folder exists


def check_experiment_not_deleted(uri: str, name: str) -> None:
    """An experiment deleted in the MLflow UI keeps its name in the store, and a deleted experiment takes no
    runs: refuse before Ray, naming it and the two ways on."""
    from mtlsearch.tracking import deleted_experiment

    exp_id = deleted_experiment(uri, name, SQLITE_LOCK_WAIT_S)
    if exp_id is not None:
        raise ConfigError(
            f"the MLflow experiment {name!r} (id {exp_id}) at {uri} was deleted (it is in MLflow's trash and takes no "
            f"runs); restore it (MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id {exp_id}, or in the "
            "MLflow UI) or log this search to another experiment with --experiment NAME",
            field="--experiment",
        )


def _local_storage(raw: str | None) -> Path | None:
    """The local folder of ``--storage`` (default ``./ray_results``), or None for a cloud URI."""
    return storage_location(raw)[1]


def check_study_file(tracking_uri: str, storage: str | None, explicit: str | None = None) -> None:
    """The Optuna study file is a store the search writes, like MLflow's (:func:`mtlsearch.studies.storage_url`:
    a journal by default, or the journal or SQLite file that ``explicit``, ``--optuna-storage``, names): an
    existing journal must be one and be writable; an existing SQLite file a database that can be written and
    is not held by another writer (waited for, then one line).  A database server is checked by
    :func:`mtlsearch.studies.check_url` instead."""
    from mtlsearch import studies
    from mtlsearch.tracking import sqlite_path

    url = studies.storage_url(tracking_uri, _local_storage(storage), explicit)
    db = studies.file_of(url) if url else None
    if url is None or db is None:
        return
    named = studies.explicit_url(explicit)
    field = named[1] if named else "--tracking-uri" if sqlite_path(tracking_uri) is not None else "--storage"
    if studies.is_journal(url):
        studies.check_journal(db, field, "the Optuna study journal (kept for optuna-dashboard)")
        return
    if not db.exists():
        return
    if db.is_dir():
        raise ConfigError(f"the Optuna study file {db} is a directory; move it aside", field=field)
    check_sqlite_file(
        db,
        "the Optuna study file (kept for optuna-dashboard)",
        field,
        f"another {field}" + (" (the study is kept beside the MLflow store)" if field == "--tracking-uri" else ""),
    )


def check_resume_study(folder: Path, saved: dict[str, Any]) -> None:
    """``--resume``: Ray restores its Optuna searcher from its saved state, and that searcher refers to the
    trials of the study in the file: a study file deleted, replaced or emptied since would end the resumed
    search in a ``KeyError`` once Ray started.  Refuse before Ray, naming the file."""
    from mtlsearch import studies

    params = saved.get("params") or {}
    url, name = params.get("optuna_storage"), params.get("optuna_study")
    db = studies.file_of(url) if isinstance(url, str) else None
    if not isinstance(url, str) or db is None or not name:
        return  # an in-memory study (cloud storage and remote MLflow), a database server, or a search from before studies were kept
    names = studies.study_names(url) if db.is_file() else []
    if names is None or str(name) not in names:
        kind = "a journal" if studies.is_journal(url) else "an Optuna storage"
        why = "the file is missing" if not db.exists() else (f"it is not {kind}" if names is None else "the study is not in it")
        raise ConfigError(
            f"the search {folder.name!r} keeps its Optuna study {name!r} in {db}, and {why} (deleted or replaced since the "
            f"search stopped); Ray's saved searcher refers to that study's trials, so the search cannot resume without it: put "
            f"the file back, or start a new search (without --resume); the finished trials stay in MLflow and under {folder}",
            field="--resume",
        )


def check_storage(raw: str | None) -> None:
    """A local storage must be (or be creatable in) a writable folder; a cloud URI must answer."""
    if raw and "://" in raw and not raw.startswith("file://"):
        scheme = raw.split("://", 1)[0]
        if scheme not in CLOUD_SCHEMES:
            raise ConfigError(
                f"unknown storage scheme {scheme + '://'!r} in {raw!r}; give a local path or a URI of "
                f"{', '.join(s + '://' for s in CLOUD_SCHEMES)}",
                field="--storage",
            )
        _probe_cloud(raw)
        return
    path = _local_storage(raw)
    assert path is not None  # a cloud URI returned above
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{str(path)!r} is a file, not a folder", field="--storage")
    folder = _existing_ancestor(path)
    if not folder.is_dir() or not _writable_dir(folder):
        raise ConfigError(
            f"{str(path)!r} cannot be written ({folder} is not a writable folder); give a writable folder or a cloud URI (s3://bucket/dir)",
            field="--storage",
        )


def min_free_mb() -> float:
    """The free space a search needs on each local device it writes (MTLSEARCH_MIN_FREE_MB, default 100 MB)."""
    return float(os.environ.get("MTLSEARCH_MIN_FREE_MB", "100"))


def check_free_space(tracking_uri: str, storage: str | None) -> None:
    """The devices the search writes (Ray's storage: checkpoints and results; the SQLite MLflow store and
    the Optuna study) have room to start with: a full disk is refused here in one line, not met by
    trials and MLflow after Ray started.  (Space running out during the search is the runner's.)"""
    import shutil

    from mtlsearch.tracking import sqlite_path

    need = min_free_mb()
    places = []
    local = _local_storage(storage)
    if local is not None:
        places.append((_existing_ancestor(local), "--storage", "Ray's checkpoints and results"))
    db = sqlite_path(tracking_uri)
    if db is not None:
        places.append((_existing_ancestor(db.parent), "--tracking-uri", "the MLflow store and the Optuna study"))
    for folder, field, what in places:
        try:
            free = shutil.disk_usage(folder).free / 2**20
        except OSError:
            continue
        if free < need:
            raise ConfigError(
                f"no space left for the search: {free:.0f} MB free on the device of {folder} ({what}), and a search needs "
                f"{need:g} MB to start (MTLSEARCH_MIN_FREE_MB); free some space or give a folder on another device",
                field=field,
            )


def _probe_cloud(uri: str) -> None:
    """Whether the bucket answers (read-only: lists nothing, writes nothing), within a short timeout."""
    import threading

    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            import pyarrow.fs as pafs

            if uri.startswith("s3://"):
                region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                bucket_path = uri[len("s3://") :]
                fs = pafs.S3FileSystem(
                    region=region or "us-east-1",
                    connect_timeout=5,
                    request_timeout=10,
                    retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
                    endpoint_override=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                )
                fs.get_file_info(bucket_path.split("/", 1)[0])
            else:
                fs, path = pafs.FileSystem.from_uri(uri)
                fs.get_file_info(path.split("/", 1)[0] if path else path)
            outcome["ok"] = True
        except Exception as err:  # any failure is reported as the storage's
            outcome["error"] = err

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(STORAGE_PROBE_TIMEOUT_S)
    err = outcome.get("error")
    if err is not None:
        text = first_line(err, typed=False)
        if re.search(r"301|PermanentRedirect|region", text) and "resolve host" not in text:
            return  # the bucket answered, from another region: Ray resolves it
        raise ConfigError(
            f"cannot reach {uri!r} ({text[:300]}); check the bucket name, the network and the credentials, or give a local/shared folder",
            field="--storage",
        )
    if "ok" not in outcome:
        raise ConfigError(
            f"{uri!r} did not answer within {STORAGE_PROBE_TIMEOUT_S:g} s (MTLSEARCH_STORAGE_PROBE_S); "
            "check the network and the credentials",
            field="--storage",
        )
