"""Dropout on sequences: standard (a mask per element) or locked (one mask per sequence and
feature, shared by all time steps: variational dropout, Gal & Ghahramani 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from birnn.config.encoder import DROPOUT_KINDS


class SequenceDropout(nn.Module):
    """Dropout of rate `p` and `kind` ``"standard"`` or ``"locked"``, active in training.

    Takes (B, T, W) sequences, or packed rows (N, W) with the sequence index of each row
    (`sequences`, (N,)) among `batch` sequences. `locked` needs one of those two to know
    which rows share a mask; any other input (pooled (B, W) vectors) takes standard dropout.
    """

    def __init__(self, p: float = 0.0, kind: str = "standard"):
        super().__init__()
        if kind not in DROPOUT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(DROPOUT_KINDS)}, got {kind!r}")
        self.p, self.kind = p, kind

    def forward(self, x: Tensor, sequences: Tensor | None = None,
                batch: int | None = None) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if self.kind == "locked" and (x.dim() == 3 or sequences is not None):
            return x * locked_dropout_mask(x, self.p, sequences, batch)
        return dropout(x, self.p, True)

    def extra_repr(self) -> str:
        return f"p={self.p}, kind={self.kind}"


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout, the function `F.dropout` computes: each element is zeroed with
    probability `p` and the rest are scaled by 1/(1-p).

    On CPU the mask comes from a uniform draw (`rand >= p`), which is faster than PyTorch's
    CPU `bernoulli_` that `F.dropout` uses (docs/performance.md). Other devices keep
    `F.dropout` (CUDA has a fused kernel).
    """
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training)
    keep = torch.rand(x.shape, device=x.device).ge_(p).mul_(1.0 / (1.0 - p))
    return x * keep.to(x.dtype)


def locked_dropout_mask(data: Tensor, p: float, seq: Tensor | None = None,
                        batch: int | None = None) -> Tensor:
    """A dropout mask (kept values scaled by 1/(1-p)) with one draw per sequence and feature,
    shared by all time steps (variational dropout).

    `data` is (B, T, W), or packed rows (N, W) whose sequence indices are `seq` (N,) among
    `batch` sequences; in the packed case the indices refer to the packed (sorted) order,
    which is all a mask needs.
    """
    rows = data.size(0) if data.dim() == 3 else batch
    keep = torch.rand(rows, data.size(-1), device=data.device).ge_(p).div_(1 - p)
    keep = keep.to(data.dtype)
    return keep.unsqueeze(1) if data.dim() == 3 else keep[seq]  # (B, 1, W) or (N, W)
