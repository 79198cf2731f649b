"""The distribution kinds of a space's ``params`` (:mod:`mtlsearch.distributions`): every registered kind
through the whole path with its ``example`` (parse, the ``--dry-run`` line, Optuna's define-by-run in a real
study, Ray Tune's variant generator, the pre-flight's probes, the report's axis), the kinds' own values, and
the worked example of the contributing guide executed as written (a kind added in one class).  The errors a
user meets are in tests/unit/test_bad_input.py; no Ray is started here (the variant generator is plain Python)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
import pytest
import yaml
from ray.tune.search.variant_generator import generate_variants

from mtlsearch import console, distributions, spaces
from mtlsearch.errors import ConfigError
from mtlsearch.report.trials import params_from_space_text
from mtlsearch.space_sections import parse_param

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"name": "kinds", "benchmark": "multidigits", "budget": {"num_samples": 4, "max_epochs": 1}}


def space_of(params: dict, searcher: str = "optuna") -> tuple[spaces.SearchSpace, str]:
    data = {**SPACE, "searcher": {"type": searcher, "seed": 0}, "params": params}
    text = yaml.safe_dump(data)
    return spaces.parse_space(yaml.safe_load(text), "kinds.yaml", text), text


def in_axis(axis: distributions.Axis, value) -> bool:
    if axis.kind == "categorical":
        return value in axis.choices
    return axis.low <= value <= axis.high and isinstance(value, int if axis.kind == "int" else float)


def run_kind(kind: str, args, name: str = "x") -> dict:
    """One kind through every consumer; returns what each one gave, for the kind's own checks."""
    param = parse_param(name, {kind: args}, "kinds.yaml")
    dist = param.dist
    assert type(dist) is distributions.REGISTRY[kind] and param.kind == kind
    line = console.describe_param(param)
    assert line.startswith(f"{name}: {kind} ") and "\n" not in line

    space, text = space_of({name: {kind: args}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna_values = []
    for _ in range(8):
        trial = study.ask()
        constants = space.define_by_run()(trial)
        optuna_values.append(constants[name] if dist.optuna_constant else trial.params[name])
    tune_space = space_of({name: {kind: args}}, searcher="random")[0].tune_param_space()
    tune_values = [spec["config"][name] for _ in range(4) for _, spec in generate_variants({"config": tune_space})]
    axis = dist.axis()
    if axis is not None:  # Optuna, Ray Tune and the report agree on the range
        assert all(in_axis(axis, v) for v in optuna_values + tune_values), (optuna_values, tune_values)
        (searched,) = params_from_space_text(text)
        assert (searched.kind, searched.log, searched.low, searched.high, searched.step, searched.choices) == (
            axis.kind,
            axis.log,
            axis.low,
            axis.high,
            axis.step,
            axis.choices,
        )
    probes = space.probe_configs()
    assert probes and all(name in probe for probe in probes)
    return {"dist": dist, "line": line, "optuna": optuna_values, "tune": tune_values, "probes": [p[name] for p in probes]}


@pytest.mark.parametrize("kind", list(distributions.REGISTRY))
def test_every_registered_kind_runs_through_parse_dry_run_optuna_tune_probes_and_report(kind):
    cls = distributions.REGISTRY[kind]
    assert cls.kind == kind and cls.example is not None, f"{cls.__name__} needs a kind and an example"
    got = run_kind(kind, cls.example)
    assert len(got["optuna"]) == 8 and got["tune"] and None not in got["tune"]
    # --set writes the kind like the file does
    (param,) = spaces.parse_space(
        spaces.apply_sets({**SPACE, "params": {"x": 1.0}}, [f"params.x.{kind}={json.dumps(cls.example)}"]),
        "kinds.yaml",
    ).params
    assert (param.kind, param.args) == (kind, got["dist"].args)


def test_the_built_in_kinds_sample_what_they_say():
    uniform = run_kind("uniform", [-2, 4])
    assert uniform["dist"].args == [-2.0, 4.0] and uniform["line"] == "x: uniform [-2, 4]" and uniform["probes"] == [-2.0]
    assert max(uniform["optuna"]) - min(uniform["optuna"]) > 1.0  # spread over the range, not stuck at a bound
    log = run_kind("loguniform", [1e-4, 1e-2])
    assert sum(v < 1e-3 for v in log["optuna"] + log["tune"]) >= 3  # half the mass below the geometric middle
    q = run_kind("quniform", [0, 1, 0.25])
    assert q["line"] == "x: quniform [0, 1] step 0.25"
    assert all(math.isclose(v / 0.25, round(v / 0.25), abs_tol=1e-9) for v in q["optuna"] + q["tune"])
    randint = run_kind("randint", [1, 4])
    assert set(randint["optuna"] + randint["tune"]) <= {1, 2, 3} and 3 in randint["optuna"] + randint["tune"]  # high excluded
    choice = run_kind("choice", ["adam", "sgd"])
    assert choice["line"] == "x: choice {adam, sgd}" and choice["probes"] == ["adam", "sgd"]
    grid = run_kind("grid", [1, 2, 3])
    assert sorted(grid["tune"]) == sorted([1, 2, 3] * 4)  # every value in every round of the variant generator
    simplex = run_kind("simplex", 3)
    for weights in simplex["optuna"] + simplex["tune"]:
        assert len(weights) == 3 and math.isclose(sum(weights), 1.0) and min(weights) >= 0
    assert simplex["probes"] == [[1 / 3] * 3]


def test_the_registry_refuses_a_kind_twice_or_a_reserved_name(monkeypatch):
    monkeypatch.setattr(distributions, "REGISTRY", dict(distributions.REGISTRY))
    for kind in ("uniform", "value", "when", ""):
        cls = type("Bad", (distributions.Range,), {"kind": kind})
        with pytest.raises(ValueError, match="empty, reserved or registered already"):
            distributions.register(cls)
    with pytest.raises(ConfigError, match=r"kinds.yaml: params.x: unknown distribution 'lograndint'; allowed: 'choice', "):
        parse_param("x", {"lograndint": [8, 257]}, "kinds.yaml")


# ------------------------------------------------------------------------------ the worked example
def _guide() -> tuple[Path, str]:
    """CONTRIBUTING.md's section "Adding a distribution kind" and its class."""
    path = ROOT / "CONTRIBUTING.md"
    blocks = [b for b in re.findall(r"```python\n(.*?)```", path.read_text(), re.S) if "@register" in b]
    if blocks:
        return path, blocks[0]
    raise AssertionError("no worked example of a distribution kind (a ```python block with @register) in the contributing guide")


def test_the_guides_worked_example_adds_a_kind_in_one_class(tmp_path, monkeypatch):
    path, code = _guide()
    text = path.read_text()
    monkeypatch.setattr(distributions, "REGISTRY", dict(distributions.REGISTRY))  # a throwaway copy
    exec(compile(code, str(path), "exec"), {"__name__": "guide_example"})
    assert "lograndint" in distributions.REGISTRY
    got = run_kind("lograndint", [8, 257], name="batch_size")
    assert got["line"] == "batch_size: lograndint [8, 257]" and f"`{got['line']}`" in text
    assert got["probes"] == [8]

    # A real space file: trial configurations validated, then sampled by Optuna and by Ray Tune.
    file = tmp_path / "space.yaml"
    file.write_text(yaml.safe_dump({**SPACE, "params": {"method": "ew", "batch_size": {"lograndint": [8, 257]}}}))
    space = spaces.load_space(str(file))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = []
    for _ in range(40):
        trial = study.ask()
        space.define_by_run()(trial)
        values.append(trial.params["batch_size"])
    assert trial.distributions["batch_size"] == optuna.distributions.IntDistribution(8, 256, log=True)
    assert "`IntDistribution(low=8, high=256, log=True)`" in text
    assert min(values) >= 8 and max(values) <= 256 and sum(v < 46 for v in values) >= 10  # log scale: half below sqrt(8 * 256)

    domain = spaces.override(space, searcher={"type": "random", "seed": 0}).tune_param_space()["batch_size"]
    assert type(domain).__name__ == "Integer" and type(domain.get_sampler()).__name__ == "_LogUniform"
    assert (domain.lower, domain.upper) == (8, 257) and "`lograndint(8, 257)`" in text

    # --set, and the errors the guide quotes.
    sets = ["params.batch_size.lograndint=[16,129]"]
    assert {p.name: (p.kind, p.args) for p in spaces.load_space(str(file), sets=sets).params}["batch_size"] == ("lograndint", [16, 129])
    assert f"`--set {sets[0]}`" in text
    for args, message in (
        ([0, 8], "FILE: params.batch_size: lograndint needs 1 <= low < high, got [0, 8]"),
        ([8], "lograndint needs a list of 2 numbers [low, high], got [8]"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_param("batch_size", {"lograndint": args}, "FILE")
        assert str(err.value).endswith(message) and f"`{message}`" in text
    with pytest.raises(ConfigError, match="'grid', 'lograndint', 'loguniform'"):
        parse_param("batch_size", {"normal": [0, 1]}, "FILE")

    # The perf scripts' grid and fixed value.
    dist = distributions.REGISTRY["lograndint"]([8, 257])
    assert dist.grid(4) == [8, 25, 81, 256] and "`[8, 25, 81, 256]`" in text
    assert dist.middle() == 45

    monkeypatch.undo()
    assert "lograndint" not in distributions.REGISTRY  # the registry itself never saw it
