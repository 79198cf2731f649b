"""A search's options: one frozen object that the command line (:mod:`mtlsearch.launch`), the Python API
(:func:`mtlsearch.search`) and ``mtlsearch.reproduce`` build, and that the pre-flight, the cluster checks
and the runner read; what a search returns (:class:`SearchResult`).

Also the one place that says where a search's files go: the storage location (:func:`storage_location`,
default ``./ray_results``) and the MLflow tracking URI (:meth:`SearchOptions.resolved_tracking_uri`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

#: Ray Tune's storage when ``--storage`` is not given, relative to the working directory.
DEFAULT_STORAGE = "ray_results"


def storage_location(raw: str | None) -> tuple[str, Path | None]:
    """Where Ray Tune writes for ``--storage`` ``raw``: ``(URI or absolute path, local folder or None)``.

    A cloud URI (``s3://...``) is kept as given (without a trailing ``/``) and has no local folder;
    ``file://PATH``, a path and the default ``./ray_results`` are the absolute local folder."""
    if raw and "://" in raw and not raw.startswith("file://"):
        return raw.rstrip("/"), None
    if raw and raw.startswith("file://"):
        raw = raw[len("file://") :]
    local = Path(raw).expanduser().resolve() if raw else Path.cwd() / DEFAULT_STORAGE
    return str(local), local


@dataclass(frozen=True)
class SearchOptions:
    """What a search is asked to do: the launcher's flags by name (see ``python -m mtlsearch.launch -h``).

    ``space``: a bundled space's name or a YAML file; ``sets``: ``KEY.PATH=VALUE`` overrides of the space
    (``--set``); ``argv``: the command line that asked for the search, for the command that resumes it."""

    space: str
    benchmark: str | None = None
    sets: tuple[str, ...] = ()
    protocol: str | None = None
    data_root: str | None = None
    num_samples: int | None = None
    max_epochs: int | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    address: str | None = None
    storage: str | None = None
    storage_is_shared: bool = False
    tracking_uri: str | None = None
    experiment: str | None = None
    optuna_storage: str | None = None
    name: str | None = None
    resume: bool = False
    seed: int | None = None
    max_failures: int = 0
    top: int = 5
    quiet: bool = False
    dry_run: bool = False
    argv: tuple[str, ...] = ()

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, argv: Sequence[str] | None = None) -> SearchOptions:
        """The options of a parsed command line (``mtlsearch.launch``'s parser)."""
        values = vars(args)
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in values.items() if k in known and k not in ("sets", "argv")}
        kwargs["sets"] = tuple(values.get("set") or ())
        given = argv if argv is not None else values.get("argv")
        kwargs["argv"] = tuple(given or ())
        return cls(**kwargs)

    @classmethod
    def of(cls, args: SearchOptions | argparse.Namespace) -> SearchOptions:
        return args if isinstance(args, SearchOptions) else cls.from_namespace(args)

    @property
    def remote(self) -> bool:
        """Whether the search runs on a Ray cluster this process connects to (``--address`` / ``$RAY_ADDRESS``)."""
        return bool(self.address or os.environ.get("RAY_ADDRESS"))

    def resolved_tracking_uri(self) -> str:
        """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite store ``./mlflow.db``."""
        from mtlsearch.tracking import default_tracking_uri

        return self.tracking_uri or default_tracking_uri()

    def storage_location(self) -> tuple[str, Path | None]:
        """:func:`storage_location` of ``--storage``."""
        return storage_location(self.storage)

    def overrides(self) -> dict[str, Any]:
        """The flags that change the space, as recorded with the search (compared on ``--resume``)."""
        return {"benchmark": self.benchmark, "num_samples": self.num_samples, "max_epochs": self.max_epochs, "seed": self.seed}


@dataclass(frozen=True)
class SearchResult:
    """What :func:`mtlsearch.runner.run_search` returns: the exit code, and where MLflow holds the search
    (None where it did not get that far)."""

    exit_code: int
    tracking_uri: str | None = None
    experiment: str | None = None
    parent_run_id: str | None = None
    name: str | None = None

    @property
    def finished(self) -> bool:
        return self.exit_code == 0 and self.parent_run_id is not None
