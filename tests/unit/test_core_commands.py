"""The core's own commands, ``python -m mtlsearch.dominance`` and ``python -m mtlsearch.references``:
a help that describes every option with its default, and references that never land in the
installed package."""

import json
from pathlib import Path

import pytest

import mtlsearch
from mtlsearch.dominance import __main__ as dominance_cli
from mtlsearch.references import __main__ as references_cli

PACKAGE = Path(mtlsearch.__file__).resolve().parent


def _package_files():
    return {p: p.read_bytes() for p in sorted(PACKAGE.rglob("*.json"))}


@pytest.mark.parametrize(
    "cli, shown",
    [
        (dominance_cli, ["(default: 30)", "(default: synthetic)", "(default: dominance.png)"]),
        (references_cli, ["(default: 12)", "(default: [0, 1])", "(default: auto)"]),
    ],
)
def test_help_describes_every_option_with_its_default(cli, shown, capsys):
    parser = cli.build_parser()
    for action in parser._actions:
        if "-h" in action.option_strings:
            continue
        assert action.help, f"{action.option_strings} has no description"
        if action.default not in (None, [], False):
            assert "%(default)s" in action.help, f"{action.option_strings} does not show its default"
        elif not action.required:
            assert "default" in action.help, f"{action.option_strings} does not say what happens without it"
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert parser.description.split()[0] in text
    for default in shown:
        assert default in text


def test_references_of_a_built_in_benchmark_go_to_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _package_files()
    assert references_cli.main(["--benchmark", "synthetic", "--epochs", "1", "--lrs", "0.01", "--seeds", "0", "--device", "cpu"]) == 0
    assert _package_files() == before  # the packaged references (synthetic.json) are untouched
    written = tmp_path / "synthetic.references.json"
    data = json.loads(written.read_text())
    assert data["benchmark"] == "synthetic" and set(data["splits"]["val"]) == {"scale_1", "scale_10", "scale_100"}
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {written} (in the working directory") and "--out mtlsearch/references/synthetic.json" in last
