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
* The stores the search writes (:mod:`mtlsearch.store_checks`, docs/faults.md): the SQLite MLflow store
  and the Optuna study file, an experiment deleted in the MLflow UI, free space, and on ``--resume`` the
  study Ray's saved searcher refers to.

A check is a function of the :class:`Preflight`; adding one is one function and its place in the list.
Every refusal is a :class:`~mtlsearch.errors.ConfigError` (one line, exit code 2).  Nothing here
creates a file, a folder, an MLflow store or a Ray process, so a refused command leaves no trace.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mtlsearch.errors import ConfigError, choices
from mtlsearch import store_checks
from mtlsearch.options import SearchOptions

if TYPE_CHECKING:
    import yaml

    from mtlsearch.benchmarks.base import Benchmark
    from mtlsearch.config import TrialConfig
    from mtlsearch.spaces import SearchSpace

#: Optuna's samplers and numpy's RandomState take seeds in [0, 2**32).
SEED_MAX = 2**32 - 1
#: Storage URIs Ray Tune hands to pyarrow's filesystems.
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
    store_checks.check_tracking_uri(
        uri,
        "--tracking-uri"
        if options.tracking_uri
        else ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "--tracking-uri"),
    )
    store_checks.check_experiment_not_deleted(uri, options.experiment or run.space.name)


def check_storage_option(run: Preflight) -> None:
    store_checks.check_storage(run.options.storage)


def check_optuna_storage(run: Preflight) -> None:
    from mtlsearch import studies

    explicit = studies.explicit_url(run.options.optuna_storage)
    if explicit is not None:
        studies.check_url(*explicit)


def check_free_space_option(run: Preflight) -> None:
    store_checks.check_free_space(run.options.resolved_tracking_uri(), run.options.storage)


def check_resume(run: Preflight) -> None:
    if run.options.resume:  # before the study file: on --resume a missing or replaced study is named as such
        from mtlsearch import resume

        resume.check_unchanged(run.options, run.space, store_checks.check_resume_study)


def check_study(run: Preflight) -> None:
    if run.space.searcher["type"] == "optuna":
        store_checks.check_study_file(run.options.resolved_tracking_uri(), run.options.storage, run.options.optuna_storage)


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
