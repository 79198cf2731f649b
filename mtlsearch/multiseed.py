"""Several seeds of one configuration in one trial: plain PyTorch, no Ray, no MLflow.

>>> from mtlsearch.multiseed import build_trainer
>>> trainer = build_trainer({"benchmark": "multidigits", "method": "gemtl", "p": 0.5, "max_epochs": 3, "seeds": 3})
>>> for result in trainer.run():
...     print(result["epoch"], result["val/delta_m"], result["sem/val/delta_m"], result["seed1/val/delta_m"])

A config with ``seeds: k`` (a space's ``budget.seeds``) trains the seeds ``seed, seed + 1, ...,
seed + k - 1`` of its configuration side by side, epoch by epoch, and reports each epoch (the names
the ranking code reads, :func:`combine`):

* every metric under its usual name: the **mean** over the k seeds (so ASHA and the searcher act on
  the mean);
* ``seed<s>/<metric>``: seed ``s``'s own value of every ``val/...`` and ``test/...`` metric;
* ``std/<metric>`` and ``sem/<metric>``: the seeds' sample standard deviation (ddof = 1) and standard
  error (std / sqrt(k)) of every ``val/...`` and ``test/...`` metric.

:class:`MultiSeedTrainer` has the iterator API of :class:`~mtlsearch.trainer.Trainer` (``run``,
``train_epoch``, ``epoch_result``, ``state_dict``/``load_state_dict``, ``save``/``load``); its state
holds every seed's full state, so a resumed trial continues each seed exactly.  It holds one
:class:`~mtlsearch.trainer.Trainer` per seed, all reading the same data splits (built once), and
trains them in one of two ways:

* **loop**: each seed's trainer trains its epoch in turn.  Each seed keeps its own torch random
  stream (swapped in around its work), so every seed's results are exactly those of a ``Trainer``
  built with that seed alone.  Any method, optimizer and model.
* **batched**: the k models as one: each parameter stacked along a new first dimension (the seeds'
  models keep views of it), a linear layer one batched matrix product over the k seeds' own batches,
  one optimizer step over the stacked parameters (the base optimizers are elementwise, so this is
  each seed's own step).  Each seed still gets its own shuffling, balancing-method object and random
  stream; its metrics equal the loop's up to floating-point rounding.  For loss-level methods without
  learnable parameters, a base optimizer, no task-dominance tracking, and an encoder-and-heads model
  made of ``Linear``, ``Flatten`` and elementwise activations (the built-in ``synthetic`` and
  ``multidigits``); :func:`loop_reason` says why another config trains in the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import warnings
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from mtlsearch.balancing import LossBalancing
from mtlsearch.benchmarks import HPSModel
from mtlsearch.config import TrialConfig
from mtlsearch.errors import ConfigError
from mtlsearch.optim import build_optimizer
from mtlsearch.trainer import NonFiniteLossError, Trainer

#: Metrics reported per seed and with their spread (``seed<s>/``, ``std/``, ``sem/``).
PER_SEED_SPLITS = ("val", "test")
#: Activations applied elementwise: a stacked tensor goes through them as it is.
ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
)


def seed_key(seed: int, metric: str) -> str:
    """``seed<s>/<metric>``: seed ``s``'s own value of a ``val/...`` or ``test/...`` metric."""
    return f"seed{seed}/{metric}"


def combine(results: Sequence[Mapping[str, float]], seeds: Sequence[int]) -> dict[str, float]:
    """One epoch's results of the seeds ``seeds`` (one dict each) as one: the mean of every metric that
    all seeds report, under its name; for every ``val/...`` and ``test/...`` metric, each seed's value
    (``seed<s>/...``) and, with two seeds or more, the sample standard deviation (``std/...``, ddof = 1)
    and the standard error of the mean (``sem/...``, std / sqrt(k))."""
    if len(results) != len(seeds) or not results:
        raise ValueError(f"expected one result per seed ({len(seeds)}), got {len(results)}")
    k = len(results)
    keys = list(dict.fromkeys(key for result in results for key in result))
    out: dict[str, float] = {}
    spread: dict[str, float] = {}
    for key in keys:
        values = [float(r[key]) for r in results if key in r]
        if len(values) == k:
            out[key] = math.fsum(values) / k
        if key.split("/", 1)[0] not in PER_SEED_SPLITS:
            continue
        for seed, result in zip(seeds, results):
            if key in result:
                out[seed_key(seed, key)] = float(result[key])
        if len(values) == k and k > 1:
            std = statistics.stdev(values) if all(math.isfinite(v) for v in values) else math.nan
            spread[f"std/{key}"] = std
            spread[f"sem/{key}"] = std / math.sqrt(k)
    out.update(spread)
    return out


# ------------------------------------------------------------------------------ random streams
class _Streams:
    """One torch random stream per seed: the global generators' states, swapped in around a seed's work,
    so that seeds trained in one process draw what each would draw alone (and nothing leaks between them)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.states: list[tuple[Tensor, list[Tensor] | None]] = []

    def capture(self) -> tuple[Tensor, list[Tensor] | None]:
        return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.cuda else None)

    def add(self) -> None:
        """The current global state becomes the next seed's stream."""
        self.states.append(self.capture())

    @contextlib.contextmanager
    def use(self, i: int) -> Iterator[None]:
        cpu, cuda = self.states[i]
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        try:
            yield
        finally:
            self.states[i] = self.capture()


@contextlib.contextmanager
def _naming_seed(seed: int) -> Iterator[None]:
    """A seed whose loss became NaN/inf ends the trial (as a lone trial's would), naming the seed."""
    try:
        yield
    except NonFiniteLossError as err:
        raise NonFiniteLossError(f"seed {seed}: {err}") from None


# ------------------------------------------------------------------------------ batched seeds
def _module_reason(module: nn.Module, where: str) -> str | None:
    """Why ``module`` cannot run stacked over seeds (None: it can)."""
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            reason = _module_reason(child, f"{where}.{name}")
            if reason:
                return reason
        return None
    if isinstance(module, (nn.Linear, nn.Flatten, *ELEMENTWISE)):
        return None
    return f"{where} is a {type(module).__name__} (batched seeds take Linear, Flatten and elementwise activations)"


def loop_reason(trainers: Sequence[Trainer]) -> str | None:
    """Why these seeds' trainers train one after another rather than batched (None: they can be batched)."""
    if len(trainers) < 2:
        return "one seed"
    t = trainers[0]
    cfg = t.config
    if not isinstance(t.balancing, LossBalancing):
        return f"method {cfg.method!r} is gradient-level"
    if any(p.requires_grad for p in t.balancing.parameters()):
        return f"method {cfg.method!r} learns parameters of its own"
    if t.adatask:
        return f"optimizer {cfg.optimizer!r} needs per-task gradients"
    if t.dominance is not None:
        return "task dominance is tracked (dominance_interval > 0)"
    model = t.model
    if not isinstance(model, HPSModel) or getattr(model, "outputs_per_task", False):
        return "the model is not an encoder with one head per task"
    if t.benchmark.multi_input:
        return f"benchmark {cfg.benchmark!r} gives each task its own input"
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. BatchNorm statistics)"
    if any(not p.requires_grad or p.dim() == 0 for p in model.parameters()):
        return "the model has frozen or scalar parameters"
    reason = _module_reason(model.encoder, "encoder")
    for name in t.task_names:
        reason = reason or _module_reason(model.heads[name], f"heads.{name}")
    return reason


def _stacked_apply(module: nn.Module, prefix: str, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """``module`` applied to each seed's input ``x[i]`` with that seed's parameters ``params[name][i]``."""
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            x = _stacked_apply(child, f"{prefix}{name}.", params, x)
        return x
    if isinstance(module, nn.Linear):
        weight, bias = params[f"{prefix}weight"], params.get(f"{prefix}bias")  # weight: [k, in, out]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        y = torch.bmm(flat, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, weight)
        return y.reshape(*x.shape[:-1], y.shape[-1])
    if isinstance(module, nn.Flatten):  # the seed dimension comes first: shift the flattened dims by one
        start, end = module.start_dim, module.end_dim
        return x.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    return module(x)  # elementwise


class _StackedSeeds:
    """The seeds' models as one (see the module docstring: batched); the seeds' own trainers keep
    everything else (data, balancing objects, schedules, evaluation, checkpoints)."""

    def __init__(self, trainers: Sequence[Trainer]):
        self.trainers = list(trainers)
        t0 = self.trainers[0]
        cfg = t0.config
        # A linear layer's weight is held as [k, in, out], each seed's [out, in] weight a transposed view
        # of it: the batched product then reads contiguous matrices (its backward ~1.5x faster on a CPU).
        transposed = {f"{path}.weight" for path, m in t0.model.named_modules() if isinstance(m, nn.Linear)}
        #: name -> [k, *shape] (a linear weight: [k, in, out]): every seed's parameter; their models hold views.
        self.params: dict[str, nn.Parameter] = {}
        #: (stacked, each seed's own parameter, whether the seed's is the transpose of its slice)
        self.pairs: list[tuple[nn.Parameter, list[nn.Parameter], bool]] = []
        for name, _ in t0.model.named_parameters():
            own = [t.model.get_parameter(name) for t in self.trainers]
            flip = name in transposed
            stacked = nn.Parameter(torch.stack([p.detach().t() if flip else p.detach() for p in own]))
            for i, p in enumerate(own):
                p.data = stacked.data[i].t() if flip else stacked.data[i]
            self.params[name] = stacked
            self.pairs.append((stacked, own, flip))
        name_of = {id(p): name for name, p in t0.model.named_parameters()}
        self.optimizer = build_optimizer(
            cfg.optimizer,
            [self.params[name_of[id(p)]] for p in t0.shared],
            [self.params[name_of[id(p)]] for p in t0.model.task_parameters()],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            num_tasks=len(t0.task_names),
            fused=cfg.gpu_speedups,
        )
        if t0.device.type == "cpu" and isinstance(self.optimizer, (torch.optim.Adam, torch.optim.Adagrad, torch.optim.SGD)):
            # torch's fused CPU kernel: one pass per stacked tensor (the per-tensor loop is ~3x slower here).
            for group in self.optimizer.param_groups:
                group["foreach"], group["fused"] = False, True
        self.sync_from_trainers()

    def step(self, x: Tensor, targets: Mapping[str, Tensor], streams: _Streams) -> tuple[Tensor, Tensor]:
        """One step of every seed on its own batch (``x[i]``, ``targets[t][i]``): ``[k, T]`` losses and weights."""
        t0 = self.trainers[0]
        model = t0.model
        assert isinstance(model, HPSModel)
        self.optimizer.zero_grad(set_to_none=True)
        with t0._autocast():
            z = _stacked_apply(model.encoder, "encoder.", self.params, x)
            preds = {name: _stacked_apply(model.heads[name], f"heads.{name}.", self.params, z) for name in t0.task_names}
            losses = torch.stack(
                [
                    torch.stack([spec.loss(preds[spec.name][i], targets[spec.name][i]) for spec in t0.tasks])
                    for i in range(len(self.trainers))
                ]
            ).float()
        totals = []
        for i, t in enumerate(self.trainers):
            with streams.use(i):  # a method that draws (e.g. rlw) draws from the seed's own stream
                totals.append(t.balancing(losses[i]))
        total = torch.stack(totals).sum()  # the seeds share no parameter: each gets its own total's gradient
        (weights,) = torch.autograd.grad(total, losses, retain_graph=True)
        total.backward()
        self.optimizer.step()
        return losses.detach(), weights.detach()

    def train_epoch(self, streams: _Streams) -> list[dict[str, float]]:
        t0 = self.trainers[0]
        for group, own in zip(self.optimizer.param_groups, t0.optimizer.param_groups):
            group["lr"] = own["lr"]  # the seeds' schedules (identical) set their own optimizers' lr
        for t in self.trainers:
            t.model.train()
        k, num_tasks = len(self.trainers), len(t0.task_names)
        loss_sum = torch.zeros(k, num_tasks, device=t0.device, dtype=torch.float64)
        weight_sum = torch.zeros_like(loss_sum)
        steps = 0
        for batches in zip(*(t.epoch_batches() for t in self.trainers), strict=True):
            x = torch.stack([b[0] for b in batches])  # one input tensor: checked by loop_reason
            targets = {name: torch.stack([b[1][name] for b in batches]) for name in batches[0][1]}
            losses, weights = self.step(x, targets, streams)
            loss_sum += losses.double()
            weight_sum += weights.double()
            steps += 1
        out = []
        for i, t in enumerate(self.trainers):
            with _naming_seed(t.config.seed), streams.use(i), warnings.catch_warnings():
                # The seeds' own optimizers do not step (the stacked one does): their schedules warn.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                out.append(t.end_epoch(loss_sum[i], weight_sum[i], steps))
        return out

    def sync_to_trainers(self) -> None:
        """Each seed's optimizer state (its slice of the stacked one), so its ``state_dict`` is its own."""
        for stacked, own, flip in self.pairs:
            state: Mapping[str, Any] = self.optimizer.state.get(stacked) or {}
            for i, (t, p) in enumerate(zip(self.trainers, own)):
                if state:
                    t.optimizer.state[p] = {key: _slice(v, i, stacked, flip) for key, v in state.items()}
                else:
                    t.optimizer.state.pop(p, None)

    def sync_from_trainers(self) -> None:
        """The stacked optimizer's state from the seeds' own (after they were loaded from a checkpoint)."""
        for stacked, own, flip in self.pairs:
            states: list[Mapping[str, Any]] = [t.optimizer.state.get(p) or {} for t, p in zip(self.trainers, own)]
            first = states[0]
            if not first:
                self.optimizer.state.pop(stacked, None)
                continue
            self.optimizer.state[stacked] = {
                key: _stack([s[key] for s in states], flip) if isinstance(v, Tensor) and v.shape == own[0].shape else _copy(v)
                for key, v in first.items()
            }
        for group, own_group in zip(self.optimizer.param_groups, self.trainers[0].optimizer.param_groups):
            group["lr"] = own_group["lr"]


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value


def _slice(value: Any, i: int, stacked: Tensor, flip: bool) -> Any:
    """Seed ``i``'s part of a stacked optimizer state value (a per-element tensor; others are shared)."""
    if not isinstance(value, Tensor) or value.shape != stacked.shape:
        return _copy(value)
    return (value[i].t() if flip else value[i]).clone(memory_format=torch.contiguous_format)


def _stack(values: list[Tensor], flip: bool) -> Tensor:
    return torch.stack([v.t() if flip else v for v in values])


# ------------------------------------------------------------------------------ the trainer
class MultiSeedTrainer:
    """The k seeds of one config (``config.seeds``), trained together; the API of :class:`Trainer`."""

    def __init__(
        self,
        config: TrialConfig | Mapping[str, Any],
        *,
        device_share: float = 1.0,
        splits: Mapping[str, Any] | None = None,
        batched: bool | None = None,
    ):
        """``batched``: None (default) batches the seeds where :func:`loop_reason` allows, True requires
        it (``ConfigError`` otherwise), False trains them in a loop.  ``device_share`` and ``splits`` as
        for :class:`Trainer`; the splits are built once and read by every seed."""
        self.config = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        cfg = self.config
        self.seeds = [cfg.seed + i for i in range(cfg.seeds)]
        self.trainers: list[Trainer] = []
        self._streams: _Streams | None = None
        for seed in self.seeds:
            trainer = Trainer(dataclasses.replace(cfg, seed=seed, seeds=1), device_share=device_share, splits=splits)
            splits = trainer.splits  # built (and moved) by the first seed's trainer, read by the others
            if self._streams is None:
                self._streams = _Streams(trainer.device.type == "cuda")
            self._streams.add()  # the state right after building the model: where a lone trainer starts
            self.trainers.append(trainer)
        assert self._streams is not None
        self.streams: _Streams = self._streams
        first = self.trainers[0]
        self.device, self.benchmark, self.task_names, self.tasks = first.device, first.benchmark, first.task_names, first.tasks
        #: Why the seeds train in a loop (None: batched).
        self.loop_reason = loop_reason(self.trainers) if batched is not False else "batched=False"
        if batched and self.loop_reason:
            raise ConfigError(f"the seeds of this config cannot be batched: {self.loop_reason}", field="seeds")
        self.stacked = _StackedSeeds(self.trainers) if self.loop_reason is None else None
        self._train: list[dict[str, float]] = []

    @property
    def mode(self) -> str:
        """``batched`` or ``loop``."""
        return "loop" if self.stacked is None else "batched"

    @property
    def epoch(self) -> int:
        return self.trainers[0].epoch

    def lower_is_better(self) -> dict[str, dict[str, bool]]:
        return self.trainers[0].lower_is_better()

    def train_epoch(self) -> dict[str, float]:
        """Train every seed one epoch; the seeds' mean ``train/...`` and ``weights/...`` (each seed's own
        are kept for :meth:`epoch_result`)."""
        if self.stacked is not None:
            self._train = self.stacked.train_epoch(self.streams)
        else:
            self._train = []
            for i, trainer in enumerate(self.trainers):
                with _naming_seed(trainer.config.seed), self.streams.use(i):
                    self._train.append(trainer.train_epoch())
        return combine(self._train, self.seeds)

    def epoch_result(self, train: Mapping[str, float] | None = None) -> dict[str, float]:
        """The epoch's combined result (:func:`combine`) from every seed's evaluation and the training
        metrics of the last :meth:`train_epoch` (``train`` is what it returned, not read again)."""
        results = []
        for i, trainer in enumerate(self.trainers):
            own = self._train[i] if i < len(self._train) else {}
            with self.streams.use(i):
                results.append(trainer.epoch_result(dict(own)))
        return combine(results, self.seeds)

    def run(self, epochs: int | None = None) -> Iterator[dict[str, float]]:
        """Train up to ``epochs`` more epochs (default: until ``max_epochs``), yielding each combined result."""
        stop = self.config.max_epochs if epochs is None else min(self.config.max_epochs, self.epoch + epochs)
        while self.epoch < stop:
            train = self.train_epoch()
            yield self.epoch_result(train)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Every seed's full :meth:`Trainer.state_dict` (its own random stream included)."""
        if self.stacked is not None:
            self.stacked.sync_to_trainers()
        states = []
        for i, trainer in enumerate(self.trainers):
            state = trainer.state_dict()
            if self.stacked is not None:  # the model's tensors are views of the stacked ones: save its own
                state["model"] = {k: v.clone(memory_format=torch.contiguous_format) for k, v in state["model"].items()}
            cpu, cuda = self.streams.states[i]
            state["torch_rng"] = cpu.clone()
            if cuda is not None:
                state["cuda_rng"] = [s.clone() for s in cuda]
            states.append(state)
        return {"epoch": self.epoch, "seeds": list(self.seeds), "config": self.config.to_dict(), "trainers": states}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "trainers" not in state:
            raise ValueError(f"a one-seed checkpoint cannot resume a trial of seeds {self.seeds}")
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"the checkpoint holds seeds {list(state['seeds'])}, this trial trains seeds {self.seeds}")
        for i, (trainer, own) in enumerate(zip(self.trainers, state["trainers"])):
            trainer.load_state_dict(own)
            self.streams.states[i] = self.streams.capture()  # load_state_dict set the seed's stream
        if self.stacked is not None:
            self.stacked.sync_from_trainers()

    def save(self, path: str) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))


def build_trainer(
    config: TrialConfig | Mapping[str, Any], *, device_share: float = 1.0, splits: Mapping[str, Any] | None = None
) -> Trainer | MultiSeedTrainer:
    """The trainer of a trial config: a :class:`Trainer` for one seed (unchanged), a
    :class:`MultiSeedTrainer` for ``seeds`` > 1."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    if cfg.seeds == 1:
        return Trainer(cfg, device_share=device_share, splits=splits)
    return MultiSeedTrainer(cfg, device_share=device_share, splits=splits)
