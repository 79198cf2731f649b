"""Resuming a search: the unfinished experiment that ``--resume`` continues (or a ``--name`` that is
taken), the pre-flight of a resume (the saved state readable, the space and options unchanged), the
command line that resumes an interrupted search, and the one reader of Ray Tune's saved experiment
state (:func:`saved_trials`)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from mtlsearch.errors import ConfigError, first_line

if TYPE_CHECKING:
    from mtlsearch.options import SearchOptions
    from mtlsearch.spaces import SearchSpace


# ------------------------------------------------------------------------------ Ray Tune's saved state
def experiment_state_file(folder: Path) -> Path | None:
    """The newest ``experiment_state-*.json`` Ray Tune saved in a search's folder, or None."""
    states = sorted(folder.glob("experiment_state-*.json"))
    return states[-1] if states else None


def saved_trials(state_file: Path) -> list[dict[str, Any]]:
    """The trials of an experiment state (``trial_id``, ``status``, ...); ValueError (or OSError) where the
    file cannot be read as one."""
    data = json.loads(state_file.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("trial_data"), list):
        raise ValueError("no trial_data list")
    return [json.loads(entry[0]) if isinstance(entry[0], str) else entry[0] for entry in data["trial_data"]]


def _experiment_unfinished(folder: Path) -> bool:
    """Whether Ray Tune's latest experiment state in ``folder`` has a trial that did not end."""
    state = experiment_state_file(folder)
    if state is None:
        return True
    try:
        statuses = [t.get("status") for t in saved_trials(state)]
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return True  # unreadable: let Ray decide
    return not statuses or any(s not in ("TERMINATED", "ERROR") for s in statuses)


def latest_unfinished(storage: Path, space_name: str) -> Path | None:
    """The newest unfinished ``SPACE-YYYYmmdd-HHMMSS`` search folder (not a confirmation phase's)."""
    import re

    from ray.tune import Tuner

    if not storage.is_dir():
        return None
    pattern = re.compile(re.escape(space_name) + r"-\d{8}-\d{6}(-\d+)?")  # -2: started in the same second as another
    candidates = sorted(
        (d for d in storage.iterdir() if d.is_dir() and pattern.fullmatch(d.name)), key=lambda d: d.stat().st_mtime, reverse=True
    )
    for d in candidates:
        if Tuner.can_restore(str(d)) and _experiment_unfinished(d):
            return d
    return None


def find_restore_path(args: SearchOptions, space: SearchSpace, storage_uri: str, local_storage: Path | None) -> str | None:
    """The experiment folder that ``--resume`` continues: ``--name``'s, else the latest unfinished search
    of this space under a local storage (a cloud storage needs ``--name``).  Without ``--resume``, a
    ``--name`` that is taken is refused: two searches in one folder would mix their trials."""
    from ray.tune import Tuner

    named = f"{storage_uri}/{args.name}" if args.name else None
    if not args.resume:
        if named and Tuner.can_restore(named):
            raise ConfigError(
                f"a search named {args.name!r} exists in {storage_uri}; add --resume to continue it or choose another --name",
                field="--name",
            )
        return None
    if named:
        if not Tuner.can_restore(named):
            raise ConfigError(f"no search to resume at {named!r}", field="--name")
        if local_storage is not None and not _experiment_unfinished(Path(named)):
            raise ConfigError(f"the search {args.name!r} in {storage_uri} has finished: nothing to resume", field="--resume")
        return named
    if local_storage is None:
        raise ConfigError(
            "resuming from a cloud storage needs --name, the search folder that the interrupted run printed (Ray results: URI/NAME)",
            field="--resume",
        )
    found = latest_unfinished(local_storage, space.name)
    if found is None:  # not a new full search: the user asked to continue one
        raise ConfigError(
            f"no unfinished search of {space.name!r} under {local_storage} to resume; run without "
            "--resume to start a new one (or give --storage/--name of the interrupted search)",
            field="--resume",
        )
    return str(found)


def resume_command(argv: Sequence[str], name: str) -> str:
    """The command line that resumes search ``name``: the same arguments plus ``--resume --name``."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--resume" or arg.startswith("--name="):
            continue
        if arg == "--name":
            skip = True
            continue
        rest.append(arg)
    return shlex.join(["python", "-m", "mtlsearch.launch", *rest, "--resume", "--name", name])


# ------------------------------------------------------------------------------ pre-flight of --resume
def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), data


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = dict(_flatten(old)), dict(_flatten(new))
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _read_info(folder: Path) -> dict[str, Any] | None:
    """The search info the launcher saved beside Ray's state (:func:`mtlsearch.tracking.search_info`)."""
    from mtlsearch.tracking import SEARCH_INFO_FILE

    try:
        info = json.loads((folder / SEARCH_INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def check_unchanged(options: SearchOptions, space: SearchSpace, check_study: Callable[[Path, dict[str, Any]], None] | None = None) -> None:
    """Ray Tune resumes with the search it saved: an edited space file or other overrides would be
    silently ignored, so refuse them and say what changed (and a saved state that cannot be read).
    ``check_study(folder, info)``: that the Optuna study the saved searcher refers to is still there."""
    storage_uri, storage = options.storage_location()
    if storage is None:
        return  # a cloud storage: the search info lives beside Ray's results only on a local disk
    folder = storage / options.name if options.name else latest_unfinished(storage, space.name)
    if folder is None:  # --resume is not a new full search: say so before anything starts
        raise ConfigError(
            f"no unfinished search of {space.name!r} under {storage} to resume; run without --resume to "
            "start a new one (or give the --storage and --name that the interrupted search printed)",
            field="--resume",
        )
    if folder.is_dir():
        info = _read_info(folder) if space.searcher["type"] == "optuna" else None
        if info is not None and check_study is not None:
            # Before check_saved_state: Ray's saved searcher refers to its study's storage.
            check_study(folder, info)
        check_saved_state(folder)
    saved = _read_info(folder)
    if saved is not None:
        _check_same_search(options, space, folder, saved)


def _check_same_search(options: SearchOptions, space: SearchSpace, folder: Path, saved: dict[str, Any]) -> None:
    import yaml

    from mtlsearch.tracking import STUDY_PARAMS, search_info

    try:
        old_space = yaml.safe_load(saved.get("space_text") or "") or {}
    except yaml.YAMLError:
        return
    new_space = yaml.safe_load(space.text) or {}
    diff = changes(old_space, new_space) if saved.get("space_text") is not None else []
    saved_params = {k: v for k, v in saved.get("params", {}).items() if k not in STUDY_PARAMS}  # where, not what
    diff += [
        d
        for d in changes(saved_params, json.loads(json.dumps(search_info(space, options.overrides())["params"], default=str)))
        if d.split(":", 1)[0] not in {c.split(":", 1)[0] for c in diff} and not _same_as_space_change(d, diff)
    ]
    if diff:
        raise ConfigError(
            f"the search {folder.name!r} was started with another space or other options, and a resumed search keeps "
            f"what it started with; changed: {'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}. Undo the change "
            f"to resume, or start a new search (without --resume)",
            field="--resume",
        )


def _pickle_intact(path: Path) -> None:
    """A pickle's opcodes read to its end without running any of them (nothing a file holds is executed:
    ``pickle.load`` would run whatever a crafted file names); ValueError where it is cut short or garbled."""
    import pickletools

    for opcode, _, _ in pickletools.genops(path.read_bytes()):
        if opcode.name == "STOP":
            return
    raise ValueError("no STOP opcode")


def check_saved_state(folder: Path) -> None:
    """Ray Tune's saved search state (the newest ``experiment_state-*.json`` and the pickles it restores
    with) must be readable: a truncated or corrupted file would fail inside ``Tuner.restore``."""
    state = experiment_state_file(folder)
    files = [*([state] if state is not None else []), *sorted(folder.glob("searcher-state-*.pkl"))[-1:]]
    if (folder / "tuner.pkl").exists():
        files.append(folder / "tuner.pkl")
    for path in files:
        try:
            if path.suffix == ".json":
                saved_trials(path)
            else:
                _pickle_intact(path)
        except Exception as err:  # whatever the file holds, it cannot be restored
            raise ConfigError(
                f"the saved state of search {folder.name!r} is unreadable ({path.name}: {first_line(err, typed=False, limit=200)}); "
                f"the trials' results and checkpoints under {folder} are untouched. Start a new search (without --resume) "
                "or restore the file",
                field="--resume",
            ) from None


def _same_as_space_change(entry: str, space_diff: list[str]) -> bool:
    """``num_samples`` etc. appear both in the space file and in the search's params: say it once."""
    key = entry.split(":", 1)[0]
    return any(c.split(":", 1)[0].endswith("." + key) or c.split(":", 1)[0] == key for c in space_diff) or (
        key.startswith(("scheduler.", "searcher.", "resources.")) and any(c.startswith(key.split(".")[0]) for c in space_diff)
    )
