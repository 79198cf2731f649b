"""Published protocols as named, versioned settings, and their own scores.

A protocol is the setting under which a published table was made (model, image size, epochs, lr
schedule, batch size, augmentation, evaluation, scoring; see ``shared/PROTOCOLS.md`` of the project).
It enters a search as ``protocol: nashmtl`` in a space file or ``--protocol nashmtl`` on the command
line: its settings for the space's benchmark become constant parameters beneath the space's own (a
parameter the space sets wins, so every value is overridable), ``budget.max_epochs`` defaults to the
protocol's epochs, and every trial carries ``protocol: nashmtl@1``, which MLflow records.

* ``nashmtl`` (Navon et al., ICML 2022; Liu et al., NeurIPS 2023 (FAMO); code: AvivNavon/nash-mtl and
  Cranial-XIX/FAMO ``experiments/{nyuv2,cityscapes}``): SegNet-MTAN, Adam lr 1e-4 halved at epoch
  100, 200 epochs, batch 2 (NYUv2, 288x384) or 8 (Cityscapes, 128x256, FAMO's released default), the
  released random scale-crop and flip, fp32, the whole training folder (no validation split, as
  released), depth and normal metrics averaged over test batches of the training batch size.
  Score ``test/delta_m_nashmtl``: Δm% over **all** metrics, lower is better, against CAGrad's
  single-task numbers, of the mean of the last ``last_k`` (10) epochs' test metrics (at epoch e, the
  mean over epochs e-k+1..e, so the final epoch's value is the protocol's number).  CelebA: FAMO's
  9-layer CNN, Adam 3e-4, 15 epochs, batch 256, 64x64; its score (per-attribute F1 against
  single-task F1s) is not computed: those references are not stored and ``celeba`` reports accuracy.
* ``libmtl`` (Lin & Zhang, JMLR 2023; median-research-group/LibMTL ``examples/nyu``): dilated
  ResNet-50 + DeepLab-v3 ASPP heads (ImageNet weights from a local file via ``pretrained``), batch 8,
  200 epochs, Adam lr 1e-4, weight decay 1e-5, StepLR(100, 0.5), no augmentation, 288x384.  Score
  ``test/delta_p_libmtl``: Δp, the per-task mean of per-metric relative improvements, higher is
  better, of the last epoch's test metrics (LibMTL picks the epoch on the test split; we never select
  on test), against the single-task references of the data folder (``python -m mtlsearch.references
  --benchmark nyuv2 --data-root DIR``); without them there is no Δp (a reference is never made up).

Deviations that remain, on purpose: normals count as valid where any component is non-zero (the
released code tests their sum); mIoU skips classes absent from the whole split (the released code
would give NaN); LibMTL drops every incomplete last training batch, we only a single-example one,
which the released Nash-MTL code keeps (NYUv2's 795 images in batches of 2: 397 steps, not 398).

Per-method settings (``Protocol.methods``, printed by ``python -m mtlsearch.reproduce --protocol
nashmtl@1 --method M --dry-run``): each method runs as its published number was produced, each setting
naming its released file and line beside it below: ``grad_mode: param`` for every gradient method (the
released trainers pass the shared parameters to every method; under SegNet-MTAN's per-task attention
the representation's gradients are block-diagonal, which would make MGDA w ~ 1/||g||^2, IMTL-G
w ~ 1/||g||, GradDrop the plain sum), ``balancing_lr: 0.025`` (the method's own parameters in their own
Adam, scheduled with the model's), FAMO's same-batch re-evaluation and its per-benchmark gamma,
FairGrad's alpha 2 with the update clipped at norm 1, Nash-MTL's windowed DWA (25 steps, temperature 2),
CAGrad c 0.4, Nash-MTL solved every step and clipped at 1.  Smaller deviations that remain (each well
under a point): Nash-MTL's heads get their own losses' gradients where the released code gives them
alpha_t times those; GradDrop's released update (FAMO's code) is clipped at norm 1, ours is not; the
normal mask and the last-batch rule below.  FAMO's second forward pass updates BatchNorm statistics
twice per step, as in the released code.

Selection is unchanged: our ``val/delta_m`` (on a validation split carved from the training folder,
``val_fraction``) is what a search optimises.  A search space with a protocol and a validation
objective gets ``val_fraction: 0.1`` unless it sets its own.

This module is core: it imports neither Ray nor MLflow.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mtlsearch.errors import ConfigError, choices

if TYPE_CHECKING:
    from importlib.abc import Traversable

Metrics = Mapping[str, Mapping[str, float]]  # {task: {metric: value}}


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    description: str
    #: MLflow/Tune name of the protocol's score and its direction.
    score: str
    higher_is_better: bool
    #: The score is computed on the mean of the last ``last_k`` epochs' test metrics.
    last_k: int
    #: ``"all_metrics"`` (Nash-MTL: one mean over every metric) or ``"per_task"`` (LibMTL: metrics
    #: averaged within a task, then tasks averaged).
    average: str
    #: benchmark -> trial settings (TrialConfig keys and benchmark options) and ``epochs``.
    benchmarks: Mapping[str, Mapping[str, Any]]
    #: method -> settings of that method in the released runs (applied when that method runs): trial
    #: keys (``grad_mode``) and hyperparameters; a value may be a :class:`PerBenchmark`.
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: ``"published"``: the single-task numbers stored with the published results; ``"data_root"``:
    #: the user's own references in the data folder.
    reference: str = "published"
    source: str = ""
    #: method (or a benchmark setting's key, e.g. ``balancing_lr``) -> where the released code sets it.
    sources: Mapping[str, str] = field(default_factory=dict)
    #: benchmark -> the pretrained weights its published runs start from (the benchmark option
    #: ``pretrained`` must name a local file; without it the backbone starts from random weights).
    pretrained: Mapping[str, str] = field(default_factory=dict)

    def missing_pretrained(self, benchmark: str, options: Mapping[str, Any]) -> str | None:
        """A warning when the published runs start from pretrained weights and ``options`` give none."""
        need = self.pretrained.get(benchmark)
        if need is None or options.get("pretrained"):
            return None
        return (
            f"{self.tag} on {benchmark} starts from {need}, and none was given (--set pretrained=FILE): the backbone "
            "trains from random initialisation, tens of points off the published numbers"
        )

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def covers(self, benchmark: str) -> bool:
        return benchmark in self.benchmarks

    def epochs(self, benchmark: str) -> int:
        return int(self.benchmark_settings(benchmark)["epochs"])

    def benchmark_settings(self, benchmark: str) -> dict[str, Any]:
        if benchmark not in self.benchmarks:
            raise ConfigError(
                f"protocol {self.name!r} does not cover benchmark {benchmark!r}; it covers {choices(self.benchmarks)}",
                field="protocol",
            )
        return dict(self.benchmarks[benchmark])

    def settings(self, benchmark: str) -> dict[str, Any]:
        """The trial settings for ``benchmark`` (without ``epochs``, which is the budget)."""
        out = self.benchmark_settings(benchmark)
        out.pop("epochs")
        return out

    def image_size(self, benchmark: str) -> str | None:
        return self.benchmark_settings(benchmark).get("image_size")

    def method_settings(self, method: str, benchmark: str) -> dict[str, Any]:
        """The released run's settings of ``method`` on ``benchmark`` (per-benchmark values resolved;
        a setting without a value for this benchmark is left out)."""
        out = {}
        for key, value in self.methods.get(method, {}).items():
            if isinstance(value, PerBenchmark):
                if benchmark not in value.values:
                    continue
                value = value.values[benchmark]
            out[key] = value
        return out

    def effective_settings(self, method: str, benchmark: str) -> dict[str, Any]:
        """Every setting the protocol fixes for ``method`` on ``benchmark``: the benchmark's, then the method's."""
        return {**self.settings(benchmark), **self.method_settings(method, benchmark)}


@dataclass(frozen=True)
class PerBenchmark:
    """A method setting whose released value depends on the benchmark (e.g. FAMO's gamma)."""

    values: Mapping[str, Any]


_COMMON_NASHMTL = {
    "model": "segnet_mtan",
    "augment": True,
    "eval_average": "batch",
    "val_fraction": 0.0,
    "optimizer": "adam",
    "lr": 1e-4,
    "weight_decay": 0.0,
    "lr_step_size": 100,
    "lr_gamma": 0.5,
    "amp": "off",
    # The balancing method's parameters (UW's log-variances, ...) in their own Adam group at 0.025:
    # nash-mtl experiments/nyuv2/trainer.py lines 87-92 (param groups), experiments/utils.py lines 43-48
    # (--method-params-lr default 0.025); FAMO experiments/nyuv2/trainer.py lines 89-92 and
    # experiments/cityscapes/trainer.py lines 82-85, same default.  StepLR halves it with the model's.
    "balancing_lr": 0.025,
    "epochs": 200,
}

#: The released runs' per-method settings (nash-mtl cce1840, FAMO 0a6ad06, OptMN-Lab/fairgrad 2b8cba1).
#: Gradient methods combine the shared parameters' gradients in every released trainer (nash-mtl
#: experiments/nyuv2/trainer.py lines 127-133 pass ``shared_parameters`` to every method), hence
#: ``grad_mode: param`` throughout; under SegNet-MTAN (one attention branch per task) the
#: representation's per-task gradients are block-diagonal, which turns MGDA into w ~ 1/||g||^2,
#: IMTL-G into w ~ 1/||g|| and GradDrop into the plain sum: other algorithms, not variants.
_NASHMTL_METHODS: dict[str, dict[str, Any]] = {
    # nash-mtl methods/weight_methods.py line 328: MGDA(params="shared", normalization="none").
    "mgda": {"grad_mode": "param", "mgda_normalization": "none"},
    # nash-mtl methods/weight_methods.py lines 686-692: torch.autograd.grad(loss, shared_parameters).
    "imtl_g": {"grad_mode": "param"},
    # FAMO methods/weight_methods.py lines 785-800 (GradDrop, shared parameters only; the nash-mtl code
    # has no GradDrop); its clip_grad_norm_ after the backward (lines 856-857) is not reproduced.
    "graddrop": {"grad_mode": "param"},
    # nash-mtl methods/weight_methods.py lines 473-485 (PCGrad on the shared parameters' gradients).
    "pcgrad": {"grad_mode": "param"},
    # nash-mtl experiments/utils.py line 69 (--c 0.4); methods/weight_methods.py lines 559-574 (shared).
    "cagrad": {"grad_mode": "param", "cagrad_c": 0.4},
    # nash-mtl experiments/utils.py lines 52-60 (update every step, 20 solver iterations);
    # methods/weight_methods.py lines 104 and 269-270 (clip_grad_norm_ of the shared parameters at 1).
    "nash_mtl": {"grad_mode": "param", "nash_update_every": 1, "nash_max_norm": 1.0},
    # OptMN-Lab/fairgrad experiments/{nyuv2,cityscapes,celeba}/run.sh line 5 (alpha=2.0);
    # experiments/utils.py line 75 (--max_norm 1.0), methods/weight_methods.py lines 869-871 (clipped).
    "fairgrad": {"grad_mode": "param", "fairgrad_alpha": 2.0, "fairgrad_max_norm": 1.0},
    # Shared-parameter methods in their authors' code and LibMTL (not read line by line here).
    "aligned_mtl": {"grad_mode": "param"},
    "moco": {"grad_mode": "param"},
    "sdmgrad": {"grad_mode": "param"},
    # FAMO experiments/nyuv2/trainer.py lines 145-155 (and cityscapes/trainer.py lines 136-145): the
    # same batch re-evaluated after the step; experiments/{nyuv2,celeba}/run.sh line 6 gamma=0.001,
    # experiments/cityscapes/run.sh line 6 gamma=0.01; methods/weight_methods.py line 114 (w_lr 0.025).
    "famo": {
        "famo_same_batch": True,
        "famo_lr": 0.025,
        "famo_gamma": PerBenchmark({"nyuv2": 0.001, "cityscapes": 0.01, "celeba": 0.001}),
    },
    # nash-mtl methods/weight_methods.py lines 744-790 (iteration_window=25, temp=2.0) and
    # experiments/utils.py lines 72-77 (--dwa-temp 2.0): Nash-MTL's windowed DWA.
    "dwa": {"dwa_temperature": 2.0, "dwa_window": 25},
}

#: Where each of the settings above is set in the released code (printed by ``reproduce --dry-run``).
_NASHMTL_SOURCES = {
    "balancing_lr": "nash-mtl experiments/nyuv2/trainer.py L87-92, experiments/utils.py L43-48; FAMO experiments/nyuv2/trainer.py L89-92",
    "mgda": "nash-mtl methods/weight_methods.py L328 (params='shared', normalization='none')",
    "imtl_g": "nash-mtl methods/weight_methods.py L686-692 (gradients of shared_parameters)",
    "graddrop": "FAMO methods/weight_methods.py L785-800 (shared parameters only); its clip at L856-857 not reproduced",
    "pcgrad": "nash-mtl methods/weight_methods.py L473-485 (shared parameters)",
    "cagrad": "nash-mtl experiments/utils.py L69 (c=0.4), methods/weight_methods.py L559-574 (shared parameters)",
    "nash_mtl": "nash-mtl experiments/utils.py L52-60, methods/weight_methods.py L104 and L269-270 (clip at 1)",
    "fairgrad": "OptMN-Lab/fairgrad experiments/*/run.sh L5 (alpha=2.0), experiments/utils.py L75 and "
    "methods/weight_methods.py L869-871 (clip at 1)",
    "aligned_mtl": "shared parameters (authors' code and LibMTL; not read line by line)",
    "moco": "shared parameters (LibMTL weighting/MoCo.py; not read line by line)",
    "sdmgrad": "shared parameters (OptMN-Lab/sdmgrad and LibMTL; not read line by line)",
    "famo": "FAMO experiments/nyuv2/trainer.py L145-155 (same batch after the step), experiments/nyuv2/run.sh L6 "
    "(gamma 0.001), experiments/cityscapes/run.sh L6 (gamma 0.01), methods/weight_methods.py L114 (w_lr 0.025)",
    "dwa": "nash-mtl methods/weight_methods.py L744-790 (iteration_window=25, temp=2.0), experiments/utils.py L72-77",
}

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="nashmtl",
            version=1,
            description="Nash-MTL / FAMO protocol: SegNet-MTAN, 200 epochs, Adam 1e-4 halved at 100, released "
            "augmentation, mean of the last 10 epochs' test metrics, Δm% over all metrics (lower is better)",
            score="test/delta_m_nashmtl",
            higher_is_better=False,
            last_k=10,
            average="all_metrics",
            benchmarks={
                "nyuv2": {**_COMMON_NASHMTL, "image_size": "288x384", "batch_size": 2, "eval_batch_size": 2},
                "cityscapes": {**_COMMON_NASHMTL, "image_size": "128x256", "batch_size": 8, "eval_batch_size": 8},
                # FAMO's experiments/celeba: the model and schedule only.  Its score is Δm of per-attribute
                # F1 against single-task F1s that are not stored here (and celeba reports accuracy), so
                # no test/delta_m_nashmtl is computed for it.
                "celeba": {
                    "model": "famo_cnn",
                    "image_size": 64,
                    "optimizer": "adam",
                    "lr": 3e-4,
                    "weight_decay": 0.0,
                    "lr_step_size": 0,
                    "batch_size": 256,
                    "eval_batch_size": 256,
                    "amp": "off",
                    "epochs": 15,
                },
            },
            methods=_NASHMTL_METHODS,
            sources=_NASHMTL_SOURCES,
            reference="published",
            source="github.com/AvivNavon/nash-mtl experiments/nyuv2 (trainer.py, data.py, models.py, utils.py); "
            "github.com/Cranial-XIX/FAMO experiments/cityscapes",
        ),
        Protocol(
            name="libmtl",
            version=1,
            description="LibMTL protocol: dilated ResNet-50 + ASPP, batch 8, 200 epochs, Adam 1e-4, wd 1e-5, "
            "StepLR(100, 0.5), no augmentation; Δp per task (higher is better)",
            score="test/delta_p_libmtl",
            higher_is_better=True,
            last_k=1,
            average="per_task",
            benchmarks={
                "nyuv2": {
                    "model": "resnet_aspp",
                    "backbone": "resnet50",
                    "augment": False,
                    "eval_average": "split",
                    "val_fraction": 0.0,
                    "image_size": "288x384",
                    "optimizer": "adam",
                    "lr": 1e-4,
                    "weight_decay": 1e-5,
                    "lr_step_size": 100,
                    "lr_gamma": 0.5,
                    "batch_size": 8,
                    "eval_batch_size": 8,
                    "amp": "off",
                    "epochs": 200,
                },
            },
            reference="data_root",
            source="github.com/median-research-group/LibMTL examples/nyu/main.py and LibMTL/config.py",
            # LibMTL examples/nyu/main.py: encoder resnet_dilated('resnet50'), whose pretrained argument defaults
            # to True (ImageNet weights; LibMTL/model/resnet_dilated.py).
            pretrained={"nyuv2": "ImageNet ResNet-50 weights (a local torchvision resnet50 state_dict)"},
        ),
    )
}


def parse_tag(text: str) -> tuple[str, int | None]:
    name, _, version = str(text).partition("@")
    if version and not version.isdigit():
        raise ConfigError(f"a protocol is NAME or NAME@VERSION, got {text!r}", field="protocol")
    return name, int(version) if version else None


def get_protocol(text: str) -> Protocol:
    """``nashmtl`` or ``nashmtl@1``; an unknown name or version is a ConfigError."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"expected a protocol name, one of {choices(PROTOCOLS)}, got {text!r}", field="protocol")
    name, version = parse_tag(text)
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {choices(PROTOCOLS)}", field="protocol")
    protocol = PROTOCOLS[name]
    if version is not None and version != protocol.version:
        raise ConfigError(f"protocol {name!r} has version {protocol.version}, not {version}", field="protocol")
    return protocol


# ------------------------------------------------------------------------------ published numbers
def published_file(protocol: str) -> Traversable:
    return resources.files("mtlsearch.references").joinpath("published").joinpath(f"{protocol}.json")


def load_published(protocol: str) -> dict[str, Any] | None:
    path = published_file(protocol)
    return json.loads(path.read_text()) if path.is_file() else None


def published_result(protocol: str, benchmark: str, method: str) -> dict[str, Any] | None:
    """The published row ``{method, benchmark, value, protocol, source, table, source_kind, metrics?,
    metrics_table?, metrics_missing?}`` or None.  ``metrics`` are the values as the table prints them
    (strings in the table's units); :func:`published_metric_values` gives them in mtlsearch's units."""
    data = load_published(protocol)
    for row in (data or {}).get("results", []):
        if row["benchmark"] == benchmark and row["method"] == method:
            return row
    return None


#: Every published table read prints Δm% with two decimals: the printed value is within this of the exact one.
DELTA_M_HALF_UNIT = 0.005


def published_metric_values(protocol: str, row: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """A published row's per-metric values in mtlsearch's units (the file's ``paper_units`` factors:
    the tables print mIoU, pixel accuracy and the within-t° shares in percent); None when it has none."""
    printed = row.get("metrics")
    if not printed:
        return None
    units = (load_published(protocol) or {}).get("paper_units", {}).get(row["benchmark"], {})
    return {t: {m: float(text) * units.get(t, {}).get(m, 1) for m, text in values.items()} for t, values in printed.items()}


def half_unit(printed: str) -> float:
    """Half a unit of the last printed digit: ``"0.2250"`` -> 5e-5, ``"38.30"`` -> 0.005."""
    return 0.5 * 10.0 ** -len(str(printed).partition(".")[2])


def printed_delta_m(
    metrics: Mapping[str, Mapping[str, str]], reference: Mapping[str, Mapping[str, str]], lower_is_better: Mapping[str, Mapping[str, bool]]
) -> tuple[float, float, float]:
    """Nash-MTL's Δm% (all metrics, lower is better) of printed per-metric values against printed
    single-task values: ``(value, low, high)``, where ``[low, high]`` holds every Δm% the exact values
    could give, each printed value being within half a unit of its last digit of the exact one.  A
    published Δm% outside ``[low - DELTA_M_HALF_UNIT, high + DELTA_M_HALF_UNIT]`` cannot come from
    these per-metric values: a transcription error (here or in the source)."""
    value = low = high = 0.0
    count = 0
    for t, values in metrics.items():
        for m, text in values.items():
            sign = 1.0 if lower_is_better[t][m] else -1.0
            v, b = float(text), float(reference[t][m])
            hv, hb = half_unit(text), half_unit(reference[t][m])
            # sign * (x / y - 1) is monotone in x and in y (> 0): its extremes lie on the corners.
            corners = [sign * (x - y) / y for x in (v - hv, v + hv) for y in (b - hb, b + hb)]
            value += sign * (v - b) / b
            low += min(corners)
            high += max(corners)
            count += 1
    return 100.0 * value / count, 100.0 * low / count, 100.0 * high / count


def published_delta_m_check(
    protocol: str, row: Mapping[str, Any], lower_is_better: Mapping[str, Mapping[str, bool]]
) -> tuple[float, float, float, bool] | None:
    """For a row with per-metric values: the Δm% they give against the file's printed single-task
    row, its rounding range and whether the published Δm% lies in it; None without per-metric values."""
    reference = (load_published(protocol) or {}).get("single_task", {}).get(row["benchmark"], {}).get("printed")
    if not row.get("metrics") or not reference:
        return None
    value, low, high = printed_delta_m(row["metrics"], reference, lower_is_better)
    published = float(row["value"])
    return value, low, high, low - DELTA_M_HALF_UNIT <= published <= high + DELTA_M_HALF_UNIT


def reference_for(protocol: Protocol, benchmark: str, tasks: Sequence[str], data_root: str | None = None) -> Metrics | None:
    """The single-task numbers the protocol's score is computed against, or None if there are none."""
    if protocol.reference == "published":
        data = load_published(protocol.name) or {}
        ref = data.get("single_task", {}).get(benchmark, {}).get("metrics")
    else:
        from mtlsearch.references import USER_FILE
        from pathlib import Path

        ref = None
        if data_root and (Path(data_root) / USER_FILE).is_file():
            user = json.loads((Path(data_root) / USER_FILE).read_text())
            if user.get("benchmark") == benchmark:
                ref = user.get("splits", {}).get("test")
    if ref is None or not all(t in ref for t in tasks):
        return None
    return {t: ref[t] for t in tasks}


# ------------------------------------------------------------------------------ scores
def mean_metrics(history: Sequence[Metrics]) -> dict[str, dict[str, float]]:
    """The per-metric mean over epochs (the last-k averaging of the Nash-MTL tables)."""
    tasks = history[0]
    return {t: {m: sum(h[t][m] for h in history) / len(history) for m in tasks[t]} for t in tasks}


def delta_m_all_metrics(metrics: Metrics, reference: Metrics, lower_is_better: Mapping[str, Mapping[str, bool]]) -> float:
    """Nash-MTL's Δm%: ``100/K Σ_k (-1)^{higher_is_better_k} (M_k - B_k) / B_k`` over all K metrics;
    lower is better."""
    terms = [
        (1.0 if lower_is_better[t][m] else -1.0) * (v - reference[t][m]) / reference[t][m]
        for t, values in metrics.items()
        for m, v in values.items()
    ]
    return 100.0 * sum(terms) / len(terms)


def delta_p_per_task(metrics: Metrics, reference: Metrics, lower_is_better: Mapping[str, Mapping[str, bool]]) -> float:
    """LibMTL's Δp: ``100/T Σ_t 1/|M_t| Σ_m (-1)^{lower_is_better_m} (M - B) / B``; higher is better."""
    from mtlsearch.metrics import delta_m

    return delta_m(metrics, reference, lower_is_better)


def score(protocol: Protocol, metrics: Metrics, reference: Metrics, lower_is_better: Mapping[str, Mapping[str, bool]]) -> float:
    fn = delta_m_all_metrics if protocol.average == "all_metrics" else delta_p_per_task
    return fn(metrics, reference, lower_is_better)


class ProtocolScorer:
    """Keeps the last ``k`` epochs' test metrics and gives the protocol's score of their mean.

    The trainer calls :meth:`update` once per epoch; the history is part of the trainer's state, so a
    restored trial scores as an uninterrupted one."""

    def __init__(
        self, protocol: Protocol, reference: Metrics, lower_is_better: Mapping[str, Mapping[str, bool]], last_k: int | None = None
    ):
        self.protocol = protocol
        self.reference = reference
        self.lower_is_better = lower_is_better
        self.history: deque = deque(maxlen=last_k or protocol.last_k)

    def update(self, test_metrics: Metrics) -> dict[str, float]:
        self.history.append({t: dict(v) for t, v in test_metrics.items()})
        return {self.protocol.score: score(self.protocol, mean_metrics(list(self.history)), self.reference, self.lower_is_better)}

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history.clear()
        self.history.extend(state.get("history", []))


def make_scorer(
    tag: str,
    benchmark: str,
    tasks: Sequence[str],
    lower_is_better: Mapping[str, Mapping[str, bool]],
    data_root: str | None,
    last_k: int | None = None,
) -> ProtocolScorer | None:
    """The scorer of a trial whose config names ``protocol``; None when the protocol has no reference
    for these tasks (then the score is not reported, never computed against a made-up reference)."""
    protocol = get_protocol(tag)
    reference = reference_for(protocol, benchmark, tasks, data_root)
    if reference is None:
        return None
    return ProtocolScorer(protocol, reference, lower_is_better, last_k)
