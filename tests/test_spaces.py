"""Search-space YAML: loading, the errors a user meets, and the CLI's exit code 2."""
import subprocess
import sys
import textwrap

import pytest

from mtlsearch import spaces
from mtlsearch.errors import ConfigError
from mtlsearch.launch import main

GOOD = """
name: tiny
benchmark: multidigits
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
params:
  method: gemtl
  p: {uniform: [-1.0, 2.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


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

    path = write(tmp_path, GOOD.replace("  method: gemtl\n  p: {uniform: [-1.0, 2.0]}",
                                        "  method: {choice: [ew, gemtl]}\n  p: {uniform: [-1.0, 2.0], when: {method: gemtl}}"))
    space = spaces.load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        space.define_by_run()(trial)
        seen.add(("p" in trial.params) == (trial.params["method"] == "gemtl"))
    assert seen == {True}


CASES = [
    ("unknown top-level key", GOOD + "extra: 1\n", "extra", "allowed"),
    ("unknown section key", GOOD.replace("num_samples: 2", "num_sample: 2"), "budget.num_sample", "allowed"),
    ("unknown distribution", GOOD.replace("uniform: [-1.0, 2.0]", "gaussian: [0, 1]"), "params.p", "unknown distribution"),
    ("loguniform non-positive", GOOD.replace("[1.0e-3, 1.0e-2]", "[0.0, 1.0e-2]"), "params.lr", "0 < low"),
    ("low >= high", GOOD.replace("[-1.0, 2.0]", "[2.0, -1.0]"), "params.p", "low < high"),
    ("wrong type", GOOD.replace("num_samples: 2", "num_samples: many"), "budget.num_samples", "integer"),
    ("bad mode", GOOD.replace("mode: max", "mode: best"), "objective.mode", "'min' or 'max'"),
    ("unknown method", GOOD.replace("method: gemtl", "method: gemtll"), "method", "choose one of"),
    ("key not of the method", GOOD + "  dwa_temperatur: 2.0\n", "dwa_temperatur", "allowed keys"),
    ("p is NaN", GOOD.replace("p: {uniform: [-1.0, 2.0]}", "p: .nan"), "params.p", "finite"),
    ("grid with optuna", GOOD.replace("uniform: [-1.0, 2.0]", "grid: [0.5, 1.0]"), "params.p", "searcher type 'random'"),
    ("unknown scheduler", GOOD.replace("type: asha", "type: pbt"), "scheduler.type", "'asha', 'fifo'"),
]


@pytest.mark.parametrize("label, text, field, words", CASES, ids=[c[0] for c in CASES])
def test_bad_spaces_name_file_field_and_choices(tmp_path, label, text, field, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        spaces.load_space(path)
    assert err.value.field == field, str(err.value)
    assert words in str(err.value) and path in str(err.value)


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "name: x\nparams:\n  p: {uniform: [1, 2]\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+") as err:
        spaces.load_space(path)
    assert path in str(err.value)


def test_unknown_space_lists_available():
    with pytest.raises(ConfigError, match="available: .*gemtl_p"):
        spaces.load_space("no_such_space")


def test_cli_exits_2_with_one_clear_line(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("mode: max", "mode: best"))
    assert main(["--space", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "objective.mode" in err[0]
    assert main(["--space", "no_such_space"]) == 2
    assert main(["--space", "gemtl_p", "--num-samples", "0"]) == 2
    assert main(["--space", "gemtl_p", "--benchmark", "nyu"]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_cli_as_a_process_exits_2_before_starting_ray(tmp_path):
    path = write(tmp_path, GOOD.replace("loguniform: [1.0e-3, 1.0e-2]", "loguniform: [-1, 1]"))
    proc = subprocess.run([sys.executable, "-m", "mtlsearch.launch", "--space", path], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "params.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def test_random_searcher_grid_with_conditional_parameters(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    from mtlsearch.config import TrialConfig

    text = GOOD.replace("searcher: {type: optuna, sampler: tpe, seed: 0}", "searcher: {type: random, seed: 0}").replace(
        "  method: gemtl\n  p: {uniform: [-1.0, 2.0]}",
        "  method: {grid: [ew, gemtl]}\n  p: {uniform: [-1.0, 2.0], when: {method: gemtl}}")
    space = spaces.load_space(write(tmp_path, text))
    configs = [spec["config"] for _ in range(3) for _, spec in generate_variants({"config": space.tune_param_space()})]
    assert sorted(c["method"] for c in configs) == ["ew"] * 3 + ["gemtl"] * 3
    for cfg in configs:
        assert (cfg["p"] is None) == (cfg["method"] == "ew")
        assert cfg["p"] is None or -1.0 <= cfg["p"] <= 2.0
        TrialConfig.from_dict(cfg)  # a parameter that does not apply is simply not set
