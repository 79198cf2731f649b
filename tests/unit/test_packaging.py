"""The wheel holds every package of the tree: setuptools' package list is written by hand, and a
package missing from it (mtlsearch.report after the driver split, mtlsearch.dominance after it became
a package) still imports from a checkout, so every other test passes while `pip install .` users lose it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_tree_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts) for top in ("mtlsearch", "trainables") for init in (ROOT / top).rglob("__init__.py")
    }
    assert found, "no package found under the checkout"
    assert found - listed == set(), f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
