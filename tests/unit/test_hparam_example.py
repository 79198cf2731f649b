"""The worked example "Adding a method hyperparameter" (CONTRIBUTING.md) stays true: its
python block runs as written (its own asserts are the checks of the new hyperparameter), and the
launcher refuses a bad value with the very line the page shows."""

from __future__ import annotations

import re
from pathlib import Path

from mtlsearch import launch

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "CONTRIBUTING.md"


def _python_block() -> str:
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S) if "class SoftMaxLoss" in b]
    return code


def test_the_example_runs_as_written():
    namespace: dict = {"__name__": "contributing_example"}
    exec(compile(_python_block(), str(PAGE), "exec"), namespace)  # the block's asserts run here
    cls = namespace["SoftMaxLoss"]
    assert list(cls.hyperparams) == ["temperature"] and cls.temperature is cls.hyperparams["temperature"]


def test_the_launcher_refuses_a_bad_value_with_the_line_the_page_shows(tmp_path, monkeypatch, capsys):
    (tmp_path / "softmax.py").write_text(_python_block())
    (tmp_path / "space.yaml").write_text(
        "name: example\nbenchmark: synthetic\nobjective: {metric: val/delta_m, mode: max}\n"
        "budget: {num_samples: 1, max_epochs: 1}\nparams:\n  method: ./softmax.py:SoftMaxLoss\n  temperature: 0\n"
    )
    monkeypatch.chdir(tmp_path)
    assert launch.main(["--space", "space.yaml", "--dry-run"]) == 2
    shown = re.search(r"```\n(error: .*?)\n```", PAGE.read_text(encoding="utf-8")).group(1)
    assert capsys.readouterr().err.strip() == shown.replace("/home/you", str(tmp_path))
