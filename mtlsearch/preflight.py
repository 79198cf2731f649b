"""Pre-flight: everything a trial will need, checked before Ray or MLflow is touched.

Two entry points, called by the launcher:

* :func:`check_args` before the space is loaded: the CLI values (``--seed``, ``--cpus-per-trial``,
  ``--name``) and the space file itself (a folder, a missing file, not UTF-8, a duplicated key, a
  number YAML reads as text such as ``1e-4``).
* :func:`check` once the space is loaded and the CLI overrides applied: ``when`` conditions that can
  never hold, every trial's config as a whole (its tasks against the benchmark, ``device`` against
  the resources and the machine, the objective and scheduler metrics against what the benchmark
  reports), the MLflow tracking URI (a known scheme; a SQLite store whose folder exists and is
  writable; a plain path gets the ``sqlite:///`` hint), the storage (a writable local folder, or a
  cloud URI that answers) and, with ``--resume``, that the space and the overrides are the ones the
  search started with.
* The stores the search writes (docs/faults.md): the SQLite MLflow store and the Optuna study file
  (readable, writable for real, a database, not held by another writer: waited for, then one line), a
  store left half-made, an experiment deleted in the MLflow UI, free space on the devices written, and
  on ``--resume`` that the study Ray's saved searcher refers to is still in its file.

Every refusal is a :class:`~mtlsearch.errors.ConfigError` (one line, exit code 2).  Nothing here
creates a file, a folder, an MLflow store or a Ray process, so a refused command leaves no trace.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from mtlsearch.errors import ConfigError, choices

if TYPE_CHECKING:
    import yaml

    from mtlsearch.benchmarks.base import Benchmark
    from mtlsearch.spaces import SearchSpace

#: Optuna's samplers and numpy's RandomState take seeds in [0, 2**32).
SEED_MAX = 2**32 - 1
#: Storage URIs Ray Tune hands to pyarrow's filesystems.
CLOUD_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az", "viewfs")
STORAGE_PROBE_TIMEOUT_S = float(os.environ.get("MTLSEARCH_STORAGE_PROBE_S", "20"))
_YAML_FLOAT_AS_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


# ------------------------------------------------------------------------------ before the space is read
def check_args(args: argparse.Namespace) -> None:
    """The CLI values and the space file, before :func:`mtlsearch.spaces.load_space` reads it."""
    if args.seed is not None and not 0 <= args.seed <= SEED_MAX:
        raise ConfigError(f"must be an integer in [0, {SEED_MAX}] (2**32 - 1), got {args.seed}", field="--seed")
    if args.cpus_per_trial is not None and args.cpus_per_trial == 0:
        raise ConfigError(
            "must be > 0: a trial's training loop needs a CPU (fractions such as 0.5 share one), got 0", field="--cpus-per-trial"
        )
    if args.name is not None:
        check_folder_name(args.name, "--name")
    path = space_file(args.space)
    if path is not None:
        check_space_text(path)


def check_folder_name(name: str, field: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise ConfigError(
            f"a name is one folder name under --storage (no '/', '\\', '..', or surrounding spaces), got {name!r}", field=field
        )


def space_file(name_or_path: str) -> Path | None:
    """The file ``--space`` names, or None for a bundled space name; a folder or a missing file is refused
    (a missing ``NAME.yaml`` that is a bundled space's file name points at ``--space NAME``)."""
    from mtlsearch import spaces

    path = Path(name_or_path).expanduser()
    if path.is_dir() and (
        "/" in name_or_path or name_or_path not in spaces.available_spaces()
    ):  # a folder named gemtl_p: the bundled space
        raise ConfigError(
            f"{name_or_path!r} is a directory; give a space file (.yaml) or a bundled space name ({', '.join(spaces.available_spaces())})",
            field="--space",
        )
    if path.suffix not in (".yaml", ".yml") and "/" not in name_or_path:
        return None  # a bundled space's name: spaces.find_space resolves (or refuses) it
    if not path.is_file():
        if path.stem in spaces.available_spaces():
            hint = f"; the bundled space of that name is --space {path.stem}"
        else:
            hint = f"; bundled spaces (by name, without .yaml): {', '.join(spaces.available_spaces())}"
        raise ConfigError(f"no such file {name_or_path!r} (looked in {Path.cwd()}){hint}", field="--space")
    return path.resolve()


def check_space_text(path: Path) -> None:
    """Encoding, duplicated keys and numbers YAML reads as text, which ``yaml.safe_load`` lets through."""
    import yaml

    source = str(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[err.start]:02x} at line {line}); save the file as UTF-8", source=source) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # spaces.load_space reports the syntax error with its line
    if root is not None:
        _check_nodes(root, "", source)


def _check_nodes(node: yaml.Node, where: str, source: str) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                raise ConfigError(
                    f"duplicate key {name!r} (lines {seen[name]} and {key.start_mark.line + 1}); a key may appear once in a mapping",
                    source=source,
                    field=f"{where}{name}",
                )
            seen[name] = key.start_mark.line + 1
            _check_nodes(value, f"{where}{name}.", source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_nodes(item, where, source)
    elif isinstance(node, yaml.ScalarNode):
        if (
            node.tag == "tag:yaml.org,2002:str"
            and node.style is None
            and _YAML_FLOAT_AS_TEXT.fullmatch(node.value)
            and where not in ("name.", "description.")
        ):
            mantissa, exponent = re.split("[eE]", node.value)
            fixed = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
            raise ConfigError(
                f"YAML reads {node.value} as text, not a number (YAML needs a '.' in the mantissa); write {fixed}",
                source=source,
                field=where.rstrip(".") or None,
            )


# ------------------------------------------------------------------------------ once the space is loaded
def check(args: argparse.Namespace, space: SearchSpace) -> None:
    """Everything else a trial needs (see the module docstring), before Ray or MLflow starts."""
    check_when(space)
    check_trial_configs(space, remote=bool(args.address or os.environ.get("RAY_ADDRESS")))
    if space.resources["cpus_per_trial"] == 0:
        raise ConfigError(
            "must be > 0: a trial's training loop needs a CPU (fractions such as 0.5 share one), got 0",
            source=str(space.path),
            field="resources.cpus_per_trial",
        )
    from mtlsearch.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(
        uri,
        "--tracking-uri" if args.tracking_uri else ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "--tracking-uri"),
    )
    check_experiment_not_deleted(uri, args.experiment or space.name)
    check_storage(args.storage)
    from mtlsearch import studies

    explicit = studies.explicit_url(getattr(args, "optuna_storage", None))
    if explicit is not None:
        studies.check_url(*explicit)
    check_free_space(uri, args.storage)
    if args.resume:  # first: on --resume a missing or replaced study is named as such (check_resume_study)
        check_resume_unchanged(args, space)
    if space.searcher["type"] == "optuna":
        check_study_file(uri, args.storage)


def _possible_values(space: SearchSpace, name: str) -> list[Any] | None:
    """The values parameter ``name`` can take, or None where it is continuous (any value may match)."""
    if name == "benchmark":
        return [space.benchmark]
    if name == "max_epochs":
        return [space.max_epochs]
    values: list[Any] = []
    for p in space.params:
        if p.name != name:
            continue
        if p.kind == "value":
            values.append(p.args)
        elif p.kind in ("choice", "grid"):
            values.extend(p.args)
        else:
            return None
    return values


def check_when(space: SearchSpace) -> None:
    """A ``when`` value that the conditioning parameter never takes: the parameter would never be searched.
    A protocol's per-method settings (``protocol_params``) are exempt: they apply when their method runs,
    and a space under the protocol need not run every method it has settings for."""
    for p in space.params:
        if p.name in space.protocol_params:
            continue
        for key, wanted in p.when.items():
            possible = _possible_values(space, key)
            if possible is None:
                continue
            for value in wanted if isinstance(wanted, list) else [wanted]:
                if value not in possible:
                    raise ConfigError(
                        f"when: {{{key}: {value!r}}} never holds: {key!r} takes {choices(map(str, possible))} in this "
                        f"space, so {p.name!r} would never be searched",
                        source=str(space.path),
                        field=f"params.{p.name}.when.{key}",
                    )


def _reported_metrics(benchmark: Benchmark, tasks: Sequence[str] | None) -> set[str]:
    specs = [s for s in benchmark.task_specs() if tasks is None or s.name in tasks]
    out = {f"{split}/delta_m" for split in ("val", "test")}
    for s in specs:
        out |= {f"{split}/{s.name}/{m}" for split in ("val", "test") for m in s.metrics}
        out |= {f"train/{s.name}/loss", f"weights/{s.name}"}
    return out


def _metric_known(metric: str, known: set[str]) -> bool:
    # Δm variants of published protocols (test/delta_m_nashmtl) and the AdaTask dominance logs.
    return metric in known or re.fullmatch(r"(val|test)/delta_m_\w+", metric) is not None or metric.startswith("dominance/")


def check_trial_configs(space: SearchSpace, *, remote: bool) -> None:
    """Each representative trial config as a whole: tasks, device, and the metrics the search needs."""
    from mtlsearch.benchmarks import get_benchmark
    from mtlsearch.config import TrialConfig

    source = str(space.path)
    benchmarks: dict[tuple, Any] = {}
    gpus = space.resources["gpus_per_trial"]
    for probe in space.probe_configs():
        cfg = TrialConfig.from_dict(probe, source=source)
        key = (cfg.benchmark, cfg.data_root, tuple(sorted((k, repr(v)) for k, v in cfg.benchmark_options.items())))
        if key not in benchmarks:
            try:
                benchmarks[key] = get_benchmark(cfg.benchmark, data_root=cfg.data_root, **cfg.benchmark_options)
            except ConfigError as err:
                raise err.with_source(source) from None
        bench = benchmarks[key]
        names = [s.name for s in bench.task_specs()]
        if cfg.tasks is not None:
            unknown = [t for t in cfg.tasks if t not in names]
            if unknown or not cfg.tasks:
                raise ConfigError(
                    f"{'no task given' if not cfg.tasks else f'benchmark {cfg.benchmark!r} has no task {unknown[0]!r}'}; "
                    f"its tasks: {', '.join(names)}",
                    source=source,
                    field="params.tasks",
                )
        if cfg.device == "cuda":
            if gpus == 0:
                raise ConfigError(
                    "device 'cuda' needs a GPU share per trial, and resources.gpus_per_trial is 0 (Ray hides "
                    "the GPUs from such a trial); set --gpus-per-trial (e.g. 1 or 0.5) or device: auto",
                    source=source,
                    field="device",
                )
            if not remote:
                import torch

                if not torch.cuda.is_available():
                    raise ConfigError(
                        "device 'cuda', but this machine has no usable CUDA GPU (torch.cuda.is_available() "
                        "is False); use device: auto or cpu, or run on a GPU machine / cluster (--address)",
                        source=source,
                        field="device",
                    )
        known = _reported_metrics(bench, cfg.tasks)
        wanted = [("objective.metric" if not space.multi_objective else "scheduler.metric", space.metric)]
        if space.multi_objective and isinstance(space.objective_metrics, list):  # a list, or "tasks"
            wanted += [("objective.metrics", m) for m in space.objective_metrics]
        for field, metric in wanted:
            if not _metric_known(metric, known):
                raise ConfigError(
                    f"no trial reports {metric!r}: benchmark {cfg.benchmark!r}"
                    f"{f' with tasks {list(cfg.tasks)}' if cfg.tasks else ''} reports {', '.join(sorted(known))}",
                    source=source,
                    field=field,
                )


# ------------------------------------------------------------------------------ where results go
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
    if raw and "://" in raw and not raw.startswith("file://"):
        return None
    if raw and raw.startswith("file://"):
        raw = raw[len("file://") :]
    return Path(raw).expanduser().resolve() if raw else Path.cwd() / "ray_results"


def study_file(tracking_uri: str, storage: str | None) -> Path | None:
    """The SQLite file of the search's Optuna study (:func:`mtlsearch.studies.storage_url`), or None."""
    from mtlsearch import studies

    url = studies.storage_url(tracking_uri, _local_storage(storage))
    # A database server (--optuna-storage, MTLSEARCH_OPTUNA_STORAGE) is checked by studies.check_url instead.
    return Path(url[len("sqlite:///") :]) if url and url.startswith("sqlite:///") else None


def check_study_file(tracking_uri: str, storage: str | None) -> None:
    """The Optuna study file is a store the search writes, like MLflow's: an existing one must be a database
    that can be written and is not held by another writer (waited for, then one line)."""
    from mtlsearch.tracking import sqlite_path

    db = study_file(tracking_uri, storage)
    if db is None or not db.exists():
        return
    beside = sqlite_path(tracking_uri) is not None
    if db.is_dir():
        raise ConfigError(f"the Optuna study file {db} is a directory; move it aside", field="--tracking-uri" if beside else "--storage")
    check_sqlite_file(
        db,
        "the Optuna study file (kept for optuna-dashboard)",
        "--tracking-uri" if beside else "--storage",
        "another --tracking-uri (the study is kept beside the MLflow store)" if beside else "another --storage",
    )


def _has_study(db: Path, name: str) -> bool | None:
    """Whether the Optuna storage ``db`` holds study ``name`` (None: it cannot be read as one)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=SQLITE_LOCK_WAIT_S)
        try:
            return con.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error:
        return None


def check_resume_study(folder: Path, saved: dict[str, Any]) -> None:
    """``--resume``: Ray restores its Optuna searcher from its saved state, and that searcher refers to the
    trials of the study in the file: a study file deleted, replaced or emptied since would end the resumed
    search in a ``KeyError`` once Ray started.  Refuse before Ray, naming the file."""
    params = saved.get("params") or {}
    url, name = params.get("optuna_storage"), params.get("optuna_study")
    if not (isinstance(url, str) and url.startswith("sqlite:///") and name):
        return  # an in-memory study (cloud storage and remote MLflow), or a search from before studies were kept
    db = Path(url[len("sqlite:///") :])
    found = _has_study(db, str(name)) if db.is_file() else False
    if not found:
        why = "the file is missing" if not db.exists() else ("it is not an Optuna storage" if found is None else "the study is not in it")
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
    if raw and raw.startswith("file://"):
        raw = raw[len("file://") :]
    path = Path(raw).expanduser().resolve() if raw else Path.cwd() / "ray_results"
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
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
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


# ------------------------------------------------------------------------------ --resume
def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), data


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = dict(_flatten(old)), dict(_flatten(new))
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_resume_unchanged(args: argparse.Namespace, space: SearchSpace) -> None:
    """Ray Tune resumes with the search it saved: an edited space file or other overrides would be
    silently ignored, so refuse them and say what changed."""
    import json

    import yaml

    from mtlsearch.tracking import SEARCH_INFO_FILE, STUDY_PARAMS, search_info

    raw = args.storage
    if raw and "://" in raw and not raw.startswith("file://"):
        return  # a cloud storage: the search info lives beside Ray's results only on a local disk
    storage = (
        Path(raw[len("file://") :] if raw and raw.startswith("file://") else raw).expanduser().resolve()
        if raw
        else Path.cwd() / "ray_results"
    )
    folder = storage / args.name if args.name else _latest(storage, space.name)
    if folder is None:  # --resume is not a new full search: say so before anything starts
        raise ConfigError(
            f"no unfinished search of {space.name!r} under {storage} to resume; run without --resume to "
            "start a new one (or give the --storage and --name that the interrupted search printed)",
            field="--resume",
        )
    if folder is not None and folder.is_dir():
        if space.searcher["type"] == "optuna" and (folder / SEARCH_INFO_FILE).is_file():
            try:
                info = json.loads((folder / SEARCH_INFO_FILE).read_text())
            except (OSError, ValueError):
                info = None
            if isinstance(info, dict):
                # Before check_saved_state: unpickling Ray's saved searcher opens its study's storage, which
                # would make a new empty file where the study file was deleted.
                check_resume_study(folder, info)
        check_saved_state(folder)
    if folder is None or not (folder / SEARCH_INFO_FILE).is_file():
        return
    try:
        saved = json.loads((folder / SEARCH_INFO_FILE).read_text())
        old_space = yaml.safe_load(saved.get("space_text") or "") or {}
    except (OSError, ValueError, yaml.YAMLError):
        return
    overrides = {"benchmark": args.benchmark, "num_samples": args.num_samples, "max_epochs": args.max_epochs, "seed": args.seed}
    new_space = yaml.safe_load(space.text) or {}
    diff = changes(old_space, new_space) if saved.get("space_text") is not None else []
    saved_params = {k: v for k, v in saved.get("params", {}).items() if k not in STUDY_PARAMS}  # where, not what
    diff += [
        d
        for d in changes(saved_params, json.loads(json.dumps(search_info(space, overrides)["params"], default=str)))
        if d.split(":", 1)[0] not in {c.split(":", 1)[0] for c in diff} and not _same_as_space_change(d, diff)
    ]
    if diff:
        raise ConfigError(
            f"the search {folder.name!r} was started with another space or other options, and a resumed search keeps "
            f"what it started with; changed: {'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}. Undo the change "
            f"to resume, or start a new search (without --resume)",
            field="--resume",
        )


def check_saved_state(folder: Path) -> None:
    """Ray Tune's saved search state (the newest ``experiment_state-*.json`` and the pickles it restores
    with) must be readable: a truncated or corrupted file would fail inside ``Tuner.restore``."""
    import json
    import pickle

    states = sorted(folder.glob("experiment_state-*.json"))
    files = [*states[-1:], *sorted(folder.glob("searcher-state-*.pkl"))[-1:]]
    if (folder / "tuner.pkl").exists():
        files.append(folder / "tuner.pkl")
    for path in files:
        try:
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                if not isinstance(data, dict) or not isinstance(data.get("trial_data"), list):
                    raise ValueError("no trial_data list")
                for entry in data["trial_data"]:
                    json.loads(entry[0])
            else:
                with open(path, "rb") as f:
                    pickle.load(f)
        except Exception as err:  # whatever the file holds, it cannot be restored
            why = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"the saved state of search {folder.name!r} is unreadable ({path.name}: {why}); the trials' results and "
                f"checkpoints under {folder} are untouched. Start a new search (without --resume) or restore the file",
                field="--resume",
            ) from None


def _same_as_space_change(entry: str, space_diff: list[str]) -> bool:
    """``num_samples`` etc. appear both in the space file and in the search's params: say it once."""
    key = entry.split(":", 1)[0]
    return any(c.split(":", 1)[0].endswith("." + key) or c.split(":", 1)[0] == key for c in space_diff) or (
        key.startswith(("scheduler.", "searcher.", "resources.")) and any(c.startswith(key.split(".")[0]) for c in space_diff)
    )


def _latest(storage: Path, space_name: str) -> Path | None:
    from mtlsearch.resume import latest_unfinished

    return latest_unfinished(storage, space_name)
