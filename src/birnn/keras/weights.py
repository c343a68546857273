"""Keras recurrent weights in PyTorch's layout.

Keras keeps one direction of an RNN layer as `kernel` (in, G*H), `recurrent_kernel` (H, G*H)
and `bias`, gate blocks side by side along the last axis; PyTorch keeps `weight_ih` (G*H, in),
`weight_hh` (G*H, H), `bias_ih` and `bias_hh` (G*H,), gate blocks stacked along the first
axis. So every matrix is transposed, and gate blocks are reordered where the orders differ:

| cell | Keras gates | PyTorch gates | biases |
|---|---|---|---|
| LSTM | i, f, c, o | i, f, g, o (same) | one bias -> `bias_ih`, `bias_hh` = 0 |
| GRU (`reset_after=True`) | z, r, h | r, z, n | `bias[0]` -> `bias_ih`, `bias[1]` -> `bias_hh` |
| SimpleRNN | one block | one block | one bias -> `bias_ih`, `bias_hh` = 0 |

A GRU with `reset_after=True` applies the reset gate to `W_hh h + b_hh`, as PyTorch's GRU
does; Keras' other GRU (`reset_after=False`) has no PyTorch equivalent and is refused before
this module is reached.
"""

from __future__ import annotations

import numpy as np
import torch

# PyTorch gate block k is Keras gate block ORDER[cell][k]
GATE_ORDER = {"lstm": (0, 1, 2, 3), "gru": (1, 0, 2), "rnn": (0,)}


def _reorder(blocks: np.ndarray, cell: str) -> np.ndarray:
    """(..., G*H) with Keras' gate order along the last axis -> PyTorch's gate order."""
    parts = np.split(blocks, len(GATE_ORDER[cell]), axis=-1)
    return np.concatenate([parts[k] for k in GATE_ORDER[cell]], axis=-1)


def direction_weights(cell: str, kernel: np.ndarray, recurrent_kernel: np.ndarray,
                      bias: np.ndarray) -> dict[str, torch.Tensor]:
    """One direction's Keras weights -> `{weight_ih, weight_hh, bias_ih, bias_hh}` tensors
    (float32) in PyTorch's layout, for `cell` lstm, gru (reset_after=True) or rnn."""
    weight_ih = _reorder(kernel, cell).T  # (G*H, in)
    weight_hh = _reorder(recurrent_kernel, cell).T  # (G*H, H)
    if cell == "gru":
        bias_ih, bias_hh = _reorder(bias[0], cell), _reorder(bias[1], cell)  # bias: (2, 3H)
    else:
        bias_ih, bias_hh = _reorder(bias, cell), np.zeros_like(bias)
    arrays = {"weight_ih": weight_ih, "weight_hh": weight_hh,
              "bias_ih": bias_ih, "bias_hh": bias_hh}
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            for k, v in arrays.items()}


def layer_state(prefix: str, cell: str, forward: tuple, backward: tuple) -> dict:
    """State-dict entries of one bidirectional PyTorch RNN layer under `prefix`
    (e.g. `encoder.layers.0.`) from the Keras (kernel, recurrent_kernel, bias) of each
    direction."""
    state = {}
    for suffix, arrays in (("_l0", forward), ("_l0_reverse", backward)):
        for name, tensor in direction_weights(cell, *arrays).items():
            state[f"{prefix}{name}{suffix}"] = tensor
    return state


def linear_state(prefix: str, kernel: np.ndarray, bias: np.ndarray) -> dict:
    """A Keras Dense (kernel (in, out), bias (out,)) -> `nn.Linear` entries under `prefix`."""
    return {f"{prefix}weight": torch.from_numpy(np.ascontiguousarray(kernel.T, np.float32)),
            f"{prefix}bias": torch.from_numpy(np.ascontiguousarray(bias, np.float32))}
