"""`debug=fast_dev_run|overfit|limit`: each turns the experiment loggers off, forces CPU and
limits the run as it says; checked by the optimiser steps the run's last checkpoint counts."""

from __future__ import annotations

import pytest
import torch
from conftest import make_config

from birnn.cli.train import train
from birnn.config import validate

TINY = ("encoder.hidden_size=8", "encoder.num_layers=1", "model.embedding_dim=8")
DEBUG = ("fast_dev_run", "overfit", "limit")


def compose(tmp_path, *overrides):
    # no TEST_OVERRIDES' logger=none here: turning the logger off is the debug config's job
    return make_config(tmp_path, *overrides, test_overrides=False)


@pytest.mark.parametrize("name", DEBUG)
@pytest.mark.parametrize("trainer", ["default", "gpu", "ddp"])
def test_debug_configs_run_on_one_cpu_without_loggers(tmp_path, name, trainer):
    cfg = compose(tmp_path, f"trainer={trainer}", f"debug={name}")
    validate(cfg)
    assert not cfg.get("logger")
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy,
            cfg.trainer.precision) == ("cpu", 1, "auto", "32-true")
    assert not cfg.trainer.enable_progress_bar


def last_step(tmp_path) -> int:
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    return ckpt["global_step"]


def test_fast_dev_run_takes_one_batch_of_each(tmp_path):
    cfg = make_config(tmp_path, *TINY, "debug=fast_dev_run")
    metrics = train(cfg)
    assert cfg.trainer.fast_dev_run is True
    assert metrics["epochs"] == 1
    # Lightning's fast_dev_run: one optimiser step, no best checkpoint
    assert metrics["best_checkpoint"] is None


def test_limit_takes_a_few_batches_per_epoch(tmp_path):
    cfg = make_config(tmp_path, *TINY, "debug=limit")
    train(cfg)
    assert last_step(tmp_path) == cfg.trainer.limit_train_batches * cfg.trainer.max_epochs


def test_overfit_trains_the_same_few_batches_every_epoch(tmp_path):
    cfg = make_config(tmp_path, *TINY, "debug=overfit", "trainer.max_epochs=4")
    metrics = train(cfg)
    assert metrics["epochs"] == 4  # no early stopping on three batches' scores
    assert last_step(tmp_path) == cfg.trainer.overfit_batches * 4
