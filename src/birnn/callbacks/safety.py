"""Crash safety: atomic checkpoint files, a stop on a non-finite loss, a checkpoint on
SIGTERM, and RNG state carried in checkpoints so a resumed run continues the same stream."""

from __future__ import annotations

import logging
import os
import random
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from birnn.errors import BirnnError

log = logging.getLogger("birnn")


class NonFiniteLossError(BirnnError):
    """The training loss became NaN or infinite."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the same folder, flush it to disk, then
    rename it over the target: a process killed mid-write leaves the previous file intact."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed process
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RunSafety(Checkpoint):
    """Keep `last.ckpt` current and a run resumable.

    - writes `last.ckpt` at every epoch end and, when set, every `every_n_train_steps`
      training steps. It is a `Checkpoint`, which Lightning calls after the other callbacks:
      at an epoch end the best checkpoint and early stopping have seen the epoch's score
      before `last.ckpt` is written, so a resumed run knows the best score so far;
    - on SIGTERM (Lightning stops after the current batch) writes `last.ckpt` before exiting;
      a SIGTERM that arrives while a training run validates takes effect when the validation
      is complete (else the checkpoint would hold an epoch whose validation a resumed run
      skips, and early stopping and the best checkpoint would miss its score);
    - stops on a non-finite loss before it reaches the weights;
    - carries the RNG states and the number of batches already trained in the current epoch,
      so a run resumed mid-epoch continues with the batches it had not reached yet.

    Args:
        last_checkpoint: the run's `checkpoints/last.ckpt`.
        every_n_train_steps: also write it every N training steps (None: epoch ends only).
    """

    def __init__(self, last_checkpoint: str, every_n_train_steps: int | None = None):
        self.last_checkpoint = last_checkpoint
        self.every_n_train_steps = every_n_train_steps
        self._trainer = None
        # while a training run validates: Lightning's SIGTERM handler, and a signal held
        self._sigterm_handler = None
        self._held: tuple | None = None
        self._epoch_end_step: int | None = None  # global step of the last epoch-end save

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    def save(self, trainer) -> None:
        # the whole training state (optimizer, loops, callbacks), for an exact resume
        trainer.save_checkpoint(self.last_checkpoint, weights_only=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and trainer.global_step > 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self.save(trainer)
        self._epoch_end_step = trainer.global_step

    def on_before_backward(self, trainer, pl_module, loss):
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); stopped before the update. The last good "
                f"checkpoint is kept in {Path(self.last_checkpoint).parent}")

    def on_validation_start(self, trainer, pl_module):
        # Lightning stops a validation after the batch during which SIGTERM arrived, and a run
        # resumed from that point does not validate the epoch again; so hold the signal until
        # the validation is done (one pass over the validation split)
        if trainer.state.fn != "fit" or threading.current_thread() is not threading.main_thread():
            return
        handler = signal.getsignal(signal.SIGTERM)
        if not callable(handler):
            return
        self._sigterm_handler, self._held = handler, None

        def hold(signum, frame):
            self._held = self._held or (signum, frame)

        signal.signal(signal.SIGTERM, hold)

    def on_validation_end(self, trainer, pl_module):
        self._release_sigterm()

    def _release_sigterm(self) -> None:
        """Give SIGTERM back to Lightning's handler, and call it for a signal held meanwhile."""
        handler, self._sigterm_handler = self._sigterm_handler, None
        if handler is None:
            return
        signal.signal(signal.SIGTERM, handler)
        held, self._held = self._held, None
        if held:
            log.warning("SIGTERM arrived during validation; stopping now that it is done")
            handler(*held)

    def teardown(self, trainer, pl_module, stage):
        self._release_sigterm()

    def on_exception(self, trainer, pl_module, exception):
        self._release_sigterm()
        if isinstance(exception, SIGTERMException):
            # stopped at an epoch end (Lightning checks for SIGTERM after the epoch-end hooks):
            # keep the checkpoint written there, which a resumed run continues from exactly
            if trainer.global_step != self._epoch_end_step:
                self.save(trainer)
            log.warning("SIGTERM: saved %s at step %d; continue with resume=true",
                        self.last_checkpoint, trainer.global_step)

    def state_dict(self):
        # tensors and plain Python values only, so `torch.load(weights_only=True)` reads it
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        progress = self._trainer.fit_loop.epoch_loop.batch_progress if self._trainer else None
        batches = progress.current.completed if progress is not None else 0
        # at an epoch end the next epoch starts afresh; mid-epoch, skip what was trained
        epoch_done = self._trainer is not None and batches >= self._trainer.num_training_batches
        epoch = self._trainer.current_epoch if self._trainer else 0
        return {
            "epoch": epoch + 1 if epoch_done else epoch,  # where a resumed run continues
            "batches_in_epoch": 0 if epoch_done else batches,
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict):
        datamodule = getattr(self._trainer, "datamodule", None)
        if hasattr(datamodule, "resume_at") and "epoch" in state_dict:
            # restored before Lightning draws the first training iterator, which it does
            # before it moves to the next epoch: that iterator takes the epoch the run
            # continues in and leaves out the batches already trained on
            datamodule.resume_at = (state_dict["epoch"], state_dict["batches_in_epoch"])
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state_dict["python"])
