"""The driver side has no import circle: each job has one module and modules do not import each other
(launch and report once did, through a private formatter).  Read from the source (every ``import``,
at module level or inside a function), so a circle is caught even where a lazy import hides it at run
time."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The driver modules (Ray, MLflow, the command lines).
DRIVER = {
    "mtlsearch.launch",
    "mtlsearch.options",
    "mtlsearch.runner",
    "mtlsearch.cluster",
    "mtlsearch.resume",
    "mtlsearch.final",
    "mtlsearch.results",
    "mtlsearch.tracking",
    "mtlsearch.console",
    "mtlsearch.preflight",
    "mtlsearch.store_checks",
    "mtlsearch.faults",
    "mtlsearch.api",
    "mtlsearch.reproduce",
    "mtlsearch.report",
    "mtlsearch.ui",
}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: {modules of package it imports}}``; a package's ``__init__`` re-exporting its own
    submodules is not an edge (importing a submodule runs its package's ``__init__`` first anyway)."""
    files = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for b in block.body for n in ast.walk(b)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # `if TYPE_CHECKING:` imports never run
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found and found != module and not (path.name == "__init__.py" and found.startswith(module + ".")):
                    graph[module].add(found)
    return graph


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_driver(module: str) -> bool:
    return any(module == d or module.startswith(d + ".") for d in DRIVER)


def test_no_import_circle_through_a_driver_module():
    graph = import_graph(ROOT, "mtlsearch")
    assert {"mtlsearch.launch", "mtlsearch.runner", "mtlsearch.report.load", "mtlsearch.results"} <= set(graph)
    assert "mtlsearch.results" in graph["mtlsearch.runner"] and "mtlsearch.results" in graph["mtlsearch.report.analysis"]
    bad = [c for c in circles(graph) if any(_is_driver(m) for m in c)]
    assert not bad, f"import circles through driver modules: {bad}"
    assert "mtlsearch.report" not in graph["mtlsearch.launch"] and "mtlsearch.launch" not in graph["mtlsearch.report.cli"]


def test_no_import_circle_anywhere_in_the_package():
    # The core's registries once sat in one circle with the plugin checks (config -> balancing ->
    # plugins -> config, trainer -> references -> plugins -> trainer): the loaders stay in plugins, the
    # checks that build a trial moved to plugin_checks.
    graph = import_graph(ROOT, "mtlsearch")
    assert "mtlsearch.plugins" in graph["mtlsearch.balancing"] and "mtlsearch.trainer" in graph["mtlsearch.plugin_checks"]
    assert circles(graph) == []


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.b import f\n")  # a re-export: not a circle
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")  # a lazy, relative import back
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n")
    (pkg / "e.py").write_text("import pkg.d\n")  # d -> c only for the type checker: no edge
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.sub"] == set() and graph["pkg.d"] == set()
    assert circles(graph) == [["pkg.a", "pkg.sub.b"]]
