"""Benchmarks by name.  Built-in ones need no files; real ones read a user-supplied folder."""

from __future__ import annotations

from typing import Any

from mtlsearch.errors import ConfigError, choices

from .base import Benchmark, HPSModel, OutputsModel, TaskSpec, TensorSplit, as_model, as_split
from .celeba import CelebA
from .cityscapes import Cityscapes
from .multidigits import MultiDigits
from .nyuv2 import NYUv2
from .office import Office31, OfficeHome
from .synthetic import Synthetic

BENCHMARKS: dict[str, type[Benchmark]] = {
    cls.name: cls for cls in (Synthetic, MultiDigits, NYUv2, Cityscapes, CelebA, OfficeHome, Office31)
}


def benchmark_class(name: str) -> type[Benchmark]:
    """A built-in benchmark by name, or a user's: ``module:Class`` / ``path/file.py:Class``."""
    if isinstance(name, str) and ":" in name:
        from mtlsearch.plugins import load_class

        return load_class(name, Benchmark, "benchmark")
    try:
        return BENCHMARKS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown benchmark {name!r}; choose one of {choices(BENCHMARKS)} or your own as 'module:Class' or 'path/file.py:Class'",
            field="benchmark",
        ) from None


def get_benchmark(name: str, data_root: str | None = None, **options: Any) -> Benchmark:
    return benchmark_class(name)(data_root=data_root, **options)


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "HPSModel",
    "OutputsModel",
    "TaskSpec",
    "TensorSplit",
    "as_model",
    "as_split",
    "benchmark_class",
    "get_benchmark",
]
