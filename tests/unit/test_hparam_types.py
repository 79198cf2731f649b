"""Every method hyperparameter is declared once: a typed ``HParam`` class attribute whose rule writes its
own "allowed" text.

``HParam`` is a descriptor, so ``self.p`` is typed by the declaration itself (mypy reads ``float`` from
``HParam(1.0, ...)``); a second, hand-written annotation beside it would be a duplicate, and this test
keeps them out.  The rules' texts are what every error about a method hyperparameter shows.
"""

from __future__ import annotations

import pickle

import pytest

import mtlsearch.config as config_module
from mtlsearch.balancing import METHODS, Balancing, Check, GeMTL, HParam, LossBalancing, OneOf, Range
from mtlsearch.config import TrialConfig
from mtlsearch.errors import ConfigError


@pytest.mark.parametrize("name", sorted(name for name, cls in METHODS.items() if cls.hyperparams))
def test_each_hyperparameter_is_declared_once_as_a_typed_attribute(name: str):
    cls = METHODS[name]
    for key, spec in cls.hyperparams.items():
        assert getattr(cls, key) is spec and spec.name == key, f"{cls.__name__}.{key}: declare it as `{key} = HParam(...)`"
        annotated = [k.__name__ for k in cls.__mro__ if key in vars(k).get("__annotations__", {})]
        assert not annotated, f"{cls.__name__}.{key}: annotated again in {annotated}; the HParam declares its type"
        assert isinstance(spec.default, spec.type) and spec.allowed, f"{cls.__name__}.{key}"
        assert spec.validate(key, spec.default) == spec.default


def test_a_method_instance_holds_its_hyperparameters_with_the_declared_types():
    for cls in METHODS.values():
        method = cls(3)
        for key, spec in cls.hyperparams.items():
            assert isinstance(getattr(method, key), spec.type), f"{cls.__name__}.{key}"
    assert GeMTL(3, p=-2.5).p == -2.5 and GeMTL(3).p == 1.0 and GeMTL.p is GeMTL.hyperparams["p"]


@pytest.mark.parametrize(
    "spec, allowed, good, bad",
    [
        (HParam(1.0, Range()), "any finite real number", [-1e9, 0, 2.5], [float("inf"), float("nan"), "x", True]),
        (HParam(0.5, Range(ge=0)), "a number >= 0", [0, 0.0, 3], [-1e-9, None]),
        (HParam(0.5, Range(gt=0)), "a number > 0", [1e-9, 7], [0, 0.0, -1]),
        (HParam(0.5, Range(le=1)), "a number <= 1", [1, -5.0], [1.5]),
        (HParam(0.9, Range(ge=0, lt=1)), "a number in [0, 1)", [0, 0.999], [1, 1.0, -0.1]),
        (HParam(0.5, Range(gt=0, le=1)), "a number in (0, 1]", [1, 1e-9], [0, 1.01]),
        (HParam(1.0, Range(ge=0.1, le=20.0)), "a number in [0.1, 20]", [0.1, 20], [0.05, 20.5]),
        (HParam(1, Range(ge=1)), "an integer >= 1", [1, 2.0, 40], [0, 1.5, "2"]),
        (HParam(1, OneOf(0, 1, 2)), "0, 1 or 2", [0, 2, 1.0], [3, -1]),
        (HParam("none", OneOf("none", "l2")), "'none' or 'l2'", ["l2"], ["L2", 1]),
        (HParam(False), "true or false", [True, False], [1, "yes"]),
        (
            HParam[list[float]]([], Check(lambda v: all(x >= 0 for x in v), "a list of numbers >= 0")),
            "a list of numbers >= 0",
            [[], [1]],
            [[-1], 3],
        ),
        # The earlier form: the predicate and its text written apart (benchmark options, older plugins).
        (HParam(float, 1.0, "", lambda v: v > 0, "a number > 0"), "a number > 0", [2, 0.5], [0, -1.0, "x"]),
    ],
)
def test_each_rule_writes_the_allowed_text_its_errors_name(spec, allowed, good, bad):
    assert spec.allowed == allowed
    for value in good:
        assert spec.validate("knob", value) == value
    for value in bad:
        with pytest.raises(ConfigError) as err:
            spec.validate("knob", value)
        assert err.value.field == "knob" and f"allowed: {allowed}" in str(err.value), str(err.value)


def test_method_errors_from_a_config_name_the_field_and_the_allowed_values():
    cases = [
        ({"method": "cagrad", "cagrad_rescale": 3}, "cagrad_rescale", "invalid value 3; allowed: 0, 1 or 2"),
        ({"method": "db_mtl", "db_mtl_beta": 1.0}, "db_mtl_beta", "allowed: a number in [0, 1)"),
        ({"method": "mgda", "mgda_normalization": "max"}, "mgda_normalization", "allowed: 'none', 'l2', 'loss' or 'loss+'"),
        ({"method": "gemtl", "p": "high"}, "p", "expected float, got 'high'; allowed: any finite real number"),
        ({"method": "famo", "famo_same_batch": "yes"}, "famo_same_batch", "allowed: true or false"),
        ({"method": "static", "static_weights": [0.0, 0.0]}, "static_weights", "with a positive sum"),
    ]
    for raw, field, text in cases:
        with pytest.raises(ConfigError) as err:
            TrialConfig.from_dict(raw, source="s.yaml")
        assert err.value.field == field and text in str(err.value) and "s.yaml" in str(err.value), str(err.value)


def test_buckets_name_the_report_rows_of_a_hyperparameter():
    p = GeMTL.hyperparams["p"]
    assert p.bucket_labels() == ["p<0", "0<=p<1", "p>=1"]
    assert [p.bucket(v) for v in (-2, -1e-9, 0, 0.99, 1, 3.5)] == ["p<0", "p<0", "0<=p<1", "0<=p<1", "p>=1", "p>=1"]
    assert p.bucket("x") == "" and METHODS["cagrad"].hyperparams["cagrad_c"].bucket(0.5) == ""


def test_subclasses_inherit_and_extend_the_declarations_and_the_earlier_dict_still_works():
    class Base(LossBalancing):
        alpha = HParam(0.5, Range(ge=0))

    class Child(Base):
        beta = HParam(2, Range(ge=1), "steps")

    class Earlier(LossBalancing):
        hyperparams = {"temperature": HParam(float, 1.0, "softness", lambda v: v > 0, "a number > 0")}

    assert list(Child.hyperparams) == ["alpha", "beta"] and list(Base.hyperparams) == ["alpha"]
    child = Child(2, beta=3)
    assert (child.alpha, child.beta) == (0.5, 3)
    assert Earlier(2).temperature == 1.0 and Earlier.hyperparams["temperature"].name == "temperature"
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        Child(2, gamma=1)
    with pytest.raises(TypeError, match="the rule is Range"):
        HParam(1.0, "a help text in the rule's place")  # type: ignore[call-overload]
    assert issubclass(Child, Balancing)


def test_a_config_looks_its_method_up_once_and_pickles_without_the_class(monkeypatch):
    calls = []
    real = config_module.get_method

    def counting(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(config_module, "get_method", counting)
    # compile: the refusal check and the method checks both ask for the method's kind.
    cfg = TrialConfig.from_dict({"method": "gemtl", "p": 0.5, "compile": "encoder", "device": "cpu"})
    assert cfg.effective_grad_mode is None and cfg.method_class is GeMTL
    assert calls == ["gemtl"]
    assert TrialConfig.from_dict({"method": "cagrad"}).effective_grad_mode == "param" and calls == ["gemtl", "cagrad"]
    again = pickle.loads(pickle.dumps(cfg))
    assert "method_class" not in again.__dict__ and again == cfg and again.method_class is GeMTL
