"""Pre-flight: everything a trial will need, checked before Ray or MLflow is touched.

One pipeline, :func:`run`, that every entry point (the launcher, :func:`mtlsearch.search`,
``mtlsearch.reproduce``) goes through, in this order:

* :data:`OPTION_CHECKS`, before the space is loaded: the option values (``--seed``, ``--cpus-per-trial``,
  ``--name``, ``--num-samples``, ...) and the space file itself (a folder, a missing file, not UTF-8, a
  duplicated key, a number YAML reads as text such as ``1e-4``).
* :func:`load_space`: the space with the options applied and its plugins localised and checked
  (:func:`mtlsearch.plugin_checks.prepare`).
* :data:`SPACE_CHECKS` over one :class:`Preflight` (the space and its representative trial
  configurations, built once; an error is attributed to the ``--set`` that wrote its key): the GPU share,
  every trial configuration and objective, the data folder, a user's plugins run once on the CPU, the
  single-task references a Δm objective needs.
* :data:`RUN_CHECKS`: inside a Ray job, the Ray address, ``when`` conditions that can never hold, every
  trial's config as a whole (its tasks against the benchmark, ``device`` against the resources and the
  machine, the objective and scheduler metrics against what the benchmark reports), the CPUs per
  trial, the MLflow tracking URI (a known scheme; a SQLite store whose folder exists and is writable; a
  plain path gets the ``sqlite:///`` hint), the storage (a writable local folder, or a cloud URI that
  answers), free space and, with ``--resume``, that the space and the overrides are the ones the search
  started with.
* The stores the search writes (docs/faults.md): the SQLite MLflow store and the Optuna study file
  (readable, writable for real, a database, not held by another writer: waited for, then one line), a
  store left half-made, an experiment deleted in the MLflow UI, free space on the devices written, and
  on ``--resume`` that the study Ray's saved searcher refers to is still in its file.

A check is a function of the :class:`Preflight`; adding one is one function and its place in the list.
Every refusal is a :class:`~mtlsearch.errors.ConfigError` (one line, exit code 2).  Nothing here
creates a file, a folder, an MLflow store or a Ray process, so a refused command leaves no trace.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mtlsearch.errors import ConfigError, choices, first_line
from mtlsearch.options import SearchOptions, storage_location

if TYPE_CHECKING:
    import yaml

    from mtlsearch.benchmarks.base import Benchmark
    from mtlsearch.config import TrialConfig
    from mtlsearch.spaces import SearchSpace

#: Optuna's samplers and numpy's RandomState take seeds in [0, 2**32).
SEED_MAX = 2**32 - 1
#: MLflow's built-in tracking-store schemes (plugins add theirs through the ``mlflow.tracking_store`` entry point).
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc", "file")
#: Storage URIs Ray Tune hands to pyarrow's filesystems.
CLOUD_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az", "viewfs")
STORAGE_PROBE_TIMEOUT_S = float(os.environ.get("MTLSEARCH_STORAGE_PROBE_S", "20"))
_YAML_FLOAT_AS_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_CPU_NEEDED = "must be > 0: a trial's training loop needs a CPU (fractions such as 0.5 share one), got {value}"


# ------------------------------------------------------------------------------ the pipeline
@dataclass
class Preflight:
    """One search's pre-flight: its options, its space (loaded, the options applied) and its
    representative trial configurations and their benchmarks, each built once for every check."""

    options: SearchOptions
    space: SearchSpace
    _configs: list[TrialConfig] | None = None
    _benchmarks: dict[tuple[Any, ...], Benchmark] = dc_field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.space.path)

    def configs(self) -> list[TrialConfig]:
        """The representative trial configurations (:meth:`SearchSpace.probe_configs`), validated."""
        if self._configs is None:
            from mtlsearch.config import TrialConfig

            self._configs = [TrialConfig.from_dict(probe, source=self.source) for probe in self.space.probe_configs()]
        return self._configs

    def benchmark(self, cfg: TrialConfig) -> Benchmark:
        """The benchmark of a trial configuration (one per benchmark, data folder and options)."""
        key = (cfg.benchmark, cfg.data_root, tuple(sorted((k, repr(v)) for k, v in cfg.benchmark_options.items())))
        if key not in self._benchmarks:
            from mtlsearch.benchmarks import get_benchmark

            try:
                self._benchmarks[key] = get_benchmark(cfg.benchmark, data_root=cfg.data_root, **cfg.benchmark_options)
            except ConfigError as err:
                raise err.with_source(self.source) from None
        return self._benchmarks[key]


Check = Callable[[Preflight], None]


def run(options: SearchOptions) -> SearchSpace:
    """The whole pre-flight of a search (see the module docstring); returns its space, ready to run."""
    run_option_checks(options)
    return run_checks(_load_and_check_space(options), RUN_CHECKS)


def prepare_space(options: SearchOptions) -> SearchSpace:
    """The space of ``options`` through the checks before the run's (:data:`OPTION_CHECKS`,
    :data:`SPACE_CHECKS`): what ``--dry-run`` shows and a test inspects."""
    run_option_checks(options)
    return _load_and_check_space(options).space


def run_option_checks(options: SearchOptions) -> None:
    for check in OPTION_CHECKS:
        check(options)


def run_checks(preflight: Preflight, checks: Sequence[Check]) -> SearchSpace:
    for check in checks:
        check(preflight)
    return preflight.space


def _load_and_check_space(options: SearchOptions) -> Preflight:
    """Every error here is attributed to the ``--set KEY=VALUE`` that wrote the key it is about
    (:func:`mtlsearch.spaces.blame_set`)."""
    from mtlsearch import spaces

    try:
        checked = Preflight(options, load_space(options))
        run_checks(checked, SPACE_CHECKS)
        return checked
    except ConfigError as err:
        raise spaces.blame_set(err, options.sets) from None


# ------------------------------------------------------------------------------ before the space is read
def check_seed(options: SearchOptions) -> None:
    if options.seed is not None and not 0 <= options.seed <= SEED_MAX:
        raise ConfigError(f"must be an integer in [0, {SEED_MAX}] (2**32 - 1), got {options.seed}", field="--seed")


def check_cpus_per_trial(options: SearchOptions) -> None:
    """One rule for ``--cpus-per-trial`` (and ``resources.cpus_per_trial``, :func:`check_cpus_in_space`)."""
    value = options.cpus_per_trial
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(_CPU_NEEDED.format(value=f"{value:g}"), field="--cpus-per-trial")


def check_name(options: SearchOptions) -> None:
    if options.name is not None:
        check_folder_name(options.name, "--name")


def check_space_file(options: SearchOptions) -> None:
    path = space_file(options.space)
    if path is not None:
        check_space_text(path)


def _positive(value: float | None, flag: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}", field=flag)


def check_budget_flags(options: SearchOptions) -> None:
    """``--num-samples``, ``--max-epochs`` (> 0, under their limits), ``--gpus-per-trial``, ``--max-failures``."""
    from mtlsearch import spaces

    _positive(options.num_samples, "--num-samples")
    _positive(options.max_epochs, "--max-epochs")
    if options.num_samples is not None:
        spaces.check_limit(options.num_samples, spaces.MAX_NUM_SAMPLES, "MTLSEARCH_MAX_NUM_SAMPLES", field="--num-samples")
    if options.max_epochs is not None:
        spaces.check_limit(options.max_epochs, spaces.MAX_EPOCHS, "MTLSEARCH_MAX_EPOCHS", field="--max-epochs")
    _positive(options.gpus_per_trial, "--gpus-per-trial", allow_zero=True)
    if options.max_failures < -1:
        raise ConfigError(f"must be >= 0 (or -1: retry forever), got {options.max_failures}", field="--max-failures")


#: The checks of the options alone, in order (before the space file is parsed).
OPTION_CHECKS: tuple[Callable[[SearchOptions], None], ...] = (
    check_seed,
    check_cpus_per_trial,
    check_name,
    check_space_file,
    check_budget_flags,
)


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


# ------------------------------------------------------------------------------ the space
def load_space(options: SearchOptions) -> SearchSpace:
    """The space with the options applied (budget, resources, seed, data folder, protocol), its plugins
    localised and checked (:func:`mtlsearch.plugin_checks.prepare`)."""
    from mtlsearch import plugin_checks, spaces

    space = spaces.load_space(options.space, validate=False, sets=options.sets)
    if options.protocol or (space.protocol and options.benchmark):
        space = spaces.with_protocol(
            space,
            options.protocol or space.protocol,
            benchmark=options.benchmark,
            source=None if options.protocol else str(space.path),
            field_name="--protocol" if options.protocol else "protocol",
        )
    resources = dict(space.resources)
    if options.cpus_per_trial is not None:
        resources["cpus_per_trial"] = options.cpus_per_trial
    if options.gpus_per_trial is not None:
        resources["gpus_per_trial"] = options.gpus_per_trial
    searcher = dict(space.searcher)
    params = list(space.params)
    if options.seed is not None:
        searcher["seed"] = options.seed
        if not any(p.name == "seed" and p.kind != "value" for p in params):
            params = [p for p in params if p.name != "seed"] + [spaces.Param("seed", "value", options.seed)]
    data_root = options.data_root or space.data_root or os.environ.get("MTLSEARCH_DATA_ROOT")
    space = spaces.override(
        space,
        benchmark=options.benchmark,
        num_samples=options.num_samples,
        max_epochs=options.max_epochs,
        # Absolute: trials run in their own working directories (relative = to where the launcher runs).
        data_root=os.path.abspath(os.path.expanduser(data_root)) if data_root else None,
        resources=resources,
        searcher=searcher,
        params=params,
    )
    if space.scheduler["grace_period"] > space.max_epochs:
        space.scheduler = {**space.scheduler, "grace_period": space.max_epochs}
    return plugin_checks.prepare(space)  # a user's module:Class or file.py:Class: importable, the right class


def check_resource_shape(run: Preflight) -> None:
    """Ray takes a fraction of a GPU only below 1: 0.25 packs four trials on a GPU; 1.5 is not a request."""
    gpus = run.space.resources["gpus_per_trial"]
    if gpus > 1 and not float(gpus).is_integer():
        where = (
            {"field": "--gpus-per-trial"}
            if run.options.gpus_per_trial is not None
            else {"source": run.source, "field": "resources.gpus_per_trial"}
        )
        raise ConfigError(f"a trial takes a fraction of one GPU (0 < g <= 1) or a whole number of GPUs, got {gpus!r}", **where)


def check_trials_valid(run: Preflight) -> None:
    """Every representative trial configuration is valid, and so is every objective."""
    run.configs()
    run.space.validate_objectives()


def check_data_folder(run: Preflight) -> None:
    """Build the benchmark of a representative trial config: a user-supplied data folder that is missing
    or malformed fails here (the check is cheap: it lists files), before Ray or MLflow start.  The driver
    therefore needs the data folder at the same path as the nodes (shared filesystem or a copy)."""
    run.benchmark(run.configs()[0])


def check_plugins(run: Preflight) -> None:
    """A user's benchmark or method: importable, tasks, a first batch and step on the CPU."""
    from mtlsearch import plugin_checks

    plugin_checks.check_space(run.space, run.configs())


def check_references(run: Preflight) -> None:
    """A Δm objective needs the benchmark's single-task references on its split."""
    space = run.space
    if not space.metric.endswith("delta_m"):
        return
    from mtlsearch.references import load_reference_file

    ref = load_reference_file(space.benchmark, space.data_root)
    split = space.metric.split("/")[0]
    if ref is None or split not in ref.get("splits", {}):
        raise ConfigError(
            f"objective {space.metric!r} needs single-task references for benchmark {space.benchmark!r} "
            f"on split {split!r}, and there are none; choose a task metric (e.g. 'val/<task>/<metric>') "
            f"or generate references with `python -m mtlsearch.references --benchmark {space.benchmark} --data-root DIR`",
            source=run.source,
            field="scheduler.metric" if space.multi_objective else "objective.metric",
        )


#: The checks of the loaded space, in order; an error is attributed to the ``--set`` that wrote its key.
SPACE_CHECKS: tuple[Check, ...] = (check_resource_shape, check_trials_valid, check_data_folder, check_plugins, check_references)


# ------------------------------------------------------------------------------ the run: cluster, trials, stores
def check_job_paths(run: Preflight) -> None:
    from mtlsearch import cluster

    cluster.check_job_paths(run.options)


def check_address(run: Preflight) -> None:
    from mtlsearch import cluster

    cluster.check_address(run.options)


def check_cpus_in_space(run: Preflight) -> None:
    if run.space.resources["cpus_per_trial"] == 0:
        raise ConfigError(_CPU_NEEDED.format(value=0), source=run.source, field="resources.cpus_per_trial")


def check_tracking(run: Preflight) -> None:
    """The MLflow store: its URI, and the experiment not in MLflow's trash."""
    options = run.options
    uri = options.resolved_tracking_uri()
    check_tracking_uri(
        uri,
        "--tracking-uri"
        if options.tracking_uri
        else ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "--tracking-uri"),
    )
    check_experiment_not_deleted(uri, options.experiment or run.space.name)


def check_storage_option(run: Preflight) -> None:
    check_storage(run.options.storage)


def check_optuna_storage(run: Preflight) -> None:
    from mtlsearch import studies

    explicit = studies.explicit_url(run.options.optuna_storage)
    if explicit is not None:
        studies.check_url(*explicit)


def check_free_space_option(run: Preflight) -> None:
    check_free_space(run.options.resolved_tracking_uri(), run.options.storage)


def check_resume(run: Preflight) -> None:
    if run.options.resume:  # before the study file: on --resume a missing or replaced study is named as such
        from mtlsearch import resume

        resume.check_unchanged(run.options, run.space, check_resume_study)


def check_study(run: Preflight) -> None:
    if run.space.searcher["type"] == "optuna":
        check_study_file(run.options.resolved_tracking_uri(), run.options.storage)


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


def check_when(run: Preflight) -> None:
    """A ``when`` value that the conditioning parameter never takes: the parameter would never be searched.
    A protocol's per-method settings (``protocol_params``) are exempt: they apply when their method runs,
    and a space under the protocol need not run every method it has settings for."""
    space = run.space
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
                        source=run.source,
                        field=f"params.{p.name}.when.{key}",
                    )


def _metric_known(metric: str, known: set[str]) -> bool:
    # Δm variants of published protocols (test/delta_m_nashmtl) and the AdaTask dominance logs.
    return metric in known or re.fullmatch(r"(val|test)/delta_m_\w+", metric) is not None or metric.startswith("dominance/")


def check_trial_configs(run: Preflight) -> None:
    """Each representative trial config as a whole: tasks, device, and the metrics the search needs."""
    for cfg in run.configs():
        bench = run.benchmark(cfg)
        _check_tasks(cfg, bench, run.source)
        _check_device(cfg, run.space.resources["gpus_per_trial"], run.options.remote, run.source)
        _check_metrics(cfg, bench, run.space, run.source)


def _check_tasks(cfg: TrialConfig, bench: Benchmark, source: str) -> None:
    names = [s.name for s in bench.task_specs()]
    if cfg.tasks is None:
        return
    unknown = [t for t in cfg.tasks if t not in names]
    if unknown or not cfg.tasks:
        raise ConfigError(
            f"{'no task given' if not cfg.tasks else f'benchmark {cfg.benchmark!r} has no task {unknown[0]!r}'}; "
            f"its tasks: {', '.join(names)}",
            source=source,
            field="params.tasks",
        )


def _check_device(cfg: TrialConfig, gpus: float, remote: bool, source: str) -> None:
    if cfg.device != "cuda":
        return
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


def _check_metrics(cfg: TrialConfig, bench: Benchmark, space: SearchSpace, source: str) -> None:
    from mtlsearch.metrics import reported_metrics

    known = reported_metrics(bench.task_specs(), cfg.tasks)
    wanted = [("objective.metric" if not space.multi_objective else "scheduler.metric", space.metric)]
    if space.multi_objective and isinstance(space.objective_metrics, list):  # a list, or "tasks"
        wanted += [("objective.metrics", m) for m in space.objective_metrics]
    for field_name, metric in wanted:
        if not _metric_known(metric, known):
            raise ConfigError(
                f"no trial reports {metric!r}: benchmark {cfg.benchmark!r}"
                f"{f' with tasks {list(cfg.tasks)}' if cfg.tasks else ''} reports {', '.join(sorted(known))}",
                source=source,
                field=field_name,
            )


# ------------------------------------------------------------------------------ where results go
def _tracking_store_schemes() -> set[str]:
    from importlib.metadata import entry_points

    try:
        plugins = {e.name for e in entry_points(group="mlflow.tracking_store")}
    except Exception:  # a broken plugin's metadata is not the user's input
        plugins = set()
    return set(TRACKING_SCHEMES) | plugins


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


def _schema(db: Path) -> tuple[set[str], str | None, int | None]:
    """(tables, Alembic revision or None, number of runs or None) of a SQLite MLflow store, read-only."""
    import sqlite3

    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=SQLITE_LOCK_WAIT_S)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = con.execute("SELECT version_num FROM alembic_version").fetchone() if "alembic_version" in tables else None
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else None
    finally:
        con.close()
    return tables, revision[0] if revision else None, runs


def check_store_schema(db: Path, field: str) -> None:
    """A store whose tables MLflow did not finish making (a process killed while MLflow created it, before
    mtlsearch created stores in one step: :func:`mtlsearch.tracking.create_sqlite_store`) fails at its next
    use for good (``duplicate column name: step``): name the file to delete when it holds no runs; a store of
    another MLflow version gets MLflow's own upgrade command."""
    import sqlite3

    try:
        tables, revision, runs = _schema(db)
    except sqlite3.Error:
        return  # the write check above names what is wrong with the file
    if not tables - {"alembic_version"}:
        return  # an empty file: MLflow makes its tables
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
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
    from mtlsearch.tracking import check_reachable

    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else None
    if scheme is None:
        target = Path(uri).expanduser().resolve()
        guess = target / "mlflow.db" if target.is_dir() or not target.suffix else target
        raise ConfigError(
            f"{uri!r} is a path, not a tracking URI; for a SQLite store write sqlite:///{guess} "
            "(or give http://HOST:PORT of an MLflow server)",
            field=field,
        )
    schemes = _tracking_store_schemes()
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


def _deleted_experiment(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` when the store holds it as deleted (in MLflow's trash), else None.
    A SQLite store is read directly and read-only (MLflow would create or migrate the file); a server is
    asked; a store that cannot answer is left to the checks and writes that follow."""
    from mtlsearch.tracking import _sqlite_path

    db = _sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            return None
        import sqlite3

        try:
            con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=SQLITE_LOCK_WAIT_S)
            try:
                row = con.execute("SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?", (name,)).fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return None  # no experiments table yet (an empty file), or a store the write check refuses
        return str(row[0]) if row and row[1] == "deleted" else None
    if uri.startswith(("http://", "https://")):
        try:
            from mlflow.tracking import MlflowClient

            exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
        except Exception:  # the server's own failure is reported where the search writes
            return None
        return exp.experiment_id if exp is not None and exp.lifecycle_stage == "deleted" else None
    return None


def check_experiment_not_deleted(uri: str, name: str) -> None:
    """An experiment deleted in the MLflow UI keeps its name in the store, and a deleted experiment takes no
    runs: refuse before Ray, naming it and the two ways on."""
    exp_id = _deleted_experiment(uri, name)
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


def study_file(tracking_uri: str, storage: str | None) -> Path | None:
    """The SQLite file of the search's Optuna study (:func:`mtlsearch.studies.storage_url`), or None."""
    from mtlsearch import studies

    url = studies.storage_url(tracking_uri, _local_storage(storage))
    # A database server (--optuna-storage, MTLSEARCH_OPTUNA_STORAGE) is checked by studies.check_url instead.
    return Path(url[len("sqlite:///") :]) if url and url.startswith("sqlite:///") else None


def check_study_file(tracking_uri: str, storage: str | None) -> None:
    """The Optuna study file is a store the search writes, like MLflow's: an existing one must be a database
    that can be written and is not held by another writer (waited for, then one line)."""
    from mtlsearch.tracking import _sqlite_path

    db = study_file(tracking_uri, storage)
    if db is None or not db.exists():
        return
    beside = _sqlite_path(tracking_uri) is not None
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

    from mtlsearch.tracking import _sqlite_path

    need = min_free_mb()
    places = []
    local = _local_storage(storage)
    if local is not None:
        places.append((_existing_ancestor(local), "--storage", "Ray's checkpoints and results"))
    db = _sqlite_path(tracking_uri)
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


#: The checks of the run, in order, after :data:`SPACE_CHECKS` (errors here name the file's key, not a ``--set``).
RUN_CHECKS: tuple[Check, ...] = (
    check_job_paths,
    check_address,
    check_when,
    check_trial_configs,
    check_cpus_in_space,
    check_tracking,
    check_storage_option,
    check_optuna_storage,
    check_free_space_option,
    check_resume,
    check_study,
)
