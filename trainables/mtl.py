"""The function trainable: build the core from the trial's config, resume, report every epoch."""
from __future__ import annotations

import os
import tempfile

from ray import tune

CHECKPOINT_FILE = "state.pt"


def train_mtl(config: dict) -> None:
    import logging

    import ray
    import torch

    from mtlsearch.trainer import Trainer

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "checkpoint created" line per epoch
    config = dict(config)
    if config.get("device", "auto") == "auto":
        # Trials without a GPU share of their own see every GPU of the node: decide from Ray's assignment.
        config["device"] = "cuda" if ray.get_gpu_ids() else "cpu"
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1) or 1
    torch.set_num_threads(max(1, int(cpus)))

    trainer = Trainer(config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load(os.path.join(folder, CHECKPOINT_FILE))

    for result in trainer.run():
        with tempfile.TemporaryDirectory() as folder:
            trainer.save(os.path.join(folder, CHECKPOINT_FILE))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
