"""docs/architecture.md's list of public names is true: each one imports (the page says the list is what
users may rely on, so it must not name what does not exist)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _public_python_names() -> list[str]:
    section = PAGE.split("## Public API and internals", 1)[1].split("\n## ", 1)[0]
    python = section.split("- **Python**:", 1)[1].split("\n- **", 1)[0]
    names: list[str] = []
    module = ""
    for token in re.findall(r"`([A-Za-z_][\w.]*)`", python):
        if token == "mtlsearch.__all__":
            continue
        if "." in token:
            module, _, name = token.rpartition(".")
            names.append(f"{module}.{name}")
        else:
            names.append(f"{module}.{token}")  # a bare name continues the last module named
    return names


def test_every_public_name_on_the_architecture_page_imports() -> None:
    names = _public_python_names()
    assert len(names) >= 14, names
    missing = []
    for dotted in names:
        module, _, name = dotted.rpartition(".")
        if not hasattr(importlib.import_module(module), name):
            missing.append(dotted)
    assert not missing, f"docs/architecture.md lists public names that do not exist: {missing}"


def test_the_top_level_public_names_are_mtlsearch_all() -> None:
    import mtlsearch

    top = {n.split(".")[1] for n in _public_python_names() if n.count(".") == 1}
    assert top == set(mtlsearch.__all__) - {"__version__"}, (top, mtlsearch.__all__)
