"""A benchmark's in-memory data, built once and reused by every trial of a search.

Building a benchmark's splits can cost more than a trial's epochs (``multidigits``: importing
scikit-learn, reading its digits and composing 6,000 images; about 2.7 s on a 2-core machine against
epochs of about 0.5 s).  :func:`load_splits` keeps them at two levels:

* in this process (a worker that Ray reuses for the next trial finds them in memory), and
* in ``folder`` (the trainable gives its search's results folder): the first trial that needs them
  builds them and writes one file, under a lock, so the concurrent trials wait for it rather than build
  them too; later trials, retries and a resumed search read the file.

The key is everything ``load_splits`` depends on: the benchmark (its name or ``module:Class``), its
data folder and options, and ``data_seed`` (a benchmark's ``load_splits`` is deterministic for them,
see :class:`~mtlsearch.benchmarks.base.Benchmark`).  Only splits held in memory as tensors
(:class:`TensorSplit`, on the CPU, together at most :data:`MAX_BYTES`) are cached; a disk-backed
dataset is read by its loader as before (a ``<key>.uncached`` marker spares the next trials the lock).
Cached splits are read, never written, by the trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import torch

from .base import TensorSplit, as_split

if TYPE_CHECKING:
    from mtlsearch.config import TrialConfig

    from .base import Benchmark

#: Splits larger than this (together) are not cached.
MAX_BYTES = 256 * 2**20
#: Bumped when the file layout changes (older files are then ignored).
FORMAT = 1
#: The files' folder under the folder the caller gives.
SUBFOLDER = "data_cache"

_MEMO: dict[str, dict[str, TensorSplit]] = {}


def cache_key(config: TrialConfig) -> str:
    """``<benchmark>-<hash>``: the benchmark, its data folder and options, and the data seed of a
    :class:`~mtlsearch.config.TrialConfig`."""
    what = {
        "benchmark": config.benchmark,
        "data_root": config.data_root,
        "data_seed": config.data_seed,
        "options": dict(sorted(config.benchmark_options.items())),
        "format": FORMAT,
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = "".join(c if c.isalnum() else "_" for c in str(config.benchmark).rsplit(":", 1)[-1])[:40]
    return f"{name}-{digest}"


def build_splits(benchmark: Benchmark, config: TrialConfig) -> dict[str, Any]:
    """The splits as the trainer iterates them, built afresh (what :class:`~mtlsearch.trainer.Trainer`
    does without a cache)."""
    num_workers = benchmark.opts.get("num_workers", 0) or 0
    return {k: as_split(v, num_workers) for k, v in benchmark.load_splits(config.data_seed).items()}


def cacheable(splits: Mapping[str, Any]) -> bool:
    """Whether every split is an in-memory :class:`TensorSplit` on the CPU, all of them at most :data:`MAX_BYTES`."""
    total = 0
    for split in splits.values():
        if type(split) is not TensorSplit:
            return False
        for t in (split.inputs, *split.targets.values()):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                return False
            total += t.nelement() * t.element_size()
    return total <= MAX_BYTES


def _to_file(splits: Mapping[str, TensorSplit]) -> dict[str, Any]:
    return {"format": FORMAT, "splits": {k: {"inputs": s.inputs, "targets": dict(s.targets)} for k, s in splits.items()}}


def _from_file(data: Mapping[str, Any]) -> dict[str, TensorSplit]:
    if data.get("format") != FORMAT:
        raise ValueError(f"cache format {data.get('format')!r}, expected {FORMAT}")
    return {k: TensorSplit(v["inputs"], dict(v["targets"])) for k, v in data["splits"].items()}


class _lock:
    """An exclusive ``flock`` on ``path`` (none where the filesystem refuses it: then each builds)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _lock:
        import fcntl

        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
        return False


def _read(path: Path) -> dict[str, TensorSplit] | None:
    try:
        return _from_file(torch.load(path, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or foreign file: build again (and replace it)
        return None


def load_splits(config: TrialConfig, folder: str | os.PathLike | None = None, benchmark: Benchmark | None = None) -> dict[str, Any]:
    """The splits of ``config``'s benchmark (built afresh only the first time; see the module doc).
    ``folder``: where the search keeps its files (None: this process's memory only); ``benchmark``: the
    benchmark object if the caller has one (else built from ``config`` when the data must be built)."""
    key = cache_key(config)
    if key in _MEMO:
        return dict(_MEMO[key])
    if benchmark is None:
        from . import get_benchmark

        benchmark = get_benchmark(config.benchmark, data_root=config.data_root, **config.benchmark_options)
    if folder is None:
        splits = build_splits(benchmark, config)
        if cacheable(splits):
            _remember(key, splits)
        return splits
    where = Path(folder) / SUBFOLDER
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError:
        return load_splits(config, None, benchmark)
    path, uncached = where / f"{key}.pt", where / f"{key}.uncached"
    if uncached.exists():  # a disk-backed dataset: every trial builds its own loaders, without waiting
        return build_splits(benchmark, config)
    with _lock(where / f"{key}.lock"):
        held = _read(path)
        if held is not None:
            splits = held
        else:
            splits = build_splits(benchmark, config)
            if not cacheable(splits):
                uncached.touch()
                return splits
            tmp = where / f"{key}.{os.getpid()}.tmp"
            try:
                torch.save(_to_file(splits), tmp)
                os.replace(tmp, path)
            except OSError:  # a full or read-only disk: the memory level still works
                tmp.unlink(missing_ok=True)
    _remember(key, splits)
    return dict(splits)


def _remember(key: str, splits: Mapping[str, TensorSplit]) -> None:
    if len(_MEMO) >= 4:  # a worker that runs trials of several data seeds keeps the latest few
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = dict(splits)


def clear_memory() -> None:
    """Forget the splits held in this process (tests; the files stay)."""
    _MEMO.clear()
