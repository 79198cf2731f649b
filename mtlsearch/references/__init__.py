"""Single-task reference results for Δm, stored with the command that regenerates them.

``<benchmark>.json`` holds, per split, each task's metrics when that task is trained alone with the
same budget and defaults as the searches (see ``settings`` in the file), averaged over seeds.
Regenerate with ``python -m mtlsearch.references --benchmark NAME --out mtlsearch/references/NAME.json``
in a checkout (the settings are stored in the file's ``command`` field; without ``--out`` the command
writes into the working directory, never into the installed package).  Benchmarks without a file get no Δm: it is never computed against a
made-up reference.

For a user-supplied dataset, references of the user's own single-task runs live beside the data:
``python -m mtlsearch.references --benchmark nyuv2 --data-root DIR`` writes
``DIR/mtlsearch_references.json`` (validation and test), which then takes precedence over the packaged
(published, test-only) file.

A user's benchmark (``module:Class`` / ``path/file.py:Class``) keeps its references beside its
module: ``python -m mtlsearch.references --benchmark ./my_tasks.py:MyBenchmark`` writes
``<folder of my_tasks.py>/MyBenchmark.references.json`` (or ``DATA_ROOT/mtlsearch_references.json``
with ``--data-root``).
"""

from __future__ import annotations

import json
from pathlib import Path
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.abc import Traversable


def reference_path(benchmark: str) -> Path | Traversable:
    """The packaged file of a built-in benchmark; a user's benchmark's file beside its module."""
    if ":" in benchmark:
        from mtlsearch.plugins import source_file

        cls = benchmark.rpartition(":")[2]
        return Path(source_file(benchmark)).resolve().parent / f"{cls}.references.json"
    return resources.files(__name__).joinpath(f"{benchmark}.json")


def reference_id(benchmark: str) -> str:
    """The ``benchmark`` a references file records: a built-in's name, a user's class name (the same
    whether it is named by path or by module)."""
    return benchmark.rpartition(":")[2] if ":" in benchmark else benchmark


USER_FILE = "mtlsearch_references.json"


def load_reference_file(benchmark: str, data_root: str | None = None) -> dict[str, Any] | None:
    """The user's references in ``data_root`` (if made for this benchmark), else the packaged ones."""
    if data_root:
        user = Path(data_root) / USER_FILE
        if user.is_file():
            data = json.loads(user.read_text())
            if data.get("benchmark") in (benchmark, reference_id(benchmark)):
                return data
    path = reference_path(benchmark)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def load_reference(benchmark: str, tasks: list[str], data_root: str | None = None) -> dict[str, dict[str, dict[str, float]]] | None:
    """``{split: {task: {metric: value}}}`` restricted to ``tasks``; None if any task lacks one."""
    data = load_reference_file(benchmark, data_root)
    if data is None:
        return None
    out = {}
    for split, per_task in data["splits"].items():
        if not all(t in per_task for t in tasks):
            return None
        out[split] = {t: per_task[t] for t in tasks}
    return out
