"""``mtlsearch list [spaces|methods|benchmarks|protocols]``: what exists, one line each.

The lines come from the registries (a method's level, hyperparameters and the first sentence of its
docstring; a benchmark's tasks are not listed, as that would build it: its ``description``), the bundled
spaces' ``description`` and the protocols' own descriptions.  Without a category it lists all four.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Sequence

import yaml

EXIT_BAD_INPUT = 2


def _sentence(text: str | None, limit: int = 110) -> str:
    """The first sentence of a docstring's first paragraph, without reST markup, at most ``limit`` characters."""
    paras = (text or "").strip().split("\n\n")
    para = " ".join(paras[0].split())
    for more in paras[1:3]:  # a sentence that runs on into a formula's paragraph
        if para.endswith((".", "!", "?")):
            break
        para += " " + " ".join(more.split())
    para = re.sub(r":\w+:`([^`]*)`", r"\1", para).replace("``", "")
    m = re.search(r"(?<=[.!?])\s(?=[A-Z(])", para)
    first = para[: m.start()] if m else para
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def spaces() -> list[str]:
    from mtlsearch.spaces import available_spaces, find_space

    rows = []
    for name in available_spaces():
        try:
            data = yaml.safe_load(find_space(name).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:  # a broken file is listed, not fatal
            data = {"description": f"(unreadable: {type(err).__name__})"}
        desc = str(data.get("description", "")) if isinstance(data, dict) else ""
        bench = str(data.get("benchmark", "")) if isinstance(data, dict) else ""
        rows.append((name, bench, desc))
    head = f"Search spaces ({len(rows)}; --space NAME, or --space PATH for your own file):"
    return [head, *_table([("name", "benchmark", "description"), *rows])]


def methods() -> list[str]:
    from mtlsearch.balancing import METHODS

    rows = [(n, c.level, _sentence(c.__doc__), ", ".join(c.hyperparams) or "-") for n, c in METHODS.items()]
    head = f"Methods ({len(rows)}; params.method in a space, or your own as module:Class / path/file.py:Class):"
    return [head, *_table([("name", "level", "what it does", "hyperparameters"), *rows])]


def benchmarks() -> list[str]:
    from mtlsearch.benchmarks import BENCHMARKS

    rows = [(n, c.description or _sentence(c.__doc__)) for n, c in BENCHMARKS.items()]
    head = f"Benchmarks ({len(rows)}; --benchmark NAME or benchmark: in a space, or your own as module:Class / path/file.py:Class):"
    return [head, *_table([("name", "description"), *rows])]


def protocols() -> list[str]:
    from mtlsearch.protocols import PROTOCOLS

    rows = [(n, p.tag, ", ".join(p.benchmarks), _sentence(p.description, 200)) for n, p in PROTOCOLS.items()]
    head = f"Protocols ({len(rows)}; --protocol NAME or protocol: in a space, python -m mtlsearch.reproduce --protocol NAME):"
    return [head, *_table([("name", "version", "benchmarks", "description"), *rows])]


CATEGORIES: dict[str, Callable[[], list[str]]] = {"spaces": spaces, "methods": methods, "benchmarks": benchmarks, "protocols": protocols}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtlsearch list", description="List the search spaces, methods, benchmarks or protocols, one line each."
    )
    p.add_argument("category", nargs="?", help=f"one of {', '.join(CATEGORIES)} (default: all four)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.category is not None and args.category not in CATEGORIES:
        print(f"error: mtlsearch list: unknown category {args.category!r}; choose one of {', '.join(CATEGORIES)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    names = [args.category] if args.category else list(CATEGORIES)
    blocks = ["\n".join(CATEGORIES[n]()) for n in names]
    print("\n\n".join(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
