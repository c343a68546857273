"""`model.optimizer` / `model.scheduler`: `_partial_` configs kept as plain dicts in the
hyper-parameters and completed in `configure_optimizers`; the name-based form of older
checkpoints still loads and builds the same optimiser."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import make_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from birnn.config.optim import build_optimizer, build_scheduler
from birnn.models import SentenceClassifier, TokenTagger

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"


def params():
    return [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]


def composed_model(tmp_path, *overrides):
    cfg = make_config(tmp_path, "encoder.hidden_size=4", "model.embedding_dim=4", *overrides)
    encoder = OmegaConf.to_container(cfg.encoder, resolve=True)
    return instantiate(cfg.model, vocab_size=10, labels=["O", "B-X", "I-X"], encoder=encoder,
                       _convert_="all")


def test_composed_configs_reach_the_model_as_plain_dicts(tmp_path):
    model = composed_model(tmp_path, "model/scheduler=plateau")
    assert model.hparams["optimizer"] == {"_target_": "torch.optim.AdamW", "_partial_": True,
                                          "lr": 0.002, "weight_decay": 0.0, "fused": True}
    assert model.hparams["scheduler"]["_target_"] == "torch.optim.lr_scheduler.ReduceLROnPlateau"
    # so a checkpoint of them loads weights-only
    path = tmp_path / "m.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams)}, path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["optimizer"]["lr"] == 0.002


def test_configure_optimizers_completes_the_config(tmp_path):
    model = composed_model(tmp_path, "model/optimizer=sgd", "model.optimizer.momentum=0.9",
                           "model.optimizer.lr=0.5")
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["fused"]) == (0.5, 0.9, True)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in group["params"]} == trainable


def test_fused_by_default_and_not_under_fp16_clipping():
    cfg = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}
    assert build_optimizer(cfg, params()).defaults["fused"] is True
    off = build_optimizer(cfg, params(), fp16_clipping=True).defaults
    assert (off["fused"], off["foreach"]) == (False, True)
    assert build_optimizer({**cfg, "fused": False}, params()).defaults["fused"] is False


@pytest.mark.parametrize("name", ["tagger", "classifier"])
def test_old_checkpoints_load_and_build_their_optimiser(name):
    """The fixtures were written with `optimizer: {name: adamw|adam, lr, ...}`."""
    cls = TokenTagger if name == "tagger" else SentenceClassifier
    path = FIXTURES / f"{name}.ckpt"
    saved = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert "name" in saved["optimizer"]
    model = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    optimizer = model.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    expected = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                "sgd": torch.optim.SGD}[saved["optimizer"]["name"]]
    assert type(optimizer) is expected
    assert optimizer.param_groups[0]["lr"] == saved["optimizer"]["lr"]
    assert optimizer.param_groups[0]["weight_decay"] == saved["optimizer"].get(
        "weight_decay", optimizer.defaults["weight_decay"])


def test_old_scheduler_names_translate():
    optimizer = torch.optim.SGD(params(), lr=0.1)
    plateau = build_scheduler({"name": "plateau", "factor": 0.25, "patience": 1, "mode": "max",
                               "monitor": "val/acc", "warmup_steps": 0}, optimizer,
                              lambda: pytest.fail("plateau needs no step count"))
    assert isinstance(plateau["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (plateau["monitor"], plateau["interval"]) == ("val/acc", "epoch")
    assert (plateau["scheduler"].factor, plateau["scheduler"].patience) == (0.25, 1)
    assert build_scheduler({"name": "none"}, optimizer, lambda: 10) is None


def test_warmup_decay_follows_its_formula():
    base, warmup, total, floor = 0.1, 3, 10, 0.01
    optimizer = torch.optim.SGD(params(), lr=base)
    config = build_scheduler({"_target_": "birnn.config.optim.warmup_decay", "_partial_": True,
                              "shape": "cosine", "warmup_steps": warmup, "min_lr": floor},
                             optimizer, lambda: total)
    assert config["interval"] == "step"
    got = []
    for _ in range(total):
        got.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        config["scheduler"].step()
    expected = [base * (s + 1) / warmup if s < warmup else
                floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup)
                                                             / (total - warmup)))
                for s in range(total)]
    assert got == pytest.approx(expected)
