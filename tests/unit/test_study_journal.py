"""The search's Optuna study as a journal file (mtlsearch.studies): where it is kept, what is refused, and that
the searcher's reports, states and attributes survive in the file and through Ray's save/restore of the
searcher (a resumed driver), as they do in a SQLite study."""

from __future__ import annotations

import optuna
import pytest
import yaml

from mtlsearch import optuna_search, spaces, studies, tracking
from mtlsearch.errors import ConfigError

SPACE = """
name: journal
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 4, max_epochs: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
params:
  method: gemtl
  p: {uniform: [0.0, 1.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


def test_the_default_study_is_a_journal_beside_the_store_or_in_the_storage_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(studies.STORAGE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert studies.storage_url(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ray") == str(tmp_path / "m-optuna.journal")
    assert studies.storage_url("http://127.0.0.1:5000", tmp_path / "ray") == str(tmp_path / "ray" / "optuna.journal")
    assert studies.storage_url("http://127.0.0.1:5000", None) is None  # a cloud --storage with a remote MLflow: in memory
    # --optuna-storage: a database URL as given, a journal path made absolute (the parent run's param is read elsewhere)
    assert studies.storage_url("http://x", None, "postgresql://u@h/db") == "postgresql://u@h/db"
    assert studies.storage_url("http://x", None, "shared/team.journal") == str(tmp_path / "shared" / "team.journal")
    assert studies.is_journal(str(tmp_path / "a.journal")) and not studies.is_journal("sqlite:///a.db")
    assert studies.file_of("sqlite:////x/a.db").as_posix() == "/x/a.db" and studies.file_of("postgresql://h/db") is None


def test_a_journal_path_is_checked_and_bad_ones_are_named(tmp_path):
    studies.check_url(str(tmp_path / "new.journal"), "--optuna-storage")  # made on first use
    (tmp_path / "dir.journal").mkdir()
    with pytest.raises(
        ConfigError, match=r"^--optuna-storage: the Optuna study journal .*dir.journal cannot be used \(it is a directory\)"
    ):
        studies.check_url(str(tmp_path / "dir.journal"), "--optuna-storage")
    db = tmp_path / "db.journal"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="x")
    with pytest.raises(ConfigError, match=rf"it is a SQLite database, not a journal \(name it sqlite:///{db}\)"):
        studies.check_url(str(db), "--optuna-storage")
    (tmp_path / "text.journal").write_text("hello\n")
    with pytest.raises(ConfigError, match=r"it is not an Optuna journal"):
        studies.check_url(str(tmp_path / "text.journal"), "--optuna-storage")
    with pytest.raises(ConfigError, match=r"^--optuna-storage: 'redis://h' is not a database URL; give one of sqlite://, .* journal file"):
        studies.check_url("redis://h", "--optuna-storage")
    # A path not named *.journal is a database URL without its scheme, not a journal named like a database.
    with pytest.raises(
        ConfigError, match=rf"is not a database URL; .* ending in .journal .*; for a SQLite file write sqlite:///{tmp_path}/o.db$"
    ):
        studies.check_url(str(tmp_path / "o.db"), "--optuna-storage")
    assert not (tmp_path / "o.db").exists()
    assert studies.study_names(str(tmp_path / "text.journal")) is None


def _searcher(url: str, space) -> optuna_search.ResumableOptunaSearch:
    return optuna_search.make_searcher(space, studies.open_storage(url, "j", fresh=True), "j")


def test_the_searcher_keeps_states_reports_and_attributes_in_a_journal_across_a_restore(tmp_path):
    """A trial completed, one stopped early (PRUNED at its rung), one errored (FAIL); then the searcher is
    pickled as Ray's experiment checkpoint saves it, restored as a resumed driver does, and goes on: the file
    holds every trial once, with its values and attributes, read by a storage opened afresh."""
    space = spaces.parse_space(yaml.safe_load(SPACE), "journal.yaml", SPACE)
    url = str(tmp_path / "mlflow-optuna.journal")
    searcher = _searcher(url, space)
    searcher.link_runs({t: f"run-{t}" for t in "abcd"})
    for trial_id in "abc":
        assert set(searcher.suggest(trial_id) or {}) >= {"p", "lr"}
    for epoch in (1, 2):
        searcher.on_trial_result("a", {"val/delta_m": -float(epoch), "training_iteration": epoch})
    searcher.on_trial_complete("a", {"val/delta_m": -2.0, "training_iteration": 2})
    searcher.on_trial_result("b", {"val/delta_m": -7.0, "training_iteration": 1})
    searcher.on_trial_complete("b", {"val/delta_m": -7.0, "training_iteration": 1})
    searcher.on_trial_complete("c", None, error=True)

    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))  # Ray's experiment checkpoint
    restored = _searcher(url.replace("mlflow-optuna", "other"), space)  # as runner builds it, then Ray restores
    restored.restore(str(path))
    restored.link_runs({t: f"run-{t}" for t in "abcd"})
    assert set(restored.suggest("d") or {}) >= {"p", "lr"}
    restored.on_trial_result("d", {"val/delta_m": -3.0, "training_iteration": 1})
    restored.on_trial_complete("d", {"val/delta_m": -1.0, "training_iteration": 2})

    study = optuna.load_study(study_name="j", storage=studies.open_storage(url))  # a fresh reader of the file
    by = {t.user_attrs[optuna_search.ATTR_TRIAL]: t for t in study.get_trials(deepcopy=False)}
    assert sorted(by) == list("abcd")
    State = optuna.trial.TrialState
    assert [by[t].state for t in "abcd"] == [State.COMPLETE, State.PRUNED, State.FAIL, State.COMPLETE]
    assert (by["a"].value, by["d"].value) == (-2.0, -1.0) and by["b"].intermediate_values == {1: -7.0}
    assert by["a"].intermediate_values == {1: -1.0, 2: -2.0} and by["d"].intermediate_values == {1: -3.0, 2: -1.0}
    assert (
        by["a"].user_attrs[optuna_search.ATTR_RUN] == "run-a" and by["a"].user_attrs[optuna_search.ATTR_STATUS] == tracking.STATUS_COMPLETED
    )
    assert by["c"].user_attrs[optuna_search.ATTR_STATUS] == tracking.STATUS_ERRORED
    assert studies.study_names(url) == ["j"]


def test_a_new_search_under_an_old_name_starts_an_empty_study_in_the_journal(tmp_path):
    """``fresh``: a study left under the search's name (its Ray folder gone) is deleted, as in a SQLite study,
    so its trials cannot warm-start the sampler; another search's study in the same file is kept."""
    url = str(tmp_path / "s.journal")
    for name in ("j", "other"):
        study = optuna.create_study(storage=studies.open_storage(url), study_name=name)
        study.enqueue_trial({"p": 0.5})
    storage = studies.open_storage(url, "j", fresh=True)
    assert [s.study_name for s in storage.get_all_studies()] == ["other"]
