"""Benchmarks by name.  Built-in ones need no files; real ones read a user-supplied folder."""
from __future__ import annotations

from typing import Any

from mtlsearch.errors import ConfigError, choices

from .base import Benchmark, HPSModel, TaskSpec, TensorSplit
from .celeba import CelebA
from .cityscapes import Cityscapes
from .multidigits import MultiDigits
from .nyuv2 import NYUv2
from .office import Office31, OfficeHome
from .synthetic import Synthetic

BENCHMARKS: dict[str, type[Benchmark]] = {
    cls.name: cls for cls in (Synthetic, MultiDigits, NYUv2, Cityscapes, CelebA, OfficeHome, Office31)
}


def get_benchmark(name: str, data_root: str | None = None, **options: Any) -> Benchmark:
    try:
        cls = BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of {choices(BENCHMARKS)}", field="benchmark") from None
    return cls(data_root=data_root, **options)


__all__ = ["BENCHMARKS", "Benchmark", "HPSModel", "TaskSpec", "TensorSplit", "get_benchmark"]
