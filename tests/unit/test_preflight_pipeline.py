"""The driver's one pre-flight pipeline and its options object (no Ray is started here).

* The command line and :func:`mtlsearch.search` build the same :class:`~mtlsearch.options.SearchOptions`
  for the same request (the API parses no argv).
* One rule for the CPUs per trial: ``--cpus-per-trial`` 0 and below are refused alike.
* The representative trial configurations are built once for every check of the pipeline.
* ``--resume``'s check of Ray's saved pickles reads them without running them.
"""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from mtlsearch import api, launch, preflight, resume, spaces, store_checks
from mtlsearch.errors import ConfigError
from mtlsearch.options import SearchOptions, storage_location

GOOD = """
name: tiny
benchmark: multidigits
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
params:
  method: {choice: [ew, gemtl]}
  p: {uniform: [-1.0, 2.0], when: {method: gemtl}}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


@pytest.fixture
def space_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(GOOD))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


def test_the_api_and_the_command_line_build_the_same_options(space_path: Path) -> None:
    kwargs = {
        "num_samples": 3,
        "max_epochs": "2",
        "cpus_per_trial": 1,
        "storage": space_path.parent / "ray",
        "quiet": True,
        "params__lr": {"loguniform": [1e-4, 1e-2]},
    }
    from_api = api.search_options(str(space_path), "multidigits", "ew", **kwargs)
    argv = api.search_argv(str(space_path), "multidigits", "ew", **kwargs)
    from_cli = SearchOptions.from_namespace(launch.build_parser().parse_args(argv), argv)
    assert from_api == from_cli
    assert (from_api.num_samples, from_api.max_epochs, from_api.cpus_per_trial, from_api.quiet) == (3, 2, 1.0, True)
    assert from_api.sets == ("params.method=ew", "params.lr={loguniform: [0.0001, 0.01]}")


@pytest.mark.parametrize("value", [2.5, "many", True])
def test_an_api_flag_of_the_wrong_type_names_the_keyword(space_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match=r"^search\(\.\.\., num_samples=\.\.\.\): expected an integer"):
        api.search_options(str(space_path), num_samples=value)


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_cpus_per_trial_has_one_rule(space_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    argv = ["--space", str(space_path), "--cpus-per-trial", value, "--tracking-uri", f"sqlite:///{space_path.parent / 'm.db'}"]
    assert launch.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --cpus-per-trial: must be > 0: a trial's training loop needs a CPU"), line
    assert sorted(p.name for p in space_path.parent.iterdir()) == ["space.yaml"]


def test_the_probe_configurations_are_built_once(space_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    probe_configs = spaces.SearchSpace.probe_configs

    def counted(self: spaces.SearchSpace) -> list[dict]:
        out = probe_configs(self)
        built.append(len(out))
        return out

    monkeypatch.setattr(spaces.SearchSpace, "probe_configs", counted)
    options = SearchOptions(space=str(space_path), storage=str(space_path.parent / "ray"), dry_run=True)
    space = preflight.run(options)
    assert built == [2], built  # ew and gemtl: two configurations, built by one check for all
    assert [c.method for c in preflight.Preflight(options, space).configs()] == ["ew", "gemtl"]
    assert sorted(p.name for p in space_path.parent.iterdir()) == ["space.yaml"]  # the pre-flight wrote nothing


def test_every_check_of_the_pipeline_takes_the_preflight() -> None:
    names = [c.__name__ for c in (*preflight.SPACE_CHECKS, *preflight.RUN_CHECKS)]
    assert len(names) == len(set(names))
    assert names.index("check_data_folder") < names.index("check_plugins") < names.index("check_trial_configs")
    assert names.index("check_tracking") < names.index("check_resume") < names.index("check_study")


class _Touch:
    """Test data: a pickle that creates a file when it is loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def test_resume_reads_ray_s_pickles_without_running_them(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [["{\\"trial_id\\": \\"a\\"}", "{}"]]}')
    marker = tmp_path / "ran"
    data = pickle.dumps(_Touch(marker))
    (folder / "tuner.pkl").write_bytes(data)
    resume.check_saved_state(folder)  # a whole pickle passes ...
    assert not marker.exists()  # ... and nothing in it ran
    assert resume.saved_trials(folder / "experiment_state-2026-01-01_00-00-00.json") == [{"trial_id": "a"}]

    (folder / "tuner.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"--resume: the saved state of search 's' is unreadable \(tuner\.pkl: "):
        resume.check_saved_state(folder)
    assert not marker.exists()


def test_one_storage_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage_location(None) == (str(tmp_path / "ray_results"), tmp_path / "ray_results")
    assert storage_location(f"file://{tmp_path}/r") == (str(tmp_path / "r"), tmp_path / "r")
    assert storage_location("s3://bucket/dir/") == ("s3://bucket/dir", None)
    assert store_checks._local_storage("s3://bucket/dir") is None
