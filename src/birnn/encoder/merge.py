"""Keras' merge modes: how a bidirectional layer combines its two directions' outputs."""

from __future__ import annotations

import torch
from torch import Tensor

from birnn.config.encoder import MERGES
from birnn.errors import ConfigError

Merged = Tensor | tuple[Tensor, Tensor]


def merge_pair(forward: Tensor, backward: Tensor, mode: str) -> Merged:
    """Merge forward and backward outputs (same shape, last dim H) as Keras does.

    Returns a tensor of width 2H (`concat`) or H (`sum`, `mul`, `ave`), or the pair itself
    (`none`).
    """
    if mode == "concat":
        return torch.cat([forward, backward], dim=-1)  # (..., 2H)
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    if mode == "ave":
        return (forward + backward) * 0.5
    if mode == "none":
        return forward, backward
    raise ConfigError(f"encoder.merge: must be one of {', '.join(MERGES)}, got {mode!r}")


def output_width(hidden_size: int, mode: str) -> int:
    """The width of a layer's merged output (of each tensor, for `none`)."""
    return 2 * hidden_size if mode == "concat" else hidden_size
