"""Faults while a search runs (issue 26, rows 13, 14, 16, 17 and row 8's mid-search part): shapes that
only work by broadcasting refused before Ray, a non-finite value named at its first source in one line,
results that cannot be saved ending the search like SIGTERM."""

import sys
import textwrap
from pathlib import Path

import pytest

from mtlsearch import launch

INK = '''
import torch
from torch import nn
from torch.utils.data import Dataset

from mtlsearch.benchmarks import Benchmark, TaskSpec
from mtlsearch.metrics import MeanMeter


class Items(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {"ink": self.y[i], "tone": self.y[i] * 2}


class Net(nn.Module):
    def __init__(self, tasks):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.out = nn.ModuleDict({t: nn.Linear(8, 1) for t in tasks})

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def forward(self, x):
        z = self.trunk(x)
        return {t: self.shape(t, layer(z)) for t, layer in self.out.items()}

    def shape(self, task, out):
        return out.squeeze(-1)


def by_hand(pred, target):
    return ((pred - target) ** 2).mean()


class Ink(Benchmark):
    """The head of 'ink' outputs [N, 1] while its target is [N]: mse_loss broadcasts to [N, N]."""

    loss = staticmethod(nn.functional.mse_loss)

    def task_specs(self):
        meter = lambda: MeanMeter({"mse": lambda p, t: ((p.reshape(-1) - t) ** 2).mean()})  # noqa: E731
        return [TaskSpec("ink", self.loss, {"mse": "min"}, meter), TaskSpec("tone", nn.functional.mse_loss, {"mse": "min"}, meter)]

    def load_splits(self, data_seed):
        return {"train": Items(16, data_seed), "val": Items(8, data_seed + 1)}

    def build_model(self, task_names):
        net = Net(tuple(task_names))
        net.shape = lambda task, out: out if task == "ink" else out.squeeze(-1)
        return net


class InkByHand(Ink):
    loss = staticmethod(by_hand)


class InkFixed(Ink):
    def build_model(self, task_names):
        return Net(tuple(task_names))
'''


def _space(folder: Path, benchmark: str, method: str = "ew", epochs: int = 1, samples: int = 1, extra: str = "") -> Path:
    path = folder / "space.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: faults
        benchmark: {benchmark}
        objective: {{metric: val/tone/mse, mode: min}}
        budget: {{num_samples: {samples}, max_epochs: {epochs}}}
        scheduler: {{type: fifo}}
        params:
          method: {method}
          lr: 0.01
          batch_size: 4
        {extra}
    """)
    )
    return path


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "ink.py").write_text(INK)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    from mtlsearch import plugins

    plugins._CACHE.clear()
    for name in [n for n, m in sys.modules.items() if str(tmp_path) in str(getattr(m, "__file__", "") or "")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p != str(tmp_path)]


# ------------------------------------------------------------------------------ row 13
@pytest.mark.parametrize("bench", ["Ink", "InkByHand"])
def test_row13_a_loss_that_only_works_by_broadcasting_is_refused_before_ray(plugin_dir, capsys, bench):
    space = _space(plugin_dir, f"./ink.py:{bench}")
    code = launch.main(["--space", str(space), "--tracking-uri", f"sqlite:///{plugin_dir / 'm.db'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "output and target shapes of task 'ink' differ: [2, 1] vs [2]" in err[0] and "ink.py" in err[0], err[0]
    assert "[2, 2]" in err[0] or "broadcasting" in err[0]
    assert sorted(p.name for p in plugin_dir.iterdir() if not p.name.startswith("__")) == ["ink.py", "space.yaml"]


def test_row13_the_same_benchmark_with_matching_shapes_passes_the_checks(plugin_dir):
    from mtlsearch import plugin_checks, spaces

    space = plugin_checks.prepare(spaces.load_space(str(_space(plugin_dir, "./ink.py:InkFixed"))))
    plugin_checks.check_space(space)  # raises ConfigError on a refusal
