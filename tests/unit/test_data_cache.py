"""The benchmark data cache (mtlsearch.benchmarks.cache): what a trial reads from it is what a fresh
build gives, and a trial trained on it reports the same metrics."""

import pytest
import torch
from torch.utils.data import Dataset

from mtlsearch import Trainer, TrialConfig
from mtlsearch.benchmarks import Benchmark, TensorSplit, cache, get_benchmark
from mtlsearch.benchmarks.folder import LoaderSplit

CFG = {"benchmark": "multidigits", "method": "gemtl", "p": 0.5, "lr": 3e-3, "max_epochs": 2, "device": "cpu"}


@pytest.fixture(autouse=True)
def _fresh_memory():
    cache.clear_memory()
    yield
    cache.clear_memory()


def _assert_same_splits(a, b):
    assert list(a) == list(b)
    for name in a:
        assert type(a[name]) is type(b[name]) is TensorSplit
        assert a[name].inputs.dtype == b[name].inputs.dtype and torch.equal(a[name].inputs, b[name].inputs)
        assert list(a[name].targets) == list(b[name].targets)
        for task in a[name].targets:
            x, y = a[name].targets[task], b[name].targets[task]
            assert x.dtype == y.dtype and torch.equal(x, y), (name, task)


@pytest.mark.parametrize("benchmark", ["multidigits", "synthetic"])
def test_the_cached_file_holds_exactly_a_fresh_build(tmp_path, benchmark):
    cfg = TrialConfig.from_dict({**CFG, "benchmark": benchmark, "data_seed": 3})
    first = cache.load_splits(cfg, tmp_path)
    files = list((tmp_path / cache.SUBFOLDER).glob("*.pt"))
    assert [f.name for f in files] == [f"{cache.cache_key(cfg)}.pt"]
    cache.clear_memory()
    from_file = cache.load_splits(cfg, tmp_path)  # read back from the file, not built
    fresh = cache.build_splits(get_benchmark(benchmark), cfg)
    _assert_same_splits(from_file, fresh)
    _assert_same_splits(first, fresh)


def test_a_trial_on_cached_data_reports_the_same_metrics(tmp_path):
    cfg = TrialConfig.from_dict(CFG)
    cache.load_splits(cfg, tmp_path)
    cache.clear_memory()
    cached = cache.load_splits(cfg, tmp_path)
    plain = list(Trainer(cfg).run())
    on_cache = list(Trainer(cfg, splits=cached).run())
    assert len(plain) == 2 and on_cache == plain
    # Training did not change the cached tensors: the next trial reads the same data.
    _assert_same_splits(cache.load_splits(cfg, tmp_path), cache.build_splits(get_benchmark("multidigits"), cfg))


def test_the_key_follows_the_data_seed_and_options_not_the_trials_hyperparameters():
    key = cache.cache_key(TrialConfig.from_dict(CFG))
    assert key.startswith("multidigits-")
    assert key == cache.cache_key(TrialConfig.from_dict({**CFG, "p": 2.0, "lr": 1e-2, "seed": 5}))
    assert key != cache.cache_key(TrialConfig.from_dict({**CFG, "data_seed": 1}))


def test_a_damaged_file_is_rebuilt_and_replaced(tmp_path):
    cfg = TrialConfig.from_dict(CFG)
    path = tmp_path / cache.SUBFOLDER / f"{cache.cache_key(cfg)}.pt"
    path.parent.mkdir()
    path.write_bytes(b"not a torch file")
    splits = cache.load_splits(cfg, tmp_path)
    _assert_same_splits(splits, cache.build_splits(get_benchmark("multidigits"), cfg))
    cache.clear_memory()
    _assert_same_splits(cache.load_splits(cfg, tmp_path), splits)  # the replaced file reads back


class _Items(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(2), {"t": torch.tensor(float(i))}


def test_only_in_memory_tensor_splits_are_cached():
    tensors = TensorSplit(torch.zeros(4, 2), {"t": torch.zeros(4)})
    assert cache.cacheable({"train": tensors})
    assert not cache.cacheable({"train": tensors, "val": LoaderSplit(_Items())})
    big = TensorSplit(torch.zeros(1), {"t": torch.zeros(1)})
    big.inputs = torch.empty(cache.MAX_BYTES // 4 + 1)  # float32: just over the limit
    assert not cache.cacheable({"train": big})


class _OnDisk(Benchmark):
    name = "on_disk"

    def load_splits(self, data_seed):
        return {"train": _Items(), "val": _Items()}


def test_a_disk_backed_dataset_is_not_cached(tmp_path):
    cfg = TrialConfig.from_dict(CFG)  # the key; the benchmark object decides what is built
    for _ in range(2):  # the second call finds the marker and builds without the lock
        splits = cache.load_splits(cfg, tmp_path, benchmark=_OnDisk())
        assert all(isinstance(s, LoaderSplit) for s in splits.values())
    files = sorted(p.name for p in (tmp_path / cache.SUBFOLDER).iterdir())
    assert files == [f"{cache.cache_key(cfg)}.lock", f"{cache.cache_key(cfg)}.uncached"]
