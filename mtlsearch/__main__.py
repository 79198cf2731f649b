"""``mtlsearch`` / ``python -m mtlsearch``: one entry point, one module per subcommand.

``mtlsearch ui ...`` opens a search's trial comparison in the MLflow UI; ``mtlsearch launch ...`` (or
arguments without a subcommand, as before) runs a search.  A new subcommand is one line in SUBCOMMANDS.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

#: subcommand -> (module with ``main(argv) -> int``, one-line description)
SUBCOMMANDS = {
    "launch": ("mtlsearch.launch", "run a search (the default: `mtlsearch --space NAME` is `mtlsearch launch --space NAME`)"),
    "ui": ("mtlsearch.ui", "open a search's trial comparison in the MLflow UI"),
    "report": ("mtlsearch.report", "tables and figures of a finished search"),
    "list": ("mtlsearch.listing", "list the search spaces, methods, benchmarks or protocols, one line each"),
}


def usage() -> str:
    lines = ["usage: mtlsearch SUBCOMMAND [ARGS ...]   (SUBCOMMAND --help for its options)", "", "subcommands:"]
    lines += [f"  {name:<8} {desc}" for name, (_, desc) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = (argv[0], argv[1:]) if argv[0] in SUBCOMMANDS else ("launch", argv)
    if not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}; choose one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(SUBCOMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
