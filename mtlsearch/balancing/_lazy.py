"""Buffers whose shape is known only at the first step (per-task state of size ``[T, d]``, where
``d`` is the number of shared parameters or of representation entries)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn


class LazyStateMixin(nn.Module):
    """Declares buffers that start empty and take their shape from the first step.

    ``load_state_dict`` resizes them to the checkpoint's shape first, so a trainer restored from a
    checkpoint continues with exactly the saved state (a plain buffer would refuse the new shape).
    """

    lazy_buffers: tuple[str, ...] = ()

    def _register_lazy(self) -> None:
        for name in self.lazy_buffers:
            self.register_buffer(name, torch.zeros(0))

    def _materialise(self, name: str, like: Tensor, shape: tuple[int, ...]) -> Tensor:
        """The buffer ``name``, zero-initialised to ``shape`` (dtype/device of ``like``) if still empty."""
        buf = getattr(self, name)
        if buf.numel() == 0:
            buf = torch.zeros(shape, dtype=like.dtype, device=like.device)
            setattr(self, name, buf)  # nn.Module keeps it a registered buffer
        elif tuple(buf.shape) != tuple(shape):
            raise ValueError(
                f"{getattr(self, 'name', type(self).__name__)}: state {name!r} has shape "
                f"{tuple(buf.shape)} but this step's gradients need {tuple(shape)}"
            )
        return buf

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in self.lazy_buffers:
            saved = state_dict.get(prefix + name)
            current = self._buffers[name]
            if saved is not None and current is not None:  # registered by _register_lazy: never None
                self._buffers[name] = torch.empty_like(saved, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
