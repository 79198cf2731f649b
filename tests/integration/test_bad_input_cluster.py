"""Bad input refused against a running cluster (more GPUs or CPUs per trial than any node has), and the
real command as a process: one line on stderr, exit code 2, nothing started (the table of the other
cases: tests/unit/test_bad_input.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

from helpers import ROOT
from helpers.bad_input import GOOD, check_refused, make_prior_store

CASES = [
    (
        "more GPUs per trial than any node",
        GOOD,
        ["--gpus-per-trial", "1"],
        "--gpus-per-trial",
        ["no node of the cluster has more than 0", "fractions"],
        True,
    ),
    (
        "more CPUs per trial than any node",
        GOOD,
        ["--cpus-per-trial", "64"],
        "--cpus-per-trial",
        ["no node of the cluster has more than 2"],
        True,
    ),
]


@pytest.fixture(scope="module")
def prior_store(tmp_path_factory):
    return make_prior_store(tmp_path_factory.mktemp("prior"))


@pytest.mark.parametrize("label, text, extra, field, words, needs_ray", CASES, ids=[c[0] for c in CASES])
def test_bad_input_against_the_cluster_exits_2_with_one_line_and_starts_nothing(
    label, text, extra, field, words, needs_ray, tmp_path, monkeypatch, capsys, ray_session, prior_store
):
    capsys.readouterr()  # Ray's own start-up lines are not ours
    check_refused(label, text, extra, field, words, tmp_path, monkeypatch, capsys, prior_store)


def test_cli_as_a_process_exits_2_before_starting_ray(tmp_path):
    """The real process: exit status 2, no traceback, nothing written in its working directory."""
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(GOOD.replace("loguniform: [1.0e-3, 1.0e-2]", "loguniform: [-1, 1]")))
    proc = subprocess.run(
        [sys.executable, "-m", "mtlsearch.launch", "--space", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "params.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
