"""The core's own commands, ``python -m mtlsearch.dominance`` and ``python -m mtlsearch.references``:
a help that describes every option with its default, and references that never land in the
installed package."""

import json
import re
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
        (references_cli, ["budget.max_epochs, else 12)", "(default: [0, 1])", "(default: auto)"]),
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


REFERENCES_SPACE = """
name: refs_small
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 2}
params:
  method: ew
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  batch_size: 32
  noise: 0.1
"""


def _references_args(*argv: str):
    parser = references_cli.build_parser()
    return parser.parse_args(list(argv))


def test_references_defaults_are_those_of_the_space_they_are_for(tmp_path):
    space = tmp_path / "refs.yaml"
    space.write_text(REFERENCES_SPACE)
    run = references_cli.settings(_references_args("--space", str(space)), {})
    # the space's benchmark, budget.max_epochs, constant batch_size and benchmark option
    assert (run.benchmark, run.epochs, run.batch_size, run.options) == ("synthetic", 2, 32, {"noise": 0.1})
    assert run.notes == ["epochs: 2, the budget.max_epochs of space 'refs_small'"]
    # a flag wins; epochs that differ from the search's are a warning naming both numbers
    run = references_cli.settings(_references_args("--space", str(space), "--epochs", "5", "--batch-size", "8"), {"noise": 0.2})
    assert (run.epochs, run.batch_size, run.options) == (5, 8, {"noise": 0.2})
    assert run.notes == [
        "warning: --epochs 5 differs from budget.max_epochs 2 of space 'refs_small': "
        "Δm would compare its 2-epoch trials with 5-epoch single-task runs"
    ]
    run = references_cli.settings(_references_args("--space", str(space), "--epochs", "2"), {})
    assert run.notes == []
    # without a space: the defaults, and a note saying where a search's epochs come from
    run = references_cli.settings(_references_args("--benchmark", "synthetic"), {})
    assert (run.epochs, run.batch_size, run.options) == (references_cli.DEFAULT_EPOCHS, references_cli.DEFAULT_BATCH_SIZE, {})
    assert run.notes == ["epochs: 12 (the default); --space NAME takes a search's budget.max_epochs instead"]


def test_references_without_a_benchmark_or_space_is_one_line_and_exit_2(capsys):
    assert references_cli.main([]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --benchmark: name the benchmark (--benchmark NAME) or the search it is for (--space NAME|PATH)"
    ]


def test_references_print_an_estimate_first_then_a_line_per_run(tmp_path, capsys):
    space = tmp_path / "refs.yaml"
    space.write_text(REFERENCES_SPACE)
    out = tmp_path / "refs.json"
    argv = ["--space", str(space), "--lrs", "0.01", "--seeds", "0", "1", "--device", "cpu", "--out", str(out)]
    assert references_cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "epochs: 2, the budget.max_epochs of space 'refs_small'"
    assert lines[1] == "Single-task references of synthetic: 3 tasks x 1 learning rates x 2 seeds = 6 runs of 2 epochs (batch size 32)"
    assert re.fullmatch(
        r"Estimated time: about \d+:\d\d for 6 runs x 2 epochs \(one epoch took [\d.]+ s here after [\d.]+ s to build "
        r"the data and model; each run builds its own\)",
        lines[2],
    ), lines[2]
    progress = [line for line in lines if line.startswith("[")]
    expected = [(task, seed) for task in ("scale_1", "scale_10", "scale_100") for seed in (0, 1)]
    assert len(progress) == len(expected)
    for k, (line, (task, seed)) in enumerate(zip(progress, expected), 1):
        assert re.fullmatch(rf"\[{k}/6\] task {task} lr=0.01 seed={seed} 2 epochs [\d.]+ s \(elapsed \d+:\d\d\)", line), line
    assert lines.index(progress[0]) > 2  # the estimate came before any run ended
    data = json.loads(out.read_text())
    assert data["settings"]["epochs"] == 2 and data["settings"]["batch_size"] == 32 and data["settings"]["options"] == {"noise": 0.1}
    assert "--epochs 2 " in data["command"] and "--batch-size 32" in data["command"]
