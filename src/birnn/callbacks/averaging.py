"""A moving average of the weights, validated, checkpointed and tested in their place."""

from __future__ import annotations

from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class WeightEMA(WeightAveraging):
    """Keep an exponential moving average (EMA) of the weights and evaluate with it.

    After every optimiser step after `start_step`, ``avg = decay * avg + (1 - decay) * w``.
    Validation runs on the averaged weights, so the best checkpoint is chosen by them, and
    checkpoints hold them as their ``state_dict``: `evaluate.py`, `predict.py` and the test after
    training all score the averaged model. The raw weights travel in the checkpoint as well, so
    a resumed run continues both.

    Lightning's `WeightAveraging` does the bookkeeping (the averaged copy, swapping it in for
    validation, checkpoint contents, resuming); this adds two things to it:
      - one `torch._foreach` update for all tensors instead of a Python loop over them
        (`get_ema_multi_avg_fn`), which keeps the update small next to a training step;
      - evaluation outside `fit` (`trainer.validate/test(ckpt_path=...)` after training) scores
        the checkpoint it loaded. Lightning's callback would reload the checkpoint's raw weights
        for a test, and in validation swap in the average left in memory by the end of training
        (not the best checkpoint's).

    Args:
        decay: weight of the old average per step; the average spans about 1 / (1 - decay)
            steps (0.999: about a thousand).
        start_step: optimiser step (0-based) where averaging starts: up to it the average is
            the current weights, from the next step on it moves as above.

    Both are checked by the config schema (`birnn.config.trainer.EMASchema`).
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0):
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))  # updates after every step
        self.start_step = start_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step - 1 <= self.start_step and self._average_model is not None:
            # up to `start_step` the average is the weights themselves: restart it each step
            self._average_model.n_averaged.zero_()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    # evaluation outside fit: the loaded checkpoint's state_dict already is the average

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.state.fn == "fit":
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.state.fn == "fit":
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
