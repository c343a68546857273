"""Crash safety: atomic checkpoint files, a stop on a non-finite loss, a checkpoint on
SIGTERM, and RNG state carried in checkpoints so a resumed run continues the same stream."""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RunSafety(L.Callback):
    """Stop on a non-finite loss before it reaches the weights; save `last.ckpt` when SIGTERM
    arrives (Lightning stops after the current batch); keep RNG states in checkpoints.

    Args:
        last_checkpoint: where the SIGTERM checkpoint goes (the run's `checkpoints/last.ckpt`).
    """

    def __init__(self, last_checkpoint: str):
        self.last_checkpoint = last_checkpoint

    def on_before_backward(self, trainer, pl_module, loss):
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); stopped before the update. The last good "
                f"checkpoint is kept in {Path(self.last_checkpoint).parent}")

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.last_checkpoint)
            log.warning("SIGTERM: saved %s at step %d; continue with resume=true",
                        self.last_checkpoint, trainer.global_step)

    def state_dict(self):
        # tensors and plain Python values only, so `torch.load(weights_only=True)` reads it
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict):
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state_dict["python"])
