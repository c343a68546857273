"""`callbacks=ema`: the moving average of the weights against one computed here from the raw
weights of every step, and the weights that validation and test actually run with."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import make_config
from lightning.pytorch.callbacks import ModelCheckpoint
from test_evaluate_predict import TINY, eval_cfg
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from birnn.callbacks import WeightEMA
from birnn.cli.evaluate import evaluate
from birnn.cli.train import train
from birnn.config import validate
from birnn.errors import ConfigError


class Regression(L.LightningModule):
    """A linear regression: a model small enough to follow every weight by hand."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def loss(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self.linear(x), y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Probe(L.Callback):
    """Copies of the weights: raw ones after each step, and the ones each evaluation runs with
    (listed after WeightEMA, so it sees what WeightEMA swapped in)."""

    def __init__(self):
        self.steps, self.evaluated = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(weights(pl_module))

    def on_validation_epoch_start(self, trainer, pl_module):
        self.evaluated.append((trainer.state.fn, len(self.steps), weights(pl_module)))

    on_test_epoch_start = on_validation_epoch_start


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def hand_ema(steps, decay, start_step=0):
    """The average after each step: the raw weights up to `start_step`, then
    avg = decay * avg + (1 - decay) * w."""
    out, avg = [], None
    for i, w in enumerate(steps):
        if avg is None or i <= start_step:
            avg = dict(w)
        else:
            avg = {k: decay * avg[k] + (1 - decay) * w[k] for k in w}
        out.append(avg)
    return out


def loaders(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(64, 1, generator=g)
    train = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=8)
    val = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=16)
    return train, val


def fit(tmp_path, decay, start_step=0, epochs=3):
    torch.manual_seed(0)
    model, probe = Regression(), Probe()
    best = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val_loss", save_top_k=1)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[WeightEMA(decay, start_step), probe, best],
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    train, val = loaders()
    trainer.fit(model, train, val)
    return trainer, model, probe, val


def assert_same(got, expected):
    assert got.keys() == expected.keys()
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("decay,start_step", [(0.9, 0), (0.5, 4)])
def test_average_and_what_validation_sees_follow_the_hand_computation(tmp_path, decay, start_step):
    trainer, model, probe, _ = fit(tmp_path, decay, start_step)
    expected = hand_ema(probe.steps, decay, start_step)
    assert len(probe.steps) == 18  # 3 epochs of 6 batches
    # validation after each epoch runs with the average so far
    assert [n for _, n, _ in probe.evaluated] == [6, 12, 18]
    for _, n, seen in probe.evaluated:
        assert_same(seen, expected[n - 1])
    # after training the module holds the final average, not its last raw weights
    assert_same(weights(model), expected[-1])
    assert not torch.equal(expected[-1]["linear.weight"], probe.steps[-1]["linear.weight"])


def test_checkpoint_holds_the_average_and_evaluation_uses_it(tmp_path):
    trainer, model, probe, val = fit(tmp_path, decay=0.8)
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    expected = hand_ema(probe.steps, 0.8)
    best_step = int(ckpt["global_step"])
    assert_same(ckpt["state_dict"], expected[best_step - 1])
    assert_same(ckpt["current_model_state"], probe.steps[best_step - 1])
    # validate and test of the best checkpoint after fit: both run with its average, neither
    # with its raw weights nor with the average left in memory at the end of training
    probe.evaluated.clear()
    trainer.validate(model, val, ckpt_path="best", verbose=False)
    trainer.test(model, val, ckpt_path="best", verbose=False)
    assert [fn for fn, _, _ in probe.evaluated] == ["validate", "test"]
    for _, _, seen in probe.evaluated:
        assert_same(seen, ckpt["state_dict"])
    if best_step != len(probe.steps):
        assert not torch.equal(ckpt["state_dict"]["linear.weight"], expected[-1]["linear.weight"])


@pytest.mark.parametrize("override,key", [
    ("callbacks.ema.decay=1.0", "decay"), ("callbacks.ema.decay=0", "decay"),
    ("callbacks.ema.decay='0.9'", "decay"), ("callbacks.ema.start_step=-1", "start_step"),
    ("callbacks.ema.start_step=1.5", "start_step"), ("+callbacks.ema.every=2", "every"),
])
def test_bad_settings_are_config_errors(tmp_path, override, key):
    # checked once with the rest of the config, before any data is read
    with pytest.raises(ConfigError, match=rf"^callbacks\.ema\.{key}: "):
        validate(make_config(tmp_path, "callbacks=ema", override))


SHORT = ("+trainer.limit_train_batches=30",)  # 30 of the sample's 94 batches per epoch


def test_sample_run_with_ema_reports_the_scores_its_checkpoint_gives(tmp_path):
    run = tmp_path / "run"
    metrics = train(make_config(run, *TINY, *SHORT, "callbacks=ema", "callbacks.ema.decay=0.9"))
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    assert "current_model_state" in ckpt  # the raw weights kept beside the average
    differs = [k for k in ckpt["state_dict"]
               if not torch.equal(ckpt["state_dict"][k], ckpt["current_model_state"][k])]
    assert differs
    result = evaluate(eval_cfg(tmp_path / "eval", run / "checkpoints" / "best.ckpt"))
    for key, value in metrics["test"].items():
        assert result["test"][key] == pytest.approx(value, abs=1e-6), key


def test_resumed_run_continues_both_the_weights_and_their_average(tmp_path):
    def state(run):
        last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        return last["state_dict"], last["current_model_state"]

    ema = (*TINY, *SHORT, "callbacks=ema", "callbacks.ema.decay=0.9")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    reference = train(make_config(whole, *ema))
    train(make_config(parts, *ema, "trainer.max_epochs=2"))
    resumed = train(make_config(parts, *ema, "resume=true"))
    assert resumed["test"] == pytest.approx(reference["test"], abs=1e-6)
    for got, expected in zip(state(parts), state(whole), strict=True):
        assert_same(got, expected)
