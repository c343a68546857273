"""Which implementation birnn's `auto` options run, and how its GRU and LSTM recurrences
run here.

The benchmark times every implementation with explicit `BiRNN` options and only marks the one
`impl="auto"` would run, and the GRU and LSTM recurrences `gru="auto"` and `lstm="auto"`
would not. It asks the encoder
through `BiRNN.plan` (the `birnn.encoder.policy` plan a forward call follows), here alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from birnn import BiRNN
from birnn.encoder import gru as birnn_gru
from birnn.encoder import lstm as birnn_lstm
from birnn.encoder import native, policy


def _training_plan(input_size: int, hidden: int, cells: list[str], merge: str,
                   device: torch.device, steps: int, ragged: bool, impl: str) -> policy.Plan:
    """The plan a training step of this stack follows on `device` for a batch of `steps` time
    steps of unequal lengths (`ragged`) or not."""
    enc = BiRNN(input_size, hidden, cells, len(cells), merge, impl=impl)
    with torch.enable_grad():
        return enc.plan(device, steps, ragged)


def auto_impl(input_size: int, hidden: int, cells: list[str], merge: str,
              device: torch.device, steps: int, ragged: bool) -> str:
    """`"fused"` or `"layered"`: what `BiRNN(impl="auto")` runs for this stack in training."""
    plan = _training_plan(input_size, hidden, cells, merge, device, steps, ragged, "auto")
    return "fused" if plan.fused else "layered"


# the strategies that run birnn's own recurrence of each cell
OWN_RECURRENCE = {"gru": (policy.BIRNN_GRU, policy.BIRNN_GRU_CONCURRENT),
                  "lstm": (policy.BIRNN_LSTM,)}


def auto_recurrence(cell: str, input_size: int, hidden: int, cells: list[str], merge: str,
                    device: torch.device, steps: int, ragged: bool) -> str:
    """`"birnn"` or `"torch"`: the recurrence of the `cell` layers (`"gru"`, `"lstm"`) that the
    layer-by-layer stack with `gru="auto"` and `lstm="auto"` runs in training."""
    plan = _training_plan(input_size, hidden, cells, merge, device, steps, ragged, "layered")
    return "birnn" if set(plan.layers) & set(OWN_RECURRENCE[cell]) else "torch"


def lstm_runtime() -> dict[str, str]:
    """How birnn's LSTM recurrence runs on this CPU."""
    loop = birnn_lstm.loop_available()
    return {"lstm_loop": "C loop with MKL's sgemm_, a direction per thread" if loop
            else "none (PyTorch's LSTM runs)"}


def gru_runtime() -> dict[str, str]:
    """How birnn's GRU recurrence runs on this CPU: its matmuls and its element-wise steps."""
    matmul = "oneDNN" if birnn_gru.onednn_is_faster() else "torch.matmul"
    if native.blas() is not None:
        matmul = ("MKL's sgemm_ (fp32: the whole loop in the C kernel, a direction per "
                  f"thread; bf16: {matmul})")
    return {"gru_matmul": matmul,
            "gru_steps": "C kernel" if native.gru_kernel() is not None else "PyTorch ops"}


def onednn_matmul() -> Callable[[Tensor, Tensor], Tensor] | None:
    """`a @ b` through oneDNN (the matmul birnn's GRU can use on CPU), or None without it."""
    if not birnn_gru.ONEDNN:
        return None
    return lambda a, b: birnn_gru.onednn_linear(a, b.t())
