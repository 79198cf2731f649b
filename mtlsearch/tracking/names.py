"""MLflow's names for a search: tags, statuses, metric roots, the params of a search's parent run
(:func:`search_info`, also written beside Ray's results) and of a trial's run (:func:`trial_params`), and
how a param is written and read back (:func:`param_value`, :func:`parse_param`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace

TAG_SEARCH = "mtlsearch.search_id"
TAG_TRIAL = "mtlsearch.trial_id"
TAG_STATUS = "mtlsearch.status"
TAG_KIND = "mtlsearch.kind"  # "search" or "trial"
TAG_EPOCHS = "mtlsearch.epochs"
TAG_TIME = "mtlsearch.time_total_s"
TAG_CHECKPOINT = "checkpoint"
#: ``NAME@VERSION`` of the published protocol a search and its trials follow (mtlsearch.protocols).
TAG_PROTOCOL = "mtlsearch.protocol"
TAG_PHASE = "mtlsearch.phase"  # "final" on the confirmation phase's trial runs (mtlsearch.confirm)
TAG_ERROR = "error"
TAG_SEARCHER = "mtlsearch.searcher"  # the sampler and its settings (mtlsearch.optuna_search.describe_settings)
TAG_BUDGET_WARNING = "mtlsearch.budget_warning"  # a method with less budget than the others (mtlsearch.fairness)
PARENT_TAG = "mlflow.parentRunId"
METRIC_ROOTS = ("train", "val", "test", "weights", "dominance", "std", "sem")
#: A trial of several seeds (``budget.seeds``) also reports each seed's values as ``seed<s>/<metric>``.
_SEED_ROOT = re.compile(r"seed\d+")

STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped early by ASHA"
STATUS_ERRORED = "errored"
#: A trial run of a resumed search whose trial Ray had not saved (:meth:`Tracker.drop_lost_trials`).
STATUS_LOST = "lost"

#: The search's description written beside Ray's results (read back by ``report sync``).
SEARCH_INFO_FILE = "mtlsearch.json"
#: Params of the parent run (and mtlsearch.json) saying where the search's Optuna study is (mtlsearch.studies).
STUDY_PARAMS = ("optuna_storage", "optuna_study")


def is_metric(key: str, value: Any) -> bool:
    """Whether a reported key is one of ours (``<root>/...`` with a finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    root = key.split("/", 1)[0]
    ours = root in METRIC_ROOTS or _SEED_ROOT.fullmatch(root) is not None or key.endswith("/solver_failures")
    return "/" in key and ours and math.isfinite(value)


def select_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if is_metric(k, v)}


def trial_status(epochs: int, max_epochs: int, *, errored: bool = False) -> str:
    """``errored``, ``completed`` (reached ``max_epochs``) or ``stopped early by ASHA``."""
    if errored:
        return STATUS_ERRORED
    return STATUS_COMPLETED if epochs >= max_epochs else STATUS_STOPPED


def param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def parse_param(text: str) -> Any:
    """A param as logged (``param_value``) back to a Python value: bools, None, numbers, JSON lists."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def search_info(space: SearchSpace, overrides: Mapping[str, Any], study: tuple[str, str] | None = None) -> dict[str, Any]:
    """What a search is, in plain JSON: the parent run's params and the space file; also written to
    :data:`SEARCH_INFO_FILE` in the Ray results folder so that ``report sync`` can recreate the run."""
    params: dict[str, Any] = {
        "space": space.name,
        "benchmark": space.benchmark,
        "num_samples": space.num_samples,
        "max_epochs": space.max_epochs,
        "scheduler": space.scheduler,
        "searcher": space.searcher,
        "resources": space.resources,
    }
    if getattr(space, "multi_objective", False):
        objectives = space.objectives()
        params["objective_metrics"] = [m for m, _ in objectives]
        params["objective_modes"] = [m for _, m in objectives]
        params["scalar_metric"], params["scalar_mode"] = space.metric, space.mode
    else:
        objectives = [(space.metric, space.mode)]
        params["objective_metric"], params["objective_mode"] = space.metric, space.mode
    params.update({f"override.{k}": v for k, v in overrides.items() if v is not None})
    if study is not None:  # where the Optuna study is kept (mtlsearch.studies): storage URL and study name
        params.update(zip(STUDY_PARAMS, study))
    if getattr(space, "protocol", None):
        params["protocol"] = space.protocol
    return {
        "params": params,
        "space_file": Path(str(space.path)).name,
        "space_text": space.text,
        "metric": space.metric,
        "mode": space.mode,
        "objectives": [list(o) for o in objectives],
        "max_epochs": space.max_epochs,
        "resources": dict(space.resources),
        "benchmark": space.benchmark,
    }


def write_search_info(folder: Path, info: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (SEARCH_INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    tmp.replace(folder / SEARCH_INFO_FILE)


def read_search_info(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / SEARCH_INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _short(value: Any) -> str:
    """2 significant digits, exponents without padding: 0.54, 5.9e-3, 12."""
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            mantissa, exp = f"{value:.1e}".split("e")
            return f"{mantissa}e{int(exp)}"
        return f"{value:.2g}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)}]"
    text = str(value)
    return text.rsplit(":", 1)[-1] if ":" in text and "/" in text else text  # a user's path/file.py:Class


def trial_run_name(trial_id: str, config: Mapping[str, Any], searched: Sequence[str] = ()) -> str:
    """A trial run's name that reads in a list: ``gemtl p=0.54 lr=5.9e-3 (1a2b3c4d)``: the method, the
    searched parameters that apply to it, the trial id (Ray's, as the console prints it)."""
    parts = [str(config.get("method", ""))]
    parts += [f"{k}={_short(config[k])}" for k in searched if k != "method" and config.get(k) is not None]
    return f"{' '.join(p for p in parts if p)} ({trial_id})"


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's full validated config (defaults included: ``optimizer``, ``seed``, ...), so every
    run shows the same params whether or not the space searched them; the raw config if invalid."""
    try:
        from mtlsearch.config import TrialConfig

        full = TrialConfig.from_dict(dict(config)).to_dict()
    except Exception:  # an errored trial's config may be invalid: log what it was given
        full = dict(config)
    return {k: v for k, v in full.items() if v is not None}
