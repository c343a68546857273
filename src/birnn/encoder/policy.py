"""The one `auto` policy: how a stack runs a batch, chosen at each forward call.

`choose` turns the explicit options (`EncoderSchema`: ``impl``, ``ragged``, ``gru``,
``lstm``, ``directions``) and the situation (device, gradient mode, the layers' cells, the batch's
time steps, whether its lengths differ) into a `Plan` that the layers follow. Every choice
gives the same numbers; only speed differs. The measurements behind the ``auto`` rules are in
docs/performance.md, "How `auto` chooses":

- ``impl``: the fused multi-layer module on CUDA (one cuDNN call) for stacks it can express;
  layer by layer elsewhere.
- ``gru``: birnn's GRU recurrence on CPU, unless ``ragged="pack"``, where its C kernel could
  be built (`birnn.encoder.native`), in training and inference; without the kernel, in
  training or under bf16 autocast where oneDNN's matmul measures faster than the BLAS's
  (`birnn.encoder.gru.onednn_is_faster`); PyTorch's elsewhere.
- ``lstm``: birnn's LSTM recurrence on CPU, unless ``ragged="pack"`` or under bf16
  autocast, where its C loop runs (`birnn.encoder.lstm.loop_available`), in training and
  inference; PyTorch's elsewhere (``lstm="birnn"`` too: the loop is the only form it has).
- ``directions``: the two directions on two threads for GRU layers that PyTorch's
  recurrence runs, in training on CPU with two or more intra-op threads, for batches of at
  least `AUTO_CONCURRENT_MIN_STEPS` steps, unless ``ragged="pack"``; serial otherwise.
- ``ragged``: a batch of unequal lengths runs padded, reversed within lengths, on CPU in
  training or with an LSTM layer; packed otherwise. A full batch runs padded as is.
  birnn's recurrences and concurrent directions run padded only, so a stack using any of
  them reverses every layer (full batches too).

While the model is being exported or traced (`exporting`) the plan is the plain exportable
one, whatever the options: layer by layer, padded and reversed within lengths (no packing,
full batches included, so the graph takes any lengths), PyTorch's GRU and LSTM, serial
directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from birnn.config.encoder import EncoderSchema
from birnn.encoder import gru as gru_module
from birnn.encoder import lstm as lstm_module
from birnn.encoder import native

# How a layer runs its two directions (`Bidirectional.forward`).
JOINT = "joint"  # one bidirectional PyTorch call: on packed rows, or on a full batch
REVERSED = "reversed"  # two calls, padded, the backward one reversed within lengths
CONCURRENT = "concurrent"  # the same two calls on two threads
BIRNN_GRU = "birnn_gru"  # both directions in one loop of birnn's GRU recurrence
BIRNN_GRU_CONCURRENT = "birnn_gru_concurrent"  # birnn's GRU recurrence, a direction a thread
BIRNN_LSTM = "birnn_lstm"  # birnn's LSTM recurrence: the loop in C, a direction a thread
STRATEGIES = (JOINT, REVERSED, CONCURRENT, BIRNN_GRU, BIRNN_GRU_CONCURRENT, BIRNN_LSTM)

# Devices where `impl="auto"` takes the fused module, `ragged="auto"` may run padded, and
# `gru="auto"` may take birnn's recurrence.
AUTO_FUSED_DEVICES = frozenset({"cuda"})
AUTO_REVERSE_DEVICES = frozenset({"cpu"})
AUTO_BIRNN_GRU_DEVICES = frozenset({"cpu"})
# Devices where a layer's directions may run on two threads at all (`directions="concurrent"`
# too): elsewhere one op already fills the device.
CONCURRENT_DEVICES = frozenset({"cpu"})
# `directions="auto"`: the shortest batch (padded time steps) whose GRU layers train with
# their two directions on two threads (docs/performance.md)
AUTO_CONCURRENT_MIN_STEPS = 20


@dataclass(frozen=True)
class Plan:
    """How one forward call runs.

    Attributes:
        fused: the whole stack in one multi-layer call (`birnn.encoder.fused`).
        pack: the layers run on packed rows (a ragged batch).
        reverse: the layers run padded, backward directions reversed within lengths.
        layers: per layer, one of `STRATEGIES` (empty when fused).
    """

    fused: bool
    pack: bool
    reverse: bool
    layers: tuple[str, ...]

    @property
    def birnn_gru(self) -> bool:
        """Whether some layer runs birnn's GRU recurrence."""
        return BIRNN_GRU in self.layers or BIRNN_GRU_CONCURRENT in self.layers


def exporting() -> bool:
    """Whether the model is being exported or traced (ONNX, TorchScript, `torch.export`)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
            or (is_exporting is not None and is_exporting()))


def choose(options: EncoderSchema, device: torch.device, steps: int, ragged: bool,
           grad: bool | None = None, export: bool | None = None) -> Plan:
    """The plan for a batch of `steps` time steps on `device`.

    Args:
        options: the stack's options (their per-layer ``cells`` and ``fusable`` too).
        device: where the batch is.
        steps: the batch's padded length T.
        ragged: whether the sequences' lengths differ.
        grad: whether gradients are recorded; default: `torch.is_grad_enabled()`.
        export: whether the model is being exported; default: `exporting()`.
    """
    grad = torch.is_grad_enabled() if grad is None else grad
    cells, kind = options.cells, device.type
    if exporting() if export is None else export:
        return Plan(False, False, True, (REVERSED,) * len(cells))
    if options.impl == "fused" or (options.impl == "auto" and options.fusable
                                   and kind in AUTO_FUSED_DEVICES):
        return Plan(True, ragged, False, ())

    # with its C kernel birnn's recurrence is the faster in training and inference alike;
    # without it, as PyTorch ops, only where it saves a backward pass or runs bf16 matmuls
    birnn_gru = "gru" in cells and (options.gru == "birnn" or (
        options.gru == "auto" and kind in AUTO_BIRNN_GRU_DEVICES and options.ragged != "pack"
        and (native.gru_kernel() is not None
             or ((grad or _bf16_autocast(kind)) and gru_module.onednn_is_faster()))))
    birnn_lstm = "lstm" in cells and _birnn_lstm(options, kind)
    concurrent = _concurrent(options, kind, steps, grad, birnn_gru)
    layers = [BIRNN_LSTM if birnn_lstm and cell == "lstm"  # its C loop: a direction a thread
              else _strategy(on, birnn_gru and cell == "gru")
              for cell, on in zip(cells, concurrent, strict=True)]
    padded_only = any(s != JOINT for s in layers)
    reverse = padded_only or (ragged and _reverse(options, kind, grad))
    if reverse:
        layers = [REVERSED if s == JOINT else s for s in layers]
    return Plan(False, ragged and not reverse, reverse, tuple(layers))


def _strategy(concurrent: bool, birnn_gru: bool) -> str:
    # a layer's strategy before the padded/packed decision (JOINT may become REVERSED)
    if birnn_gru:
        return BIRNN_GRU_CONCURRENT if concurrent else BIRNN_GRU
    return CONCURRENT if concurrent else JOINT


def _concurrent(options: EncoderSchema, kind: str, steps: int, grad: bool,
                birnn_gru: bool) -> list[bool]:
    # per layer: two threads for its directions; `auto` gives them only to GRU layers that
    # PyTorch's recurrence runs (birnn's C loop gives each direction a thread of its own)
    serial = [False] * len(options.cells)
    if options.directions == "serial" or kind not in CONCURRENT_DEVICES or not grad:
        return serial
    if options.directions == "concurrent":
        return [True] * len(options.cells)
    if (birnn_gru or options.ragged == "pack" or torch.get_num_threads() < 2
            or steps < AUTO_CONCURRENT_MIN_STEPS):
        return serial
    return [cell == "gru" for cell in options.cells]


def _birnn_lstm(options: EncoderSchema, kind: str) -> bool:
    # birnn's LSTM recurrence (auto and birnn alike) wherever its C loop runs: CPU, fp32
    # matmuls, the kernel built and MKL in PyTorch's library (birnn.encoder.lstm; a batch of
    # another dtype falls back to PyTorch's LSTM at the layer), in training and inference
    if options.lstm == "torch" or options.ragged == "pack":
        return False
    return kind == "cpu" and not _bf16_autocast(kind) and lstm_module.loop_available()


def _bf16_autocast(kind: str) -> bool:
    # whether matmuls on this device run in bf16 (autocast)
    return torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16


def _reverse(options: EncoderSchema, kind: str, grad: bool) -> bool:
    # whether a ragged batch runs padded and reversed rather than packed
    if options.ragged != "auto":
        return options.ragged == "reverse"
    # padded wins in training and wherever an LSTM layer keeps oneDNN's kernel (which takes
    # no packed input); GRU/RNN-only inference runs faster packed
    return kind in AUTO_REVERSE_DEVICES and (grad or "lstm" in options.cells)
