"""Search-space YAML: loading and translation.  The errors a user meets (and the CLI's exit code 2)
are one table in tests/unit/test_bad_input.py."""

import textwrap

from mtlsearch import spaces

from helpers.bad_input import GOOD  # the small valid space the bad-input table mutates


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_bundled_space_loads_and_validates():
    names = spaces.available_spaces()
    assert "gemtl_p" in names
    for name in names:
        space = spaces.load_space(name)
        assert space.params and space.max_epochs >= 1


def test_gemtl_p_searches_p_and_lr():
    space = spaces.load_space("gemtl_p")
    kinds = {p.name: p.kind for p in space.params}
    assert kinds["p"] == "uniform" and kinds["lr"] == "loguniform" and kinds["method"] == "value"
    assert space.scheduler["type"] == "asha" and space.searcher["type"] == "optuna"


def test_define_by_run_samples_conditionals_only_when_active(tmp_path):
    import optuna

    path = write(
        tmp_path,
        GOOD.replace(
            "  method: gemtl\n  p: {uniform: [-1.0, 2.0]}",
            "  method: {choice: [ew, gemtl]}\n  p: {uniform: [-1.0, 2.0], when: {method: gemtl}}",
        ),
    )
    space = spaces.load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        space.define_by_run()(trial)
        seen.add(("p" in trial.params) == (trial.params["method"] == "gemtl"))
    assert seen == {True}


def test_random_searcher_grid_with_conditional_parameters(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    from mtlsearch.config import TrialConfig

    text = GOOD.replace("searcher: {type: optuna, sampler: tpe, seed: 0}", "searcher: {type: random, seed: 0}").replace(
        "  method: gemtl\n  p: {uniform: [-1.0, 2.0]}", "  method: {grid: [ew, gemtl]}\n  p: {uniform: [-1.0, 2.0], when: {method: gemtl}}"
    )
    space = spaces.load_space(write(tmp_path, text))
    configs = [spec["config"] for _ in range(3) for _, spec in generate_variants({"config": space.tune_param_space()})]
    assert sorted(c["method"] for c in configs) == ["ew"] * 3 + ["gemtl"] * 3
    for cfg in configs:
        assert (cfg["p"] is None) == (cfg["method"] == "ew")
        assert cfg["p"] is None or -1.0 <= cfg["p"] <= 2.0
        TrialConfig.from_dict(cfg)  # a parameter that does not apply is simply not set


def test_set_of_a_whole_distribution_keeps_the_parameters_condition():
    """``params.NAME={KIND: ARGS}`` (what ``mtlsearch.search(params__NAME=...)`` passes) replaces the distribution
    and keeps ``when``, as ``params.NAME.KIND=ARGS`` does; a mapping with its own ``when`` or a constant replaces all."""
    from mtlsearch.spaces import apply_sets

    data = {"params": {"method": {"choice": ["ew", "gemtl"]}, "p": {"uniform": [0, 1], "when": {"method": "gemtl"}}}}
    whole = apply_sets(data, ["params.p={loguniform: [0.1, 2.0]}"])["params"]["p"]
    assert whole == {"loguniform": [0.1, 2.0], "when": {"method": "gemtl"}}
    assert apply_sets(data, ["params.p.loguniform=[0.1, 2.0]"])["params"]["p"] == whole
    own = apply_sets(data, ["params.p={uniform: [0, 3], when: {method: ew}}"])["params"]["p"]
    assert own == {"uniform": [0, 3], "when": {"method": "ew"}}
    assert apply_sets(data, ["params.p=0.5"])["params"]["p"] == 0.5
    assert data["params"]["p"] == {"uniform": [0, 1], "when": {"method": "gemtl"}}  # the parsed file is not changed
