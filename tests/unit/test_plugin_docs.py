"""The method written on docs/plugin-authoring.md, copied from the page as it is, works: it trains, its
hook changes its weights, and its buffer is checkpointed (a restored trainer continues with them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mtlsearch.config import TrialConfig
from mtlsearch.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_method_trains_and_checkpoints_its_state(tmp_path, monkeypatch):
    page = (ROOT / "docs" / "plugin-authoring.md").read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "class SlowestTaskFirst" in b]
    (tmp_path / "slowest.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    config = {
        "benchmark": "synthetic",
        "method": "./slowest.py:SlowestTaskFirst",
        "power": 1.5,
        "lr": 1e-3,
        "max_epochs": 2,
        "device": "cpu",
    }
    trainer = Trainer(TrialConfig.from_dict(config))
    assert trainer.balancing.power == 1.5
    results = list(trainer.run())
    assert len(results) == 2 and all(torch.isfinite(torch.tensor(r["val/delta_m"])) for r in results)
    weights = trainer.balancing.weights.clone()
    assert not torch.allclose(weights, torch.ones_like(weights))  # on_epoch_end set them from the losses
    assert float(weights.sum()) == pytest.approx(len(weights), rel=1e-5)
    trainer.save(str(tmp_path / "state.pt"))
    restored = Trainer(TrialConfig.from_dict(config))
    restored.load(str(tmp_path / "state.pt"))
    assert torch.equal(restored.balancing.weights, weights)  # the buffer is in the checkpoint
