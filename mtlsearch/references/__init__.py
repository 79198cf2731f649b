"""Single-task reference results for Δm, stored with the command that regenerates them.

``<benchmark>.json`` holds, per split, each task's metrics when that task is trained alone with the
same budget and defaults as the searches (see ``settings`` in the file), averaged over seeds.
Regenerate with ``python -m mtlsearch.references --benchmark NAME`` (the exact command is stored in
the file's ``command`` field).  Benchmarks without a file get no Δm: it is never computed against a
made-up reference.

For a user-supplied dataset, references of the user's own single-task runs live beside the data:
``python -m mtlsearch.references --benchmark nyuv2 --data-root DIR`` writes
``DIR/mtlsearch_references.json`` (validation and test), which then takes precedence over the packaged
(published, test-only) file.
"""
from __future__ import annotations

import json
from pathlib import Path
from importlib import resources
from typing import Any


def reference_path(benchmark: str):
    return resources.files(__name__).joinpath(f"{benchmark}.json")


USER_FILE = "mtlsearch_references.json"


def load_reference_file(benchmark: str, data_root: str | None = None) -> dict[str, Any] | None:
    """The user's references in ``data_root`` (if made for this benchmark), else the packaged ones."""
    if data_root:
        user = Path(data_root) / USER_FILE
        if user.is_file():
            data = json.loads(user.read_text())
            if data.get("benchmark") == benchmark:
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
