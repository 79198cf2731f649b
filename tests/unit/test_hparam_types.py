"""Every method hyperparameter is declared on its class with the type its ``HParam`` checks.

``Balancing.__init__`` sets hyperparameters with ``setattr``, so without a class-level annotation a
type checker sees ``self.p`` as nn.Module's ``Tensor | Module``; the annotation is what mypy reads,
and this test keeps it in step with ``hyperparams`` (the runtime check).
"""

from __future__ import annotations

import typing

import pytest

from mtlsearch.balancing import METHODS


@pytest.mark.parametrize("name", sorted(name for name, cls in METHODS.items() if cls.hyperparams))
def test_each_hyperparameter_is_declared_with_its_checked_type(name: str):
    cls = METHODS[name]
    hints = typing.get_type_hints(cls)
    for key, spec in cls.hyperparams.items():
        assert key in hints, f"{cls.__name__}: declare `{key}: {spec.type.__name__}` beside `hyperparams`"
        declared = typing.get_origin(hints[key]) or hints[key]
        assert declared is spec.type, f"{cls.__name__}.{key}: declared {hints[key]}, HParam checks {spec.type.__name__}"


def test_a_method_instance_holds_its_hyperparameters_with_the_declared_types():
    for cls in METHODS.values():
        method = cls(3)
        for key, spec in cls.hyperparams.items():
            assert isinstance(getattr(method, key), spec.type), f"{cls.__name__}.{key}"
