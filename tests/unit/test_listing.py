"""``mtlsearch list``: every registered space, method, benchmark and protocol, one line each."""

from __future__ import annotations

import pytest

from mtlsearch.__main__ import main as mtlsearch_main
from mtlsearch.balancing import METHODS
from mtlsearch.benchmarks import BENCHMARKS
from mtlsearch.listing import _sentence
from mtlsearch.protocols import PROTOCOLS
from mtlsearch.spaces import available_spaces, load_space


def _rows(out: str) -> dict[str, str]:
    """First word -> the rest of each listed line (the two-space indented ones)."""
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()[0] != "name"}


def test_list_methods_prints_every_registered_method_with_its_line(capsys):
    assert mtlsearch_main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == set(METHODS) and out.startswith(f"Methods ({len(METHODS)};")
    for name, cls in METHODS.items():
        assert f" {cls.level} " in rows[name] and _sentence(cls.__doc__) in rows[name]
        assert all(h in rows[name] for h in cls.hyperparams)
    assert "Generalized-mean loss aggregation with exponent p." in rows["gemtl"]  # reST markup dropped


@pytest.mark.parametrize(
    "category, names",
    [("spaces", available_spaces()), ("benchmarks", list(BENCHMARKS)), ("protocols", list(PROTOCOLS))],
)
def test_list_each_category(capsys, category, names):
    assert mtlsearch_main(["list", category]) == 0
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == set(names)
    if category == "spaces":
        for name in names:
            assert load_space(name, validate=False).description in rows[name]
    if category == "benchmarks":
        assert all(BENCHMARKS[n].description in rows[n] for n in names)


def test_list_without_a_category_lists_all_four_and_a_bad_one_is_exit_2(capsys):
    assert mtlsearch_main(["list"]) == 0
    out = capsys.readouterr().out
    assert [line.split(" (")[0] for line in out.split("\n\n") if line] == ["Search spaces", "Methods", "Benchmarks", "Protocols"]
    assert mtlsearch_main(["list", "method"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: mtlsearch list: unknown category 'method'; choose one of spaces, methods, benchmarks, protocols"
    )


def test_sentence_is_the_first_sentence_without_markup():
    assert _sentence("``a = b`` holds. Then more.") == "a = b holds."
    assert _sentence("Runs on,\n\n    x = 1\n\nthen stops. More.") == "Runs on, x = 1 then stops."
    assert _sentence("word " * 50, limit=20).endswith("...") and len(_sentence("word " * 50, limit=20)) == 20
