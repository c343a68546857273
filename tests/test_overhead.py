"""scripts/overhead.py: its raw loop does the training step Lightning does, its profile puts
time in the phase that spent it, and its command line runs both modes with an experiment's
features (characters, casing, CRF, plateau schedule, clipping).

The references are Lightning itself (the same step from the same weights, batch and random
state) and delays the tests inject into one phase at a time."""

from __future__ import annotations

import importlib.util
import re
import sys
import time

import lightning as L
import pytest
import torch
from conftest import CPU_PRECISION, ROOT, needs_cpu_bf16
from test_features import write_corpus

from birnn import BiRNN
from birnn.cli.build import make_trainer

# an experiment's features on a tiny tagger; SGD, so that an update is the gradient scaled
FEATURES = ("model.char.kind=cnn", "model.char.dim=4", "model.char.filters=4",
            "model.casing=true", "model.head=crf", "model.word_dropout=0.1",
            "encoder.hidden_size=6", "model.embedding_dim=6", "model/optimizer=sgd",
            "model.optimizer.lr=0.5", "trainer.gradient_clip_val=0.1", "data.batch_size=4")
DELAY = 0.3  # seconds injected into one phase


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "scripts" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["overhead"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def corpus(tmp_path):
    return f"data.dir={write_corpus(tmp_path / 'data')}"


class SeedEachBatch(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.manual_seed(5)


@pytest.mark.parametrize("precision", ["32-true", pytest.param("bf16-mixed", marks=needs_cpu_bf16)])
def test_raw_step_is_the_lightning_training_step(overhead, tmp_path, corpus, precision):
    """One raw step and one Lightning step (the trainer `train.py` builds) from the same
    weights, batch and random state leave the same weights."""
    cfg, datamodule = overhead.build([corpus, *FEATURES, f"trainer.precision={precision}"],
                                     tmp_path / "out")
    raw, lit = overhead.new_model(cfg, datamodule), overhead.new_model(cfg, datamodule)
    start = {k: v.clone() for k, v in raw.state_dict().items()}
    batch = next(iter(datamodule.train_dataloader()))
    raw.train()
    torch.manual_seed(5)
    overhead.raw_step(raw, overhead.optimizer_of(raw), batch, cfg)
    trainer = make_trainer(cfg, [SeedEachBatch()], [], max_steps=1, limit_val_batches=0,
                           enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(lit, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    assert trainer.global_step == 1
    # bf16 matmuls may round differently between the two call sites
    tolerance = {"rtol": 1e-4, "atol": 1e-6} if precision == "32-true" else \
        {"rtol": 1e-2, "atol": 1e-4}
    moved = 0
    for name, value in raw.state_dict().items():
        torch.testing.assert_close(value, lit.state_dict()[name], **tolerance,
                                   msg=lambda m, name=name: f"{name}: {m}")
        moved += not torch.equal(value, start[name])
    assert moved > len(start) // 2  # the step changed most tensors


def sleeping(function):
    def slow(*args, **kwargs):
        time.sleep(DELAY)
        return function(*args, **kwargs)
    return slow


def delay_phase(overhead, monkeypatch, phase):
    """Make one phase of the raw step take DELAY seconds longer."""
    if phase == "data":
        batches = overhead._batches
        monkeypatch.setattr(overhead, "_batches", lambda dm: (
            time.sleep(DELAY) or b for b in batches(dm)))
    elif phase == "encoder forward":
        monkeypatch.setattr(BiRNN, "forward", sleeping(BiRNN.forward))
    elif phase == "backward":
        monkeypatch.setattr(torch.Tensor, "backward", sleeping(torch.Tensor.backward))
    elif phase == "clip + optimizer step":
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                            sleeping(torch.nn.utils.clip_grad_norm_))


@pytest.mark.parametrize("phase", ["data", "encoder forward", "backward",
                                   "clip + optimizer step"])
def test_profile_puts_time_in_the_phase_that_spent_it(overhead, monkeypatch, tmp_path,
                                                      corpus, phase):
    cfg, datamodule = overhead.build([corpus, *FEATURES], tmp_path / "out")
    delay_phase(overhead, monkeypatch, phase)
    result = overhead.profile(cfg, datamodule, steps=3, warmup=1, op_steps=0)
    assert set(result["median_ms"]) == set(overhead.PHASES)
    assert result["median_ms"][phase] >= 1e3 * DELAY
    for other in set(overhead.PHASES) - {phase}:
        assert result["median_ms"][other] < 1e3 * DELAY / 2, other


EXPERIMENT = ("experiment=conll2003", "encoder.hidden_size=6", "encoder.num_layers=1",
              "model.embedding_dim=6", "model.char.filters=4")


def test_command_line_profile(overhead, capsys, corpus):
    """The profile from the command line, overrides on both sides of the options as in the
    script's usage lines, with the CoNLL-2003 experiment's features."""
    experiment = (*EXPERIMENT, corpus)
    assert overhead.main([*experiment, "--profile", "--steps", "2", "--warmup", "0",
                          "--op-steps", "1", f"trainer.precision={CPU_PRECISION}"]) == 0
    out = capsys.readouterr().out
    for phase in overhead.PHASES:
        assert re.search(rf"^  {re.escape(phase)}\s+[\d.]+\s+[\d.]+\s+[\d.]+%$", out, re.M), phase
    assert "over 2 steps" in out and "Self CPU" in out  # the operator table


def test_command_line_ratio(overhead, capsys, corpus):
    """The ratio from the command line with the CoNLL-2003 experiment, whose plateau schedule
    the Lightning loop (no validation) must leave out."""
    experiment = (*EXPERIMENT, corpus)
    assert overhead.main(["--epochs", "1", "--repeats", "1", *experiment]) == 0
    out = capsys.readouterr().out
    for loop in ("raw PyTorch loop", "train.py Lightning"):
        assert re.search(rf"^{loop}\s+[\d,]+ tokens/s", out, re.M), loop
    assert re.search(r"^ratio Lightning / raw: [\d.]+$", out, re.M)
