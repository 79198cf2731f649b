"""The shared MTL training core: plain PyTorch, no Ray, no MLflow.

>>> from mtlsearch import Trainer
>>> trainer = Trainer({"benchmark": "multidigits", "method": "gemtl", "p": 0.5, "max_epochs": 3})
>>> for result in trainer.run():
...     print(result["epoch"], result["val/delta_m"])

A :class:`Trainer` takes one validated :class:`~mtlsearch.config.TrialConfig` and yields one flat
``{name: float}`` dict per epoch; names follow docs/metrics.md (``train/<task>/loss``,
``<split>/<task>/<metric>``, ``weights/<task>``, ``<split>/delta_m``).  ``state_dict`` /
``load_state_dict`` capture everything (model, optimizer, balancing state, RNG, epoch), so that
training 2 epochs, restoring and training 2 more gives the metrics of 4 epochs straight.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor

from mtlsearch import gradients
from mtlsearch.balancing import GradBalancing, GradResult, LossBalancing
from mtlsearch.benchmarks import HPSModel, get_benchmark
from mtlsearch.config import TrialConfig
from mtlsearch.dominance import DominanceTracker
from mtlsearch.metrics import delta_m
from mtlsearch.optim import build_optimizer, is_adatask
from mtlsearch.references import load_reference

#: The ``torch.compile`` backend of ``compile: encoder`` (default inductor); a testing aid.
COMPILE_BACKEND_ENV = "MTLSEARCH_COMPILE_BACKEND"


class NonFiniteLossError(FloatingPointError):
    """A value of a training step became NaN or infinite: the trial cannot continue.  The message names
    the first source (:meth:`Trainer.train_epoch`): the model's output, a task's loss, the balancing
    method's weights or direction, or the optimizer's step (a finite step before non-finite outputs)."""


#: What each column of an epoch's finiteness checks holds (see ``Trainer._check_finite``), in the order a
#: step computes them: the first failing column of the first failing step is the source.
_REP, _OUT, _LOSS, _WD = "rep", "out", "loss", "wd"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _unwrap(split: Any) -> Any:
    """The data a wrapper split (training augmentation, ``with_inner``) reads; the split itself otherwise."""
    return split.inner if hasattr(split, "with_inner") else split


def split_bytes(split: Any) -> int | None:
    """Bytes that a disk-backed split would take held in memory (None: not a split of tensors)."""
    from mtlsearch.benchmarks import TensorSplit

    split = _unwrap(split)
    if isinstance(split, TensorSplit) or not hasattr(split, "batches") or len(split) == 0:
        return None
    x, targets = next(iter(split.batches(1, shuffle=False)))
    if not isinstance(x, Tensor):
        return None
    per_item = x.nelement() * x.element_size() + sum(t.nelement() * t.element_size() for t in targets.values())
    return per_item * len(split)


def splits_to_hold(sizes: Mapping[str, int | None], free: int, total: int, budget: float = 0.25, share: float = 1.0) -> list[str]:
    """Which splits (by their sizes in bytes, None = cannot be held) to hold on a GPU with ``free`` of
    ``total`` bytes free: together at most ``budget`` of this trial's share of the memory (``share`` x
    ``total``: trials packed onto one GPU each budget their own part, however many start at once) and
    at most half of what is free now.  Splits are taken in order (train first); one that does not fit
    stays on disk and the next ones may still be held."""
    allowed = min(budget * min(max(share, 0.0), 1.0) * total, 0.5 * free)
    held = []
    for name, size in sizes.items():
        if size is not None and size <= allowed:
            held.append(name)
            allowed -= size
    return held


def hold_on_device(splits: Mapping[str, Any], device: torch.device, budget: float = 0.25, share: float = 1.0) -> dict[str, Any]:
    """Disk-backed splits as in-memory :class:`TensorSplit` objects on ``device`` (no per-step host-to-device
    copies) where :func:`splits_to_hold` says they fit."""
    from mtlsearch.benchmarks import TensorSplit

    free, total = torch.cuda.mem_get_info(device)
    out = dict(splits)
    for name in splits_to_hold({k: split_bytes(v) for k, v in splits.items()}, free, total, budget, share):
        xs: list[Tensor] = []
        ys: dict[str, list[Tensor]] = {}
        for x, targets in _unwrap(splits[name]).batches(64, shuffle=False):
            xs.append(x)
            for k, v in targets.items():
                ys.setdefault(k, []).append(v)
        held = TensorSplit(torch.cat(xs), {k: torch.cat(v) for k, v in ys.items()}).to(device)
        out[name] = splits[name].with_inner(held) if hasattr(splits[name], "with_inner") else held
    return out


class Trainer:
    def __init__(self, config: TrialConfig | Mapping[str, Any], *, device_share: float = 1.0, splits: Mapping[str, Any] | None = None):
        """``device_share``: the fraction of the GPU this trial was given (Ray's fractional GPUs); it
        bounds the memory used to hold data on the GPU, so packed trials do not run out together.
        ``splits``: this config's splits already built (``mtlsearch.benchmarks.cache``), read and never
        changed; by default the benchmark builds them."""
        self.config = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        cfg = self.config
        if cfg.seeds != 1:
            from mtlsearch.errors import ConfigError

            raise ConfigError(
                f"a Trainer trains one seed and this config asks for {cfg.seeds}; build it with "
                "mtlsearch.multiseed.build_trainer (a MultiSeedTrainer for several seeds)",
                field="seeds",
            )
        self.device = resolve_device(cfg.device)
        self.benchmark = get_benchmark(cfg.benchmark, data_root=cfg.data_root, **cfg.benchmark_options)
        specs = {t.name: t for t in self.benchmark.task_specs()}
        self.task_names = list(cfg.tasks) if cfg.tasks else list(specs)
        self.tasks = [specs[t] for t in self.task_names]
        from mtlsearch.benchmarks import as_model, as_split

        if splits is None:
            num_workers = self.benchmark.opts.get("num_workers", 0) or 0
            splits = {k: as_split(v, num_workers) for k, v in self.benchmark.load_splits(cfg.data_seed).items()}
        self.splits = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in splits.items()}

        # The fast GPU defaults: bf16 autocast (``amp``), and with ``gpu_speedups``: channels_last for
        # image models, cuDNN autotuning, fused Adam, splits read from disk held on the GPU when they fit.
        cuda = self.device.type == "cuda"
        fast = cuda and cfg.gpu_speedups
        if fast and not self.benchmark.multi_input:
            self.splits = hold_on_device(self.splits, self.device, share=device_share)
        self.amp_dtype = torch.bfloat16 if cfg.amp == "bf16" or (cfg.amp == "auto" and cuda) else None
        if cuda:
            torch.backends.cudnn.benchmark = fast  # process-wide: one trainer per trial process
        torch.manual_seed(cfg.seed)
        self.model = as_model(self.benchmark.build_model(self.task_names)).to(self.device)
        #: A model returning one output per task (no shared representation): its task-specific
        #: parameters get their task's gradient through the outputs (see ``_task_param_backward``).
        self.outputs_per_task = getattr(self.model, "outputs_per_task", False)
        if self.outputs_per_task and cfg.effective_grad_mode == "rep":
            from mtlsearch.errors import ConfigError

            raise ConfigError(
                f"the model of benchmark {cfg.benchmark!r} returns one output per task without a shared "
                f"representation, so method {cfg.method!r} cannot use grad_mode 'rep'; set grad_mode: param",
                field="grad_mode",
            )
        if fast and any(isinstance(m, torch.nn.Conv2d) for m in self.model.modules()):
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.compile != "off":
            self._compile_encoder()
        self.balancing = cfg.method_class(len(self.task_names), **cfg.method_params).to(self.device)
        self.grad_mode = cfg.effective_grad_mode
        self.shared = self.model.shared_parameters()
        own = [p for p in self.balancing.parameters() if p.requires_grad]
        #: The balancing method's parameters in their own Adam at ``balancing_lr`` (the released
        #: Nash-MTL/FAMO trainers' second parameter group), or None: in the model's optimizer.
        self.balancing_optimizer = torch.optim.Adam(own, lr=cfg.balancing_lr) if own and cfg.balancing_lr > 0 else None
        specific = self.model.task_parameters() + (own if self.balancing_optimizer is None else [])
        self.optimizer = build_optimizer(
            cfg.optimizer,
            self.shared,
            specific,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            num_tasks=len(self.task_names),
            fused=cfg.gpu_speedups,
        )
        self.adatask = is_adatask(cfg.optimizer)
        self.lr_schedule = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.lr_step_size, cfg.lr_gamma) if cfg.lr_step_size else None
        # The released StepLR acts on every group, the balancing parameters' included.
        self.balancing_lr_schedule = (
            torch.optim.lr_scheduler.StepLR(self.balancing_optimizer, cfg.lr_step_size, cfg.lr_gamma)
            if cfg.lr_step_size and self.balancing_optimizer is not None
            else None
        )
        #: Task dominance (rAU per shared layer), when the config asks for it: then every step
        #: computes per-task gradients of the shared parameters, even for loss-level methods.
        self.dominance = (
            DominanceTracker(self.model, self.shared, self.task_names, cfg.dominance_beta) if cfg.dominance_interval > 0 else None
        )
        self.epoch = 0
        #: Per step of the current epoch: sums of the shared output, of each task's output, the task losses and
        #: the sum of the method's weights or direction (a sum is non-finite when an element is); checked once
        #: at the epoch's end (one reduction per value and step, no host sync per step).
        self._step_checks: list[tuple[Tensor, list[Tensor], Tensor, Tensor]] = []
        self._output_sums: tuple[Tensor, list[Tensor]] | None = None
        self._last_had_weights = True
        data_folder = getattr(self.benchmark, "root", None) or self.benchmark.data_root
        self.reference = load_reference(cfg.benchmark, self.task_names, data_folder)
        #: The published protocol's own score (``test/delta_m_nashmtl``, ...), when the config names one.
        self.protocol_scorer = None
        if cfg.protocol:
            from mtlsearch.protocols import make_scorer

            self.protocol_scorer = make_scorer(
                cfg.protocol,
                cfg.benchmark,
                self.task_names,
                self.lower_is_better(),
                data_folder,
                cfg.last_k or None,
            )

    def _compile_encoder(self) -> None:
        """``compile: encoder`` / ``encoder_graphs``: the encoder's forward (and so its backward) through
        ``torch.compile``, in place (parameter names and checkpoints unchanged); the backend is
        ``$MTLSEARCH_COMPILE_BACKEND`` (default inductor; tests use aot_eager, which skips code generation)."""
        from mtlsearch.config import compile_refusal
        from mtlsearch.errors import ConfigError

        cfg = self.config
        refusal = compile_refusal(cfg, self.device.type)
        if refusal is None and (self.outputs_per_task or not isinstance(getattr(self.model, "encoder", None), torch.nn.Module)):
            refusal = (
                f"{cfg.compile!r} compiles the shared encoder, and the model of benchmark {cfg.benchmark!r} has none "
                "(one output per task); set compile: off"
            )
        if refusal:
            raise ConfigError(refusal, field="compile")
        options: dict[str, Any] = {"backend": os.environ.get(COMPILE_BACKEND_ENV) or "inductor"}
        if cfg.compile == "encoder_graphs":
            options["mode"] = "reduce-overhead"  # inductor's CUDA graphs
        encoder = self.model.encoder
        assert isinstance(encoder, torch.nn.Module)
        encoder.compile(**options)

    # ------------------------------------------------------------------ training
    def _to_device(
        self, x: Tensor | Mapping[str, Tensor], targets: Mapping[str, Tensor]
    ) -> tuple[Tensor | dict[str, Tensor], dict[str, Tensor]]:
        """Move a batch to the trainer's device: splits read from disk yield CPU tensors (a no-op
        for in-memory splits, which were moved once with ``split.to``)."""
        if isinstance(x, Mapping):
            x = {k: v.to(self.device, non_blocking=True) for k, v in x.items()}
        else:
            x = x.to(self.device, non_blocking=True)
        return x, {k: v.to(self.device, non_blocking=True) for k, v in targets.items()}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _encode(self, x: Tensor | Mapping[str, Tensor]) -> list[Tensor]:
        if self.outputs_per_task:  # the "representation" of each task is its output
            out = self.model(x)
            return [out[t] for t in self.task_names]
        model = self.model
        assert isinstance(model, HPSModel)  # as_model gives an OutputsModel only with outputs_per_task
        if isinstance(x, Mapping):
            return [model.encoder(x[t]) for t in self.task_names]
        z = model.encoder(x)
        return list(z) if isinstance(z, (list, tuple)) else [z] * len(self.task_names)

    def _losses(self, reps: list[Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        outs = [self.model.heads[spec.name](z) for spec, z in zip(self.tasks, reps)]
        if self.outputs_per_task:  # no shared output: each task's output is checked below
            rep = torch.zeros((), device=outs[0].device)
        elif len(reps) == 1 or all(z is reps[0] for z in reps):
            rep = reps[0].detach().sum()
        else:  # one source per task (multi-input), or a list of them
            rep = torch.stack([z.detach().sum().float() for z in {id(z): z for z in reps}.values()]).sum()
        self._output_sums = (rep, [o.detach().sum() for o in outs])
        return torch.stack([spec.loss(o, targets[spec.name]) for spec, o in zip(self.tasks, outs)])

    def _flag_step(self, losses: Tensor, checked: Tensor) -> None:
        """Keep what this step's finiteness check needs (model output, losses, the method's weights or direction)."""
        assert self._output_sums is not None
        rep, outs = self._output_sums
        self._step_checks.append((rep, outs, losses.detach(), checked.detach().sum()))

    def train_step(self, x: Tensor | Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """One optimisation step; returns the raw task losses and the effective task weights.

        Two stages: the balancing method turns the task losses (loss level) or the per-task gradients
        (gradient level) into either gradients already in ``param.grad`` or, where the step needs them
        (an AdaTask optimizer, the dominance tracker), per-task gradients of the shared parameters;
        :meth:`_apply` then steps from them."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.balancing_optimizer is not None:
            self.balancing_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            sources = self._encode(x)
        if isinstance(self.balancing, LossBalancing):
            losses, weights, task_grads = self._loss_level(sources, targets)
        else:
            losses, weights, task_grads = self._grad_level(sources, targets)
        self._apply(task_grads)
        if self.balancing_optimizer is not None:
            self.balancing_optimizer.step()
        if self.balancing.needs_losses_after_step:
            # The same batch re-evaluated after the step (FAMO's released rule): a forward pass in
            # train mode without gradients, as the released trainer does (BatchNorm statistics included).
            with torch.no_grad(), self._autocast():
                after = self._losses(self._encode(x), targets).float()
            self.balancing.after_step(after)
        return losses.detach(), weights.detach()

    @property
    def _per_task_step(self) -> bool:
        """The step needs each task's gradient of the shared parameters (AdaTask, task dominance)."""
        return self.adatask or self.dominance is not None

    def _loss_level(self, sources: list[Tensor], targets: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor] | None]:
        """A loss-level method: one backward of its scalar; the weights are ``d total / d losses``.
        Without a per-task step this is what ``ew`` costs (one forward, one backward); with one, the
        backward stops at the representation and the per-task gradients are formed from there."""
        leaves = gradients.RepLeaves(sources) if self._per_task_step else None
        with self._autocast():
            losses = self._losses(sources if leaves is None else leaves.leaves, targets).float()
        total = self.balancing(losses)
        (weights,) = torch.autograd.grad(total, losses, retain_graph=True)
        self._flag_step(losses, weights)
        total.backward()  # heads + method parameters (+ the shared ones, or leaves get w_t * dL_t/dz)
        if leaves is None:
            return losses, weights, None
        rep_grads = leaves.grads()
        self._task_param_backward(leaves, rep_grads)
        return losses, weights, self._shared_task_grads(leaves, rep_grads)

    def _grad_level(self, sources: list[Tensor], targets: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor] | None]:
        """A gradient-level method: heads get their own losses' gradients, the method combines the
        per-task gradients of the representation (``rep``) or of the shared parameters (``param``)."""
        bal = self.balancing
        assert isinstance(bal, GradBalancing)
        leaves = gradients.RepLeaves(sources)
        with self._autocast():
            losses = self._losses(leaves.leaves, targets).float()
        head_losses = bal.transform_losses(losses)
        head_losses.sum().backward()  # heads (and e.g. IMTL-H's scales) get their own losses' gradients
        rep_grads = leaves.grads()
        self._task_param_backward(leaves, rep_grads)
        combine = self._combine_rep if self.grad_mode == "rep" else self._combine_param
        result, task_grads = combine(leaves, rep_grads, head_losses.detach())
        self._last_had_weights = result.weights is not None
        checked = result.weights if result.weights is not None else result.direction
        assert checked is not None  # GradResult holds one of the two
        self._flag_step(losses, checked)
        weights = result.weights if result.weights is not None else torch.full_like(losses, float("nan"))
        return losses, weights, task_grads

    def _combine_rep(self, leaves: gradients.RepLeaves, rep_grads: list[Tensor], losses: Tensor) -> tuple[GradResult, list[Tensor] | None]:
        """``rep`` mode: the method sees G, one row dL_t/dz per task ([T, numel z]); one z_t per task
        (multi-input): task t only reaches z_t, so the rows are block-diagonal over the concatenated z's.
        Its weights (or direction) are pulled back through the encoder."""
        flat = [g.reshape(1, -1) for g in rep_grads]
        G = torch.cat(flat) if leaves.shared_source else torch.block_diag(*flat)
        result = self.balancing(G, losses)
        if result.weights is not None:
            weighted = gradients.weighted_sum(result.weights, rep_grads)
            if self._per_task_step:
                return result, self._shared_task_grads(leaves, weighted)
            leaves.backward(weighted)
        elif leaves.shared_source:
            leaves.backward([result.direction.view_as(rep_grads[0])])
        else:
            parts = result.direction.split([g.numel() for g in rep_grads])
            leaves.backward([p.view_as(g) for p, g in zip(parts, rep_grads)])
        return result, None

    def _combine_param(
        self, leaves: gradients.RepLeaves, rep_grads: list[Tensor], losses: Tensor
    ) -> tuple[GradResult, list[Tensor] | None]:
        """``param`` mode: the method sees the per-task gradients of the shared parameters ([T, d])."""
        task_grads = self._shared_task_grads(leaves, rep_grads)
        result = self.balancing(gradients.flatten_task_grads(task_grads), losses)
        if self._per_task_step:
            return result, [g * result.weights.to(g.dtype).view(-1, *([1] * (g.dim() - 1))) for g in task_grads]
        if result.weights is not None:
            direction = result.weights.to(task_grads[0].dtype) @ gradients.flatten_task_grads(task_grads)
        else:
            direction = result.direction
        gradients.set_flat_grad(self.shared, direction)
        return result, None

    def _shared_task_grads(self, leaves: gradients.RepLeaves, cotangents: list[Tensor]) -> list[Tensor]:
        """Per-task gradients of the shared parameters (``[T, *p.shape]`` each) from the
        representation's per-task cotangents."""
        return gradients.per_task_param_grads(leaves, cotangents, self.shared, key=id(self.model))

    def _apply(self, task_grads: list[Tensor] | None) -> None:
        """The one place a step is taken: from ``param.grad`` as the backward passes filled it, or
        from per-task gradients of the shared parameters (``step_tasks``: AdaTask's per-task
        accumulators, or their sum for a base optimizer), which also gives each task's share of the
        update to the dominance tracker, if any."""
        if task_grads is None:
            self.optimizer.step()
            return
        shares = self.optimizer.step_tasks(task_grads, shares=self.dominance is not None)
        if self.dominance is not None and shares is not None:  # shares were asked for
            self.dominance.update(shares)

    def _task_param_backward(self, leaves: gradients.RepLeaves, cotangents: list[Tensor]) -> None:
        """A model with one output per task: its task-specific parameters get their own task's gradient
        (what heads get from the backward pass through the leaves in an encoder-and-heads model)."""
        if not self.outputs_per_task:
            return
        params = self.model.task_parameters()
        if not params:
            return
        grads = torch.autograd.grad(leaves.sources, params, grad_outputs=cotangents, retain_graph=True, allow_unused=True)
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad.add_(g)

    def _epoch_generator(self) -> torch.Generator:
        # Derived from (seed, epoch), so a restored trainer shuffles exactly as an uninterrupted one.
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.epoch)

    def epoch_batches(self) -> Iterator[tuple[Tensor | dict[str, Tensor], dict[str, Tensor]]]:
        """This epoch's training batches, shuffled by (seed, epoch), on the trainer's device."""
        for x, targets in self.splits["train"].batches(self.config.batch_size, shuffle=True, generator=self._epoch_generator()):
            yield self._to_device(x, targets)

    def train_epoch(self) -> dict[str, float]:
        loss_sum = torch.zeros(len(self.task_names), device=self.device, dtype=torch.float64)
        weight_sum = torch.zeros_like(loss_sum)
        steps = 0
        for x, targets in self.epoch_batches():
            losses, weights = self.train_step(x, targets)
            loss_sum += losses.double()
            weight_sum += weights.double()
            steps += 1
        return self.end_epoch(loss_sum, weight_sum, steps)

    def end_epoch(self, loss_sum: Tensor, weight_sum: Tensor, steps: int) -> dict[str, float]:
        """Close an epoch of ``steps`` steps whose task losses and weights summed to ``loss_sum`` and
        ``weight_sum`` (float64, one per task): the non-finite check (:meth:`_check_finite`), the method's and
        the schedule's epoch hooks, the epoch count; returns the epoch's ``train/...`` and ``weights/...`` metrics."""
        self._check_finite(self.epoch + 1, loss_sum)
        self.balancing.on_epoch_end(self.epoch, (loss_sum / max(steps, 1)).float())
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        if self.balancing_lr_schedule is not None:
            self.balancing_lr_schedule.step()
        self.epoch += 1
        mean_loss = (loss_sum / max(steps, 1)).tolist()
        mean_w = (weight_sum / max(steps, 1)).tolist()
        out = {f"train/{t}/loss": v for t, v in zip(self.task_names, mean_loss)}
        out.update({f"weights/{t}": w for t, w in zip(self.task_names, mean_w) if math.isfinite(w)})
        return out

    def _check_finite(self, epoch: int, loss_sum: Tensor) -> None:
        """After an epoch's steps: one host sync; when a step was not all finite, raise
        :class:`NonFiniteLossError` naming the first source (the first failing check of the first failing
        step, in the order a step computes them) in one line."""
        rows, self._step_checks = self._step_checks, []
        if not rows:  # steps taken elsewhere (the k-seed batched path): the epoch's losses alone
            diverged = [t for t, ok in zip(self.task_names, torch.isfinite(loss_sum).tolist()) if not ok]
            if diverged:
                raise NonFiniteLossError(f"training loss of task {diverged[0]!r} became non-finite (nan or inf) at epoch {epoch}")
            return
        values = torch.cat(
            [
                torch.stack([r[0] for r in rows]).float().reshape(-1, 1),
                torch.stack([o.float() for r in rows for o in r[1]]).reshape(len(rows), -1),
                torch.stack([r[2] for r in rows]).float(),
                torch.stack([r[3] for r in rows]).float().reshape(-1, 1),
            ],
            dim=1,
        )
        flags = torch.isfinite(values)
        if bool(flags.all()) and bool(torch.isfinite(loss_sum).all()):
            return
        bad = ~flags
        step = int(bad.any(dim=1).nonzero()[0, 0]) if bool(bad.any()) else len(flags) - 1
        column = int(bad[step].nonzero()[0, 0]) if bool(bad[step].any()) else 1 + 2 * len(self.tasks)
        cfg = self.config
        where = f"at epoch {epoch}, step {step + 1}"
        n = len(self.task_names)
        kind = _REP if column == 0 else _OUT if column <= n else _LOSS if column <= 2 * n else _WD
        task = self.task_names[(column - 1) % n] if kind in (_OUT, _LOSS) else None
        first = epoch == 1 and step == 0
        step_of = f"a step of optimizer {cfg.optimizer!r} (lr={cfg.lr:g})"
        if kind in (_REP, _OUT):
            what = "shared output" if kind == _REP else f"output for task {task!r}"
            after = (
                "on the first step: check the inputs and the model's initialisation"
                if first
                else f"right after {step_of} from finite losses and weights: the optimizer's step diverged (a smaller lr, or clipping)"
            )
            message = f"the model's {what} became non-finite (nan or inf) {where}, {after}"
        elif kind == _LOSS:
            cause = "the task's loss function" if first else f"{step_of} diverged (a smaller lr), or the task's loss function"
            message = f"training loss of task {task!r} became non-finite (nan or inf) {where} from a finite model output: {cause}"
        else:
            what = "direction" if isinstance(self.balancing, GradBalancing) and not self._last_had_weights else "weights"
            message = f"method {cfg.method!r} returned non-finite {what} {where}, from finite losses and model outputs"
        raise NonFiniteLossError(message)

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` over the whole split."""
        self.model.eval()
        meters = {t.name: t.new_meter() for t in self.tasks}
        batch_size = self.benchmark.eval_batch_size or max(self.config.batch_size, 256)
        for x, targets in self.splits[split].batches(batch_size, shuffle=False):
            x, targets = self._to_device(x, targets)
            with self._autocast():
                preds = {k: v.float() for k, v in self.model(x).items()}
            for name in self.task_names:
                if name in preds:  # a multi-input batch may lack tasks whose split is exhausted
                    meters[name].update(preds[name], targets[name])
        return {name: meter.compute() for name, meter in meters.items()}

    def lower_is_better(self) -> dict[str, dict[str, bool]]:
        return {t.name: dict(t.metrics) for t in self.tasks}

    def epoch_result(self, train: dict[str, float]) -> dict[str, float]:
        result: dict[str, float] = {"epoch": float(self.epoch), **train}
        for split in ("val", "test"):
            if split not in self.splits:
                continue
            metrics = self.evaluate(split)
            for task, values in metrics.items():
                for metric, value in values.items():
                    result[f"{split}/{task}/{metric}"] = value
            if self.reference is not None and split in self.reference:
                result[f"{split}/delta_m"] = delta_m(metrics, self.reference[split], self.lower_is_better())
            if split == "test" and self.protocol_scorer is not None:
                result.update(self.protocol_scorer.update(metrics))
        result.update(self.balancing.extra_metrics())
        if self.dominance is not None and self.epoch % self.config.dominance_interval == 0:
            result.update(self.dominance.metrics())
        return result

    def run(self, epochs: int | None = None) -> Iterator[dict[str, float]]:
        """Train up to ``epochs`` more epochs (default: until ``max_epochs``), yielding each result."""
        stop = self.config.max_epochs if epochs is None else min(self.config.max_epochs, self.epoch + epochs)
        while self.epoch < stop:
            train = self.train_epoch()
            yield self.epoch_result(train)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "balancing": self.balancing.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict() if self.lr_schedule is not None else None,
            "torch_rng": torch.get_rng_state(),
        }
        if self.balancing_optimizer is not None:
            state["balancing_optimizer"] = self.balancing_optimizer.state_dict()
        if self.balancing_lr_schedule is not None:
            state["balancing_lr_schedule"] = self.balancing_lr_schedule.state_dict()
        if self.dominance is not None:
            state["dominance"] = self.dominance.state_dict()
        if self.protocol_scorer is not None:
            state["protocol_scorer"] = self.protocol_scorer.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancing.load_state_dict(state["balancing"])
        if self.lr_schedule is not None and state.get("lr_schedule"):
            self.lr_schedule.load_state_dict(state["lr_schedule"])
        if self.balancing_optimizer is not None and "balancing_optimizer" in state:
            self.balancing_optimizer.load_state_dict(state["balancing_optimizer"])
        if self.balancing_lr_schedule is not None and state.get("balancing_lr_schedule"):
            self.balancing_lr_schedule.load_state_dict(state["balancing_lr_schedule"])
        if self.dominance is not None and "dominance" in state:
            self.dominance.load_state_dict(state["dominance"])
        if self.protocol_scorer is not None and "protocol_scorer" in state:
            self.protocol_scorer.load_state_dict(state["protocol_scorer"])
        self.epoch = int(state["epoch"])
        # RNG states are CPU byte tensors, whatever map_location moved them to.
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def save(self, path: str) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
