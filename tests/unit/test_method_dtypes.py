"""Every registered method accepts float32 and float64 losses and gradients (issue 11: ``gradnorm`` and
``db_mtl`` used to raise on float64 gradients), over the whole registry, so a new method is covered."""

import pytest
import torch

from mtlsearch.balancing import METHODS, GradBalancing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_accepts_float32_and_float64(name, dtype):
    cls = METHODS[name]
    t, d = 3, 12
    gen = torch.Generator().manual_seed(0)
    method = cls(t)
    for epoch in range(3):  # a few steps and epoch ends: warm-ups and stateful branches run too
        for _ in range(2):
            losses = (torch.rand(t, generator=gen, dtype=torch.float64) + 0.5).to(dtype).requires_grad_()
            if issubclass(cls, GradBalancing):
                grads = torch.randn(t, d, generator=gen, dtype=torch.float64).to(dtype)
                head_losses = method.transform_losses(losses)
                assert head_losses.dtype == dtype and torch.isfinite(head_losses).all()
                head_losses.sum().backward()
                result = method(grads, losses.detach())
                if result.weights is not None:
                    # the weights come back in the gradients' precision and combine with them as they are
                    assert result.weights.dtype == dtype and result.weights.shape == (t,)
                    update = result.weights @ grads
                else:
                    update = result.direction
                assert update.dtype == dtype and update.shape == (d,) and torch.isfinite(update).all()
            else:
                total = method(losses)
                assert total.dtype == dtype and total.dim() == 0 and torch.isfinite(total)
                total.backward()
                assert losses.grad.dtype == dtype and torch.isfinite(losses.grad).all()
        method.on_epoch_end(epoch, (torch.rand(t, generator=gen, dtype=torch.float64) + 0.5).to(dtype))
