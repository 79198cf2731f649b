"""mtlsearch: fair, reproducible and fast method and hyperparameter search for multi-task learning."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # lazy, so `python -m mtlsearch.launch --help` does not import torch first
    if name == "Trainer":
        from mtlsearch.trainer import Trainer

        return Trainer
    if name == "TrialConfig":
        from mtlsearch.config import TrialConfig

        return TrialConfig
    if name in ("search", "load_results"):
        from mtlsearch import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["Trainer", "TrialConfig", "__version__", "load_results", "search"]
