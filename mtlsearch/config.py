"""The one validated configuration of a trial.

A trial config is a flat mapping (what Ray Tune hands a trainable): the common keys below plus the
hyperparameters of the chosen balancing method (e.g. ``p`` for ``gemtl``).  Validation happens
before any training: unknown keys, wrong types and undefined method x optimizer combinations raise
:class:`~mtlsearch.errors.ConfigError` naming the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from mtlsearch.balancing import Balancing, GradBalancing, get_method
from mtlsearch.benchmarks import BENCHMARKS, benchmark_class
from mtlsearch.errors import ConfigError, choices
from mtlsearch.optim import check_optimizer, is_adatask

#: The most seeds one trial trains (``seeds``; a space's ``budget.seeds``): beyond this, run the
#: configurations again (the ``final`` stage) rather than hold more models in one trial.
MAX_SEEDS = 16


#: How prose (the report's captions) names the trial's own numeric settings; others go by their key.
SETTING_NAMES = {
    "lr": "the learning rate",
    "weight_decay": "the weight decay",
    "lr_gamma": "the learning rate's decay factor",
    "balancing_lr": "the learning rate of the method's own parameters",
    "batch_size": "the batch size",
}

#: ``compile``: off, the encoder compiled, the encoder compiled and replayed as CUDA graphs.
COMPILE_CHOICES = ("off", "encoder", "encoder_graphs")


def compile_refusal(cfg: "TrialConfig", device_type: str | None = None) -> str | None:
    """Why ``cfg.compile`` cannot apply to this trial's step (one line), or None.

    Only the encoder is compiled (the balancing method's step stays eager, so solver-based methods such
    as nash_mtl or mgda keep their solvers); its backward must then be taken once per step, with one
    cotangent.  Steps that need each task's gradient of the shared parameters (an AdaTask optimizer,
    a gradient-level method in param mode, task dominance) take a vmapped backward through the encoder
    (``is_grads_batched``), which a compiled graph does not support.  CUDA graphs need a CUDA device
    (``device_type``: the resolved device, where known)."""
    if cfg.compile == "off":
        return None
    needs = []
    if is_adatask(cfg.optimizer):
        needs.append(f"optimizer {cfg.optimizer!r}")
    if cfg.effective_grad_mode == "param":
        needs.append(f"method {cfg.method!r} in grad_mode 'param'")
    if cfg.dominance_interval:
        needs.append("dominance_interval > 0")
    if needs:
        return (
            f"{cfg.compile!r} cannot apply: {' and '.join(needs)} needs each task's gradient of the shared parameters, "
            "a vmapped backward that a compiled encoder does not support; set compile: off"
        )
    device = device_type or cfg.device
    if cfg.compile == "encoder_graphs" and device == "cpu":
        return "'encoder_graphs' captures CUDA graphs and the device is the CPU; use compile: encoder or off"
    return None


@dataclass(frozen=True)
class TrialConfig:
    benchmark: str = "multidigits"
    method: str = "ew"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: Step learning-rate schedule: multiply lr by ``lr_gamma`` every ``lr_step_size`` epochs (0 = constant).
    lr_step_size: int = 0
    lr_gamma: float = 0.5
    batch_size: int = 64
    max_epochs: int = 10
    seed: int = 0
    #: Seeds trained together in this trial: ``seed``, ``seed + 1``, ..., ``seed + seeds - 1``
    #: (:mod:`mtlsearch.multiseed`); the trial reports their mean, spread and each seed's values.
    seeds: int = 1
    data_seed: int = 0
    #: Train on a subset of the benchmark's tasks (single-task references use one).
    tasks: tuple[str, ...] | None = None
    #: Folder of a user-supplied dataset (real benchmarks only).
    data_root: str | None = None
    #: "rep" (gradients w.r.t. the shared representation) or "param"; gradient-level methods only.
    grad_mode: str | None = None
    #: Learning rate of the balancing method's own learnable parameters (UW's log-variances, IMTL-L's
    #: scales, LDC-MTL's router): > 0 gives them their own Adam (no weight decay) at this lr, scheduled
    #: like the model's, as the released Nash-MTL/FAMO trainers do (0.025); 0 (the default) trains them
    #: with the model's optimizer, lr and weight decay.
    balancing_lr: float = 0.0
    #: "auto" (CUDA when visible), "cpu" or "cuda".
    device: str = "auto"
    #: Mixed precision: "auto" (bf16 autocast on CUDA, off on CPU), "bf16" or "off".
    amp: str = "auto"
    #: On CUDA: channels_last, cuDNN autotuning, fused Adam and disk splits held on the GPU.  False
    #: (with ``amp: off``) gives the plain fp32 step of the reference implementations, for comparison.
    gpu_speedups: bool = True
    #: Step option for a launch-bound step (off until measured): "encoder" compiles the encoder's
    #: forward and backward (``torch.compile``), "encoder_graphs" also replays them as CUDA graphs (mode
    #: "reduce-overhead"; CUDA only).  Refused where the step needs each task's gradient of the shared
    #: parameters (see :func:`compile_refusal`).
    compile: str = "off"
    #: Log task dominance (``dominance/<layer>/<task>``, rAU) every N epochs; 0 = off.
    dominance_interval: int = 0
    #: Decay of the dominance average AU (the AdaTask paper's constant is not public).
    dominance_beta: float = 0.9
    #: The published protocol the trial follows, ``NAME@VERSION`` (see :mod:`mtlsearch.protocols`):
    #: adds the protocol's score (e.g. ``test/delta_m_nashmtl``); the settings themselves are ordinary keys.
    protocol: str | None = None
    #: Epochs averaged by the protocol's score (0: the protocol's own, e.g. 10 for nashmtl).
    last_k: int = 0
    #: Method hyperparameters (validated against the method's declaration).
    method_params: Mapping[str, Any] = field(default_factory=dict)
    #: The benchmark's options (e.g. ``val_fraction``, ``backbone``), every one with its value
    #: (defaults filled in, so a checkpoint records them); flat keys in the dict form.
    benchmark_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str | None = None) -> "TrialConfig":
        """Validate a flat config; method hyperparameters and benchmark options sit beside the common keys."""
        common = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("method_params", "benchmark_options")}
        method_name = raw.get("method", cls.method)
        if not isinstance(method_name, str):
            raise ConfigError(f"expected a method name, got {method_name!r}", source=source, field="method")
        try:
            method_cls = get_method(method_name)
        except ConfigError as err:
            raise err.with_source(source) from None
        bench_name = raw.get("benchmark", cls.benchmark)
        try:
            bench_cls = benchmark_class(bench_name) if isinstance(bench_name, str) and ":" in bench_name else BENCHMARKS.get(bench_name)
        except ConfigError as err:  # a user's benchmark that cannot be imported
            raise err.with_source(source) from None
        # unknown built-in name: reported by _validate
        bench_options = bench_cls.options if bench_cls is not None else {}
        values: dict[str, Any] = {}
        method_params: dict[str, Any] = dict(raw.get("method_params", {}) or {})
        benchmark_options: dict[str, Any] = dict(raw.get("benchmark_options", {}) or {})
        for key, value in raw.items():
            if key in ("method_params", "benchmark_options") or value is None:
                # None = not set (e.g. a conditional parameter that does not apply to this trial)
                continue
            if key in common:
                values[key] = value
            elif key in method_cls.hyperparams and bench_cls is not None and key in bench_cls.options:
                raise ConfigError(
                    f"{key!r} is both a hyperparameter of method {method_name!r} and an option of benchmark "
                    f"{bench_cls.name!r}; set it as method_params: {{{key}: ...}} or benchmark_options: {{{key}: ...}}",
                    source=source,
                    field=key,
                )
            elif key in method_cls.hyperparams:
                method_params[key] = value
            elif key in bench_options:
                benchmark_options[key] = value
            else:
                allowed = sorted([*common, *method_cls.hyperparams, *bench_options])
                raise ConfigError(
                    f"unknown key {key!r} for method {method_name!r} and benchmark {raw.get('benchmark', cls.benchmark)!r}; "
                    f"allowed keys: {', '.join(allowed)}",
                    source=source,
                    field=key,
                )
        if isinstance(values.get("tasks"), (list, tuple)):
            values["tasks"] = tuple(values["tasks"])
        try:
            for key, spec in method_cls.hyperparams.items():
                method_params[key] = spec.validate(key, method_params.get(key, spec.default))
            if bench_cls is not None:
                benchmark_options = bench_cls.check_options(benchmark_options)
            cfg = cls(**values, method_params=method_params, benchmark_options=benchmark_options)
            cfg.__dict__["method_class"] = method_cls  # looked up once (the cached property's slot)
            cfg._validate()
        except ConfigError as err:
            raise err.with_source(source) from None
        return cfg

    @functools.cached_property
    def method_class(self) -> type[Balancing]:
        """The balancing method's class, looked up once per config (``from_dict`` hands it over)."""
        return get_method(self.method)

    def __getstate__(self) -> dict[str, Any]:
        # The class is looked up again after unpickling: a user's method loaded from a file need not
        # be importable by name where the config is unpickled.
        return {k: v for k, v in self.__dict__.items() if k != "method_class"}

    def _validate(self) -> None:
        benchmark_class(self.benchmark)  # unknown: one error with the choices
        check_optimizer(self.optimizer)
        self._validate_rates()
        if self.protocol is not None:
            from mtlsearch.protocols import get_protocol

            get_protocol(self.protocol).benchmark_settings(self.benchmark)
        if isinstance(self.last_k, bool) or not isinstance(self.last_k, int) or self.last_k < 0:
            raise ConfigError(f"expected an integer >= 0 (0: the protocol's own), got {self.last_k!r}", field="last_k")
        self._validate_counts()
        self._validate_switches()
        self._validate_method()

    def _validate_rates(self) -> None:
        """lr, weight_decay, lr_gamma, balancing_lr: finite numbers in their ranges."""
        for name in ("lr", "weight_decay", "lr_gamma", "balancing_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"expected a finite number, got {value!r}", field=name)
        if self.lr <= 0:
            raise ConfigError(f"must be > 0, got {self.lr!r}", field="lr")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.lr_gamma!r}", field="lr_gamma")
        if self.balancing_lr < 0:
            raise ConfigError(f"must be >= 0 (0: the model's optimizer and lr), got {self.balancing_lr!r}", field="balancing_lr")
        if self.weight_decay < 0:
            raise ConfigError(f"must be >= 0, got {self.weight_decay!r}", field="weight_decay")

    def _validate_counts(self) -> None:
        """The integer settings (epochs, seeds, sizes, intervals) and the dominance average's decay."""
        for name in ("batch_size", "max_epochs", "seed", "seeds", "data_seed", "dominance_interval", "lr_step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"expected an integer, got {value!r}", field=name)
        if self.lr_step_size < 0:
            raise ConfigError(f"must be >= 0 (0 = constant lr), got {self.lr_step_size!r}", field="lr_step_size")
        if self.batch_size < 1 or self.max_epochs < 1:
            raise ConfigError("batch_size and max_epochs must be >= 1", field="batch_size" if self.batch_size < 1 else "max_epochs")
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise ConfigError(f"expected an integer from 1 to {MAX_SEEDS} (seeds per trial), got {self.seeds!r}", field="seeds")
        if self.dominance_interval < 0:
            raise ConfigError(f"must be >= 0 (0 = off), got {self.dominance_interval!r}", field="dominance_interval")
        beta = self.dominance_beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
            raise ConfigError(f"expected a number in [0, 1), got {beta!r}", field="dominance_beta")

    def _validate_switches(self) -> None:
        """gpu_speedups, amp, compile, device: one of their choices."""
        if not isinstance(self.gpu_speedups, bool):
            raise ConfigError(f"expected true or false, got {self.gpu_speedups!r}", field="gpu_speedups")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"unknown amp {self.amp!r}; choose one of 'auto', 'bf16', 'off'", field="amp")
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"unknown compile {self.compile!r}; choose one of {choices(COMPILE_CHOICES)}", field="compile")
        refusal = compile_refusal(self)
        if refusal:
            raise ConfigError(refusal, field="compile")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose one of 'auto', 'cpu', 'cuda'", field="device")

    def _validate_method(self) -> None:
        """grad_mode, and the optimizer and dominance settings a method's kind of update allows."""
        method_cls = self.method_class
        if not issubclass(method_cls, GradBalancing):
            if self.grad_mode is not None:
                raise ConfigError(f"grad_mode applies to gradient-level methods only; {self.method!r} is loss-level", field="grad_mode")
            return
        mode = self.grad_mode or method_cls.default_mode
        if mode not in method_cls.modes:
            raise ConfigError(f"method {self.method!r} supports grad_mode {choices(method_cls.modes)}, not {mode!r}", field="grad_mode")
        if is_adatask(self.optimizer) and not method_cls.linear:
            raise ConfigError(
                f"method {self.method!r} returns an update direction that is not a weighting of the "
                f"per-task gradients, so it cannot feed {self.optimizer!r}, which needs each task's share "
                "of the gradient; use a base optimizer (adam, rmsprop, adagrad, sgd)",
                field="optimizer",
            )
        if self.dominance_interval and not method_cls.linear:
            raise ConfigError(
                f"method {self.method!r} returns an update direction that is not a weighting of the "
                "per-task gradients, so no task's share of the update is defined; set dominance_interval: 0",
                field="dominance_interval",
            )

    @property
    def effective_grad_mode(self) -> str | None:
        method_cls = self.method_class
        if issubclass(method_cls, GradBalancing):
            return self.grad_mode or method_cls.default_mode
        return None

    def to_dict(self) -> dict[str, Any]:
        """The flat form (inverse of :meth:`from_dict`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("method_params", "benchmark_options")}
        out.update(self.method_params)
        out.update(self.benchmark_options)
        if out["tasks"] is not None:
            out["tasks"] = list(out["tasks"])
        return out
