"""Training throughput and a one-line summary per epoch."""

from __future__ import annotations

import statistics
import time

import lightning as L


class TrainingReport(L.Callback):
    """Measure training tokens/s and print one line per epoch with the validation scores.

    Tokens/s counts the real (unpadded) tokens of the epoch's training batches over the time
    from the first batch's start to the last batch's end, so it includes data loading, the
    forward and backward passes and the optimiser, and excludes validation.

    Args:
        monitor: the validation metric shown first on each line.
    """

    def __init__(self, monitor: str = "val/f1"):
        self.monitor = monitor
        self.history: list[float] = []  # tokens/s per completed epoch
        self._tokens = 0
        self._start = self._end = None
        self._validated = False

    def on_train_epoch_start(self, trainer, pl_module):
        self._tokens, self._start, self._end = 0, None, None
        self._validated = False

    def on_validation_end(self, trainer, pl_module):
        # an epoch cut short (trainer.max_steps, max_time) ends without validating, and the
        # trainer's metrics still hold the previous epoch's scores: they are not this epoch's
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._tokens += int(batch["lengths"].sum())
        self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if self._start is None or self._end <= self._start:
            return
        rate = self._tokens / (self._end - self._start)
        self.history.append(rate)
        pl_module.log("train/tokens_per_s", rate)
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch:>3}"]
        if "train/loss" in metrics:
            parts.append(f"train loss {float(metrics['train/loss']):.4f}")
        shown = [self.monitor] + [
            k for k in ("val/precision", "val/recall", "val/acc", "val/macro_f1")
            if k != self.monitor
        ]
        if self._validated:
            parts += [f"{k} {float(metrics[k]):.4f}" for k in shown if k in metrics]
        parts.append(f"{rate:,.0f} tokens/s")
        message = " | ".join(parts)
        bar = trainer.progress_bar_callback
        if trainer.is_global_zero:
            bar.print(message) if bar is not None else print(message)

    @property
    def tokens_per_s(self) -> float | None:
        """Median training tokens/s over the epochs (the first one included)."""
        return statistics.median(self.history) if self.history else None
