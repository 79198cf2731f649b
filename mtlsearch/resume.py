"""Resuming a search: the unfinished experiment that ``--resume`` continues (or a ``--name`` that is
taken), and the command line that resumes an interrupted search."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mtlsearch.errors import ConfigError

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace


def _experiment_unfinished(folder: Path) -> bool:
    """Whether Ray Tune's latest experiment state in ``folder`` has a trial that did not end."""
    states = sorted(folder.glob("experiment_state-*.json"))
    if not states:
        return True
    try:
        data = json.loads(states[-1].read_text())
        statuses = [json.loads(t[0]).get("status") for t in data.get("trial_data", [])]
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


def find_restore_path(args: argparse.Namespace, space: SearchSpace, storage_uri: str, local_storage: Path | None) -> str | None:
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
