"""A stack of bidirectional RNN layers with a Keras-style merge after every layer.

Each layer runs a forward and a backward RNN over its input and merges the two outputs
(`concat`, `sum`, `mul`, `ave`, or `none` on the last layer), exactly as stacking Keras
`Bidirectional(..., merge_mode=...)` layers does. The merged sequence is the next layer's input.

Variable-length batches are exact: the backward direction of each sequence starts at its own
last token, outputs are zero at padding, and a sequence's outputs do not depend on the rest of
its batch. Two strategies give that (``ragged``):

- ``pack``: the input is packed once, every layer runs on the packed rows (PyTorch's
  ``PackedSequence``), the merge is applied to the packed rows, and the result is padded once
  at the end. On CUDA, cuDNN runs packed input natively.
- ``reverse``: every layer runs on the padded tensor. The forward direction reads each
  sequence's real tokens first and the padding after them, so its outputs at real tokens are
  exact; the backward direction runs forward over each sequence reversed *within its length*
  (padding stays at the end) and its outputs are reversed back. On CPU this keeps PyTorch's
  oneDNN LSTM kernel (which does not take packed input) and bf16 autocast (which does not
  cover the packed call): 2.2-3.2x the packed training speed for 2-layer LSTM stacks with
  bucketed lengths on 2 cores (``make bench``, which runs ``scripts/benchmark.py --ragged``).
  Padding positions are computed and then zeroed, so it pays off when batches are bucketed
  by length (the data module's default: about 3% padding on CoNLL-2003).

``ragged="auto"`` takes ``reverse`` on CPU and ``pack`` elsewhere (``AUTO_REVERSE_DEVICES``),
except for inference (no gradients) of a CPU stack without LSTM layers, which packs.
Batches whose sequences all have the full length take neither: they run padded as they are.

GRU layers (``gru``) run with PyTorch's recurrence or with birnn's own (`birnn.encoder.gru`:
both directions in one loop, each step's element-wise part in a C kernel, a hand-written
backward pass, oneDNN matmuls where faster). With the kernel it trained GRU stacks 1.1-1.2x
(fp32) and 1.3-1.4x (bf16) faster than PyTorch's on an Intel Xeon (``make bench``); without
it, as PyTorch ops, 1.2-1.5x faster in fp32 on a CPU whose BLAS is slower than oneDNN (an AMD
EPYC) but 0.8-0.95x as fast on the Xeon. So ``gru="auto"`` takes it on CPU where the kernel
could be built (`birnn.encoder.native`) or a probe finds oneDNN's matmul clearly faster
(`gru.onednn_is_faster`).
birnn's runs padded batches only, so a stack with a GRU layer takes the ``reverse`` strategy
whenever it uses it.

``directions="concurrent"`` trains the two directions of each layer at the same time on two
threads on CPU, forward and backward (`birnn.encoder.concurrent`, which has the measurements):
it helped GRU stacks over long sentences and slowed LSTM stacks over short ones. So
``directions="auto"`` (the default) takes it only for GRU layers, in training on CPU with two
or more intra-op threads, for batches of at least ``AUTO_CONCURRENT_MIN_STEPS`` time steps;
other layers and batches run serial. A stack running any layer concurrently takes the
``reverse`` strategy (full batches included). Layers that birnn's GRU recurrence runs are never
concurrent (it already advances both directions in one loop).

Two implementations compute the same function with the same parameters:

- ``layered``: one single-layer bidirectional ``nn.LSTM/GRU/RNN`` per layer, merge in between.
  Works for every stack.
- ``fused``: one ``nn.LSTM/GRU/RNN(num_layers=L, bidirectional=True)`` call (one cuDNN kernel
  on GPU). Only for stacks that module can express: one cell type and width, and `concat`
  between layers (the last layer may be `concat` or `none`).

The parameters always live in the per-layer modules (so checkpoints do not depend on the
implementation); the fused module is a view that shares those very `Parameter` objects.
``impl="auto"`` picks per call from the input's device; see ``AUTO_FUSED_DEVICES``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from birnn.encoder import gru as gru_module
from birnn.encoder import native
from birnn.encoder.concurrent import two_directions
from birnn.encoder.gru import GRURecurrence, Linear
from birnn.errors import ConfigError

CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
MERGES = ("concat", "sum", "mul", "ave", "none")
IMPLS = ("auto", "fused", "layered")
RAGGED = ("auto", "pack", "reverse")
GRUS = ("auto", "torch", "birnn")
DIRECTIONS = ("auto", "serial", "concurrent")
INITS = ("default", "orthogonal")
DROPOUT_KINDS = ("standard", "locked")

# Devices on which `impl="auto"` takes the fused module when the stack allows it. On CPU the
# layer-by-layer stack measured faster than PyTorch's multi-layer module (see the README's
# Performance section and scripts/benchmark.py); on CUDA the fused call is one cuDNN kernel.
AUTO_FUSED_DEVICES = frozenset({"cuda"})
# Devices on which `ragged="auto"` runs variable-length batches padded, with the backward
# direction reversed within each length, instead of packed (see the module docstring).
AUTO_REVERSE_DEVICES = frozenset({"cpu"})
# Devices on which `gru="auto"` runs GRU layers with `birnn.encoder.gru`'s recurrence (where
# its C kernel could be built, or oneDNN's matmul measures faster than the BLAS's).
AUTO_BIRNN_GRU_DEVICES = frozenset({"cpu"})
# `directions="auto"`: the shortest batch (padded time steps) whose GRU layers train with their
# two directions on two threads. Training steps of a 2-layer GRU stack (B=32, H=200, 208
# inputs; 2 vCPUs, Intel Xeon), concurrent over serial, concat and sum: T=14: fp32 0.86-0.95x,
# bf16 1.02-1.05x; T=20: fp32 0.99-1.00x, bf16 1.14-1.25x; T=30: fp32 1.08-1.23x, bf16
# 1.37-1.39x (`scripts/benchmark.py --cells gru --layers 2 --hidden 200 --input 208 --seq T`).
AUTO_CONCURRENT_MIN_STEPS = 20

# The functional RNN ops behind nn.LSTM/GRU/RNN, called with one direction's weights.
_RNN_OPS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn": torch._VF.rnn_tanh}

Merged = Tensor | tuple[Tensor, Tensor]


def merge_pair(forward: Tensor, backward: Tensor, mode: str) -> Merged:
    """Merge forward and backward outputs (same shape, last dim H) as Keras does.

    Returns a tensor of width 2H (`concat`) or H (`sum`, `mul`, `ave`), or the pair itself
    (`none`).
    """
    if mode == "concat":
        return torch.cat([forward, backward], dim=-1)
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    if mode == "ave":
        return (forward + backward) * 0.5
    if mode == "none":
        return forward, backward
    raise ConfigError(f"merge: unknown mode {mode!r} (valid: {', '.join(MERGES)})")


def _per_layer(name: str, value, num_layers: int) -> list:
    """Expand one value, or check a per-layer list, to `num_layers` entries."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [value] * num_layers
    values = list(value)
    if len(values) != num_layers:
        raise ConfigError(
            f"{name}: {len(values)} entries {values} but the stack has {num_layers} layers "
            "(give one value for all layers, or one per layer)"
        )
    return values


def _list_length(value) -> int | None:
    if isinstance(value, str) or not isinstance(value, Sequence):
        return None
    return len(value)


class BiRNN(nn.Module):
    """Stacked bidirectional RNN with a merge after every layer.

    Args:
        input_size: width of the input features.
        hidden_size: hidden units per direction; one int, or a list with one entry per layer.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh); one name or a list per layer.
        num_layers: number of layers. Default: the length of any per-layer list, else 1.
        merge: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or ``"none"``; one mode or a list
            per layer. ``"none"`` is allowed on the last layer only.
        dropout: dropout on each layer's merged output before the next layer (not after the
            last layer, like ``nn.LSTM``'s ``dropout``).
        impl: ``"auto"``, ``"fused"`` or ``"layered"`` (see the module docstring).
        ragged: how the layer-by-layer stack runs a batch of unequal lengths: ``"auto"``,
            ``"pack"`` or ``"reverse"`` (see the module docstring). Same outputs either way;
            the fused module always packs.
        gru: the recurrence of GRU layers in the layer-by-layer stack: ``"torch"``
            (``nn.GRU``'s), ``"birnn"`` (`birnn.encoder.gru`: both directions in one loop, a
            hand-written backward pass, each step's element-wise part in a C kernel, oneDNN
            matmuls where faster; it runs the batch padded, as ``ragged="reverse"`` does), or
            ``"auto"``: ``birnn`` on CPU (``AUTO_BIRNN_GRU_DEVICES``) where its C kernel
            could be built (`birnn.encoder.native`) or oneDNN's matmul measures faster than
            the BLAS's (`birnn.encoder.gru.onednn_is_faster`), unless ``ragged="pack"``;
            ``torch`` elsewhere. Same outputs either way.
        directions: how the layer-by-layer stack runs the two directions of a layer while
            training on CPU: ``"serial"`` (one after the other, each op on all intra-op
            threads), ``"concurrent"`` (on two threads with half of the intra-op threads
            each, in the forward and the backward pass; padded, as ``ragged="reverse"``
            runs), or ``"auto"``: concurrent for GRU layers of batches of at least
            ``AUTO_CONCURRENT_MIN_STEPS`` steps when PyTorch has two or more threads (and
            ``ragged`` is not ``"pack"``), serial otherwise. Inference and other devices run
            serial. Same outputs either way.
        residual: add each layer's input to its merged output wherever the two have the same
            width (layers after the first; e.g. every layer of a ``sum`` stack of equal width,
            or a ``concat`` stack from the second layer on). An error when no layer qualifies.
        dropout_kind: ``"standard"`` (a new mask per token) or ``"locked"`` (one mask per
            sequence, shared by all its time steps: variational dropout, Gal & Ghahramani).
        init: ``"default"`` (PyTorch's uniform init) or ``"orthogonal"``: an orthogonal matrix
            per gate block of the recurrent weights, Xavier-uniform input weights, zero biases.
        forget_bias: LSTM layers only: set the forget gate's input bias to this value (and its
            recurrent bias to 0), e.g. 1.0 as in Jozefowicz et al. 2015; ``None`` leaves it.

    Attributes:
        output_size: width of the output per token: 2H for ``concat``, H for the other merges;
            for ``none``, the width of each of the two returned tensors.
        fusable: whether one multi-layer PyTorch module can compute this stack.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int | Sequence[int] = 128,
        cell: str | Sequence[str] = "lstm",
        num_layers: int | None = None,
        merge: str | Sequence[str] = "concat",
        dropout: float = 0.0,
        impl: str = "auto",
        residual: bool = False,
        dropout_kind: str = "standard",
        init: str = "default",
        forget_bias: float | None = None,
        ragged: str = "auto",
        gru: str = "auto",
        directions: str = "auto",
    ):
        super().__init__()
        lengths = {n for n in map(_list_length, (hidden_size, cell, merge)) if n is not None}
        if num_layers is None:
            num_layers = max(lengths) if lengths else 1
        check_int("num_layers", num_layers, minimum=1)
        check_int("input_size", input_size, minimum=1)
        self.cells = [str(c).lower() for c in _per_layer("cell", cell, num_layers)]
        self.hidden_sizes = _per_layer("hidden_size", hidden_size, num_layers)
        self.merges = [str(m).lower() for m in _per_layer("merge", merge, num_layers)]
        for c in self.cells:
            if c not in CELLS:
                raise ConfigError(f"cell: unknown cell {c!r} (valid: {', '.join(CELLS)})")
        for m in self.merges:
            if m not in MERGES:
                raise ConfigError(f"merge: unknown mode {m!r} (valid: {', '.join(MERGES)})")
        for h in self.hidden_sizes:
            check_int("hidden_size", h, minimum=1)
        if "none" in self.merges[:-1]:
            raise ConfigError(
                f"merge: 'none' is only allowed on the last layer (got {self.merges}): the "
                "next layer cannot take an unmerged (forward, backward) pair as input"
            )
        check_probability("dropout", dropout)
        if impl not in IMPLS:
            raise ConfigError(f"impl: unknown {impl!r} (valid: {', '.join(IMPLS)})")
        if ragged not in RAGGED:
            raise ConfigError(f"ragged: unknown {ragged!r} (valid: {', '.join(RAGGED)})")
        if gru not in GRUS:
            raise ConfigError(f"gru: unknown {gru!r} (valid: {', '.join(GRUS)})")
        if directions not in DIRECTIONS:
            raise ConfigError(
                f"directions: unknown {directions!r} (valid: {', '.join(DIRECTIONS)})")
        if directions == "concurrent" and ragged == "pack":
            raise ConfigError("directions: 'concurrent' runs batches padded, which "
                              "ragged='pack' rules out; use ragged=auto or ragged=reverse")
        if gru == "birnn" and ragged == "pack":
            raise ConfigError("gru: 'birnn' runs batches padded, which ragged='pack' rules out; "
                              "use ragged=auto or ragged=reverse, or gru=torch")
        if dropout_kind not in DROPOUT_KINDS:
            raise ConfigError(
                f"dropout_kind: unknown {dropout_kind!r} (valid: {', '.join(DROPOUT_KINDS)})")
        if init not in INITS:
            raise ConfigError(f"init: unknown {init!r} (valid: {', '.join(INITS)})")
        if forget_bias is not None and (isinstance(forget_bias, bool)
                                        or not isinstance(forget_bias, int | float)
                                        or not math.isfinite(forget_bias)):
            raise ConfigError(f"forget_bias: must be a finite number or null, got {forget_bias!r}")
        if not isinstance(residual, bool):
            raise ConfigError(f"residual: must be true or false, got {residual!r}")

        self.input_size = input_size
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.impl = impl
        self.ragged = ragged
        self.gru = gru
        self.directions = directions

        self.dropout_kind = dropout_kind

        self.layers = nn.ModuleList()
        self.residuals: list[bool] = []  # per layer: whether its input is added to its output
        width = input_size
        for k, (c, h, m) in enumerate(zip(self.cells, self.hidden_sizes, self.merges,
                                          strict=True)):
            self.layers.append(CELLS[c](width, h, batch_first=True, bidirectional=True))
            out_width = 2 * h if m == "concat" else h
            self.residuals.append(residual and k > 0 and m != "none" and out_width == width)
            width = out_width
        self.output_size = width
        if residual and not any(self.residuals):
            raise ConfigError(
                f"residual: no layer's input has its output's width (hidden_size="
                f"{self.hidden_sizes}, merge={self.merges}); a residual connection needs "
                "equal widths, e.g. two or more layers of one width merged by sum/ave/mul")
        if init == "orthogonal":
            self._init_orthogonal()
        if forget_bias is not None:
            self._set_forget_bias(float(forget_bias))
        self.init, self.forget_bias = init, forget_bias

        self.fusable = (
            not any(self.residuals)
            and dropout_kind == "standard"
            and len(set(self.cells)) == 1
            and len(set(self.hidden_sizes)) == 1
            and all(m == "concat" for m in self.merges[:-1])
            and self.merges[-1] in ("concat", "none")
        )
        if impl == "fused" and not self.fusable:
            raise ConfigError(
                "impl: 'fused' needs one cell type and width for all layers, 'concat' "
                "between layers, no residual and standard dropout (got cell="
                f"{self.cells}, hidden_size={self.hidden_sizes}, merge={self.merges}, "
                f"residual={residual}, dropout_kind={dropout_kind}); use impl=auto or "
                "impl=layered"
            )
        # Kept out of the module tree (plain attribute) so that parameters and state_dict keys
        # come from `self.layers` only; it shares their Parameter objects.
        self.__dict__["_fused"] = self._build_fused() if self.fusable else None
        self._fused_key = None

    # ------------------------------------------------------------------ construction helpers

    def _init_orthogonal(self) -> None:
        for layer in self.layers:
            gates = layer.weight_hh_l0.size(0) // layer.hidden_size
            for name, p in layer.named_parameters():
                if name.startswith("weight_hh"):
                    for block in p.data.chunk(gates, 0):  # one (H, H) block per gate
                        nn.init.orthogonal_(block)
                elif name.startswith("weight_ih"):
                    for block in p.data.chunk(gates, 0):
                        nn.init.xavier_uniform_(block)
                else:
                    nn.init.zeros_(p)

    def _set_forget_bias(self, value: float) -> None:
        # LSTM gate order in PyTorch: input, forget, cell, output
        for layer, cell in zip(self.layers, self.cells, strict=True):
            if cell != "lstm":
                continue
            h = layer.hidden_size
            for name, p in layer.named_parameters():
                if name.startswith("bias_ih"):
                    p.data[h:2 * h].fill_(value)
                elif name.startswith("bias_hh"):
                    p.data[h:2 * h].zero_()

    def _build_fused(self) -> nn.RNNBase:
        cls = CELLS[self.cells[0]]
        return cls(
            self.input_size,
            self.hidden_sizes[0],
            num_layers=self.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=self.dropout if self.num_layers > 1 else 0.0,
        )

    def use_fused(self, device: torch.device) -> bool:
        """Whether a forward pass on `device` takes the fused module."""
        if self.impl == "auto":
            return self.fusable and device.type in AUTO_FUSED_DEVICES
        return self.impl == "fused"

    def use_reverse(self, device: torch.device) -> bool:
        """Whether the layer-by-layer stack runs a ragged batch on `device` by reversal."""
        if self.ragged != "auto":
            return self.ragged == "reverse"
        if device.type not in AUTO_REVERSE_DEVICES:
            return False
        # Without gradients and without an LSTM layer, PyTorch's packed GRU/RNN measured
        # faster than two padded calls (bf16 GRU inference 1.4x, fp32 1.1x); with gradients,
        # or with an LSTM layer (oneDNN), the padded run is faster (scripts/benchmark.py).
        return torch.is_grad_enabled() or "lstm" in self.cells

    def use_birnn_gru(self, device: torch.device) -> bool:
        """Whether the layer-by-layer stack runs its GRU layers with `birnn.encoder.gru`."""
        if "gru" not in self.cells or self.gru == "torch":
            return False
        if self.gru == "birnn":
            return True
        # an explicit ragged="pack" keeps PyTorch's GRU, which takes packed batches; without
        # birnn's C kernel, and where oneDNN's matmul is no faster than the BLAS's, PyTorch's
        # GRU is the faster (module doc)
        return (device.type in AUTO_BIRNN_GRU_DEVICES and self.ragged != "pack"
                and (native.gru_kernel() is not None or gru_module.onednn_is_faster()))

    def use_concurrent(self, device: torch.device, steps: int) -> list[bool]:
        """Per layer, whether the layer-by-layer stack now trains its two directions on two
        threads, for a batch of `steps` time steps (GRU layers that birnn's recurrence runs
        are left out by the caller)."""
        serial = [False] * self.num_layers
        if (self.directions == "serial" or device.type != "cpu"
                or not torch.is_grad_enabled()):
            return serial
        if self.directions == "concurrent":
            return [True] * self.num_layers
        if (self.ragged == "pack" or torch.get_num_threads() < 2
                or steps < AUTO_CONCURRENT_MIN_STEPS):
            return serial
        return [cell == "gru" for cell in self.cells]

    def _fused_module(self) -> nn.RNNBase:
        """The fused module, pointing at the current per-layer parameters.

        Parameters are re-linked whenever they were replaced (`load_state_dict(assign=True)`),
        moved or cast, so the fused call never runs on stale weights; the fused module also
        follows this module's train/eval mode (it is outside the module tree).
        """
        fused = self._fused
        fused.train(self.training)
        params = [(k, name, p) for k, layer in enumerate(self.layers)
                  for name, p in layer.named_parameters()]
        def key():
            first = params[0][2]
            return tuple(id(p) for _, _, p in params), first.device, first.dtype, first.data_ptr()

        if key() != self._fused_key:
            for k, name, param in params:
                # per-layer module names end in "_l0" or "_l0_reverse"
                setattr(fused, name.replace("_l0", f"_l{k}"), param)
            fused._init_flat_weights()  # on CUDA: cuDNN packs the weights into one buffer
            self._fused_key = key()  # after packing, which moves the data
        return fused

    # ----------------------------------------------------------------------------- forward

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Merged, Merged]:
        """Run the stack.

        Args:
            x: (B, T, input_size), batch first, padded after each sequence's end.
            lengths: (B,) number of real tokens per sequence, each in [1, T]. Default: all T.

        Returns:
            outputs: (B, T, output_size) merged outputs of the last layer, zero at padding;
                for ``none`` a pair of (B, T, H) tensors (forward, backward).
            final: (B, output_size) the last layer's forward state at each sequence's last
                token merged with its backward state at the first token (the hidden state `h`
                for LSTM); a pair for ``none``.
        """
        if x.dim() != 3 or x.size(-1) != self.input_size:
            raise ValueError(
                f"BiRNN expects input of shape (B, T, {self.input_size}), got {tuple(x.shape)}"
            )
        batch, total = x.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.int64)
        lengths = lengths.to("cpu", torch.int64)
        if lengths.shape != (batch,) or (lengths < 1).any() or (lengths > total).any():
            raise ValueError(
                f"lengths must be {batch} values in [1, {total}], got {lengths.tolist()}"
            )
        ragged = not bool((lengths == total).all())
        fused = self.use_fused(x.device)
        birnn_gru = not fused and self.use_birnn_gru(x.device)
        concurrent = [not fused and on and not (birnn_gru and cell == "gru")
                      for on, cell in zip(self.use_concurrent(x.device, total), self.cells,
                                          strict=True)]
        # birnn's GRU and concurrent directions run padded (full batches too): the reversal
        # strategy for every layer
        reverse = not fused and (birnn_gru or any(concurrent)
                                 or (ragged and self.use_reverse(x.device)))
        # Pack only when lengths differ and the reversal strategy is not taken: a full batch
        # runs on the padded tensor directly (same numbers; PyTorch's CPU GRU trains markedly
        # slower on packed input).
        packed = None
        if ragged and not reverse:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)

        def run(module: nn.RNNBase, data: Tensor) -> tuple[Tensor, Tensor]:
            # data: packed rows (N, W) with N = sum(lengths), or (B, T, W) when unpacked
            out, state = module(data if packed is None else packed._replace(data=data))
            h_n = state[0] if isinstance(state, tuple) else state  # (2 * layers, B, H)
            return (out if packed is None else out.data), h_n

        data = x if packed is None else packed.data
        locked = self.dropout_kind == "locked" and self.training and self.dropout > 0
        seq = index = None
        if locked and packed is not None:
            # row -> sequence index: packed rows are time-major over the sorted sequences
            sizes = packed.batch_sizes
            starts = torch.cumsum(sizes, 0) - sizes
            seq = (torch.arange(int(sizes.sum())) - starts.repeat_interleave(sizes)).to(x.device)
        if reverse:
            # position t of sequence b reads position lengths[b] - 1 - t; padding stays put
            steps = torch.arange(total)
            source = lengths.unsqueeze(1) - 1 - steps
            source = torch.where(source >= 0, source, steps)
            index = (source + total * torch.arange(batch).unsqueeze(1)).reshape(-1).to(x.device)
        if fused:
            data, h_n = run(self._fused_module(), data)  # (..., 2H)
            hidden = self.hidden_sizes[-1]
            if self.merges[-1] == "none":
                data = (data[..., :hidden], data[..., hidden:])
        else:
            for k, layer in enumerate(self.layers):
                if k > 0 and locked:
                    data = data * locked_dropout_mask(data, self.dropout, seq, batch)
                elif k > 0 and self.dropout > 0:
                    data = dropout(data, self.dropout, self.training)
                if reverse and birnn_gru and self.cells[k] == "gru":
                    forward, backward = bigru(layer, data, index)
                elif concurrent[k]:
                    forward, backward = concurrent_pair(layer, self.cells[k], data, index)
                elif reverse:
                    forward = run_direction(layer, self.cells[k], data, reverse=False)
                    backward = ReverseWithin.apply(run_direction(
                        layer, self.cells[k], ReverseWithin.apply(data, index), reverse=True),
                        index)
                else:
                    # (..., 2H), row-wise, so the merge works on packed rows too
                    out, h_n = run(layer, data)
                    forward, backward = out.split(self.hidden_sizes[k], dim=-1)
                if self.merges[k] == "concat" and not reverse:
                    merged = out  # the module's output already is [forward ; backward]
                else:
                    merged = merge_pair(forward, backward, self.merges[k])
                data = merged + data if self.residuals[k] else merged
        if reverse:
            # the forward output at each last token, the backward output at the first token
            last = (lengths - 1).to(x.device)
            final = merge_pair(forward[torch.arange(batch, device=x.device), last],
                               backward[:, 0], self.merges[-1])
            padding = (torch.arange(total) >= lengths.unsqueeze(1)).unsqueeze(-1).to(x.device)
            if isinstance(data, tuple):
                return tuple(d.masked_fill(padding, 0) for d in data), final
            return data.masked_fill(padding, 0), final
        # the last layer's forward state at each last token, backward state at the first token
        final = merge_pair(h_n[-2], h_n[-1], self.merges[-1])
        if packed is None:
            return data, final
        if isinstance(data, tuple):
            return tuple(self._pad(packed, d, total) for d in data), final
        return self._pad(packed, data, total), final

    @staticmethod
    def _pad(packed: PackedSequence, data: Tensor, total: int) -> Tensor:
        # packed rows (N, W) -> (B, T, W) in the caller's batch order, zeros after each end
        return pad_packed_sequence(
            packed._replace(data=data), batch_first=True, total_length=total
        )[0]

    def extra_repr(self) -> str:
        extra = ""
        if any(self.residuals):
            extra += f", residual={self.residuals}"
        if self.dropout_kind != "standard":
            extra += f", dropout_kind={self.dropout_kind}"
        if "gru" in self.cells:
            extra += f", gru={self.gru}"
        if self.directions != "auto":
            extra += f", directions={self.directions}"
        return (
            f"cells={self.cells}, hidden={self.hidden_sizes}, merges={self.merges}, "
            f"dropout={self.dropout}, impl={self.impl}, output_size={self.output_size}{extra}"
        )


def run_direction(layer: nn.RNNBase, cell: str, data: Tensor, reverse: bool) -> Tensor:
    """One direction of a single-layer bidirectional `layer` over padded `data` (B, T, W),
    from t = 0 up, with a zero initial state: outputs (B, T, H).

    Calls the functional op behind `nn.LSTM/GRU/RNN` (the module calls the same one), so on
    CPU an LSTM takes the oneDNN kernel and autocast applies as it does to the module.
    """
    return direction(cell, data, direction_weights(layer, reverse), layer.training)


def direction_weights(layer: nn.RNNBase, reverse: bool) -> list[Tensor]:
    """`[weight_ih, weight_hh, bias_ih, bias_hh]` of one direction of a single-layer
    bidirectional `layer`."""
    suffix = "_l0_reverse" if reverse else "_l0"
    return [getattr(layer, name + suffix)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def direction(cell: str, data: Tensor, weights: list[Tensor], training: bool) -> Tensor:
    """One direction of a `cell` layer with `[weight_ih, weight_hh, bias_ih, bias_hh]` over
    padded `data` (B, T, W), from t = 0 up, from a zero state: outputs (B, T, H)."""
    h0 = data.new_zeros(1, data.size(0), weights[1].size(1))
    args = (weights, True, 1, 0.0, training, False, True)
    if cell == "lstm":
        return _RNN_OPS[cell](data, (h0, h0), *args)[0]
    return _RNN_OPS[cell](data, h0, *args)[0]


def concurrent_pair(layer: nn.RNNBase, cell: str, data: Tensor,
                    index: Tensor) -> tuple[Tensor, Tensor]:
    """Both directions of a single-layer bidirectional `layer` over padded `data` (B, T, W),
    as the ``reverse`` strategy computes them (`run_direction`), on two threads
    (`birnn.encoder.concurrent.two_directions`): forward and backward outputs (B, T, H)."""
    def run_forward(data: Tensor, *weights: Tensor) -> Tensor:
        return direction(cell, data, list(weights), layer.training)

    def run_backward(data: Tensor, *weights: Tensor) -> Tensor:
        reversed_data = ReverseWithin.apply(data, index)
        return ReverseWithin.apply(direction(cell, reversed_data, list(weights),
                                             layer.training), index)

    return two_directions(run_forward, [data, *direction_weights(layer, False)],
                          run_backward, [data, *direction_weights(layer, True)])


def bigru(layer: nn.GRU, data: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Both directions of a single-layer bidirectional `nn.GRU` over padded `data` (B, T, W)
    with `birnn.encoder.gru`'s recurrence: forward and backward outputs (B, T, H), each
    direction from a zero state; the backward direction runs over each sequence reversed
    within its length (`index`, as `ReverseWithin` takes it).

    Under autocast the matmuls run in the autocast dtype and the recurrence's state and gates
    in the weights' dtype; the outputs have the weights' dtype.
    """
    batch, steps = data.shape[:2]
    hidden = layer.hidden_size
    device = data.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) \
        else data.dtype
    weight_ih = torch.cat([layer.weight_ih_l0, layer.weight_ih_l0_reverse]).to(mm_dtype)
    bias_ih = torch.cat([layer.bias_ih_l0, layer.bias_ih_l0_reverse]).to(mm_dtype)
    # (B, T, 6H): both directions' input gates at every time step in one matmul
    gates = Linear.apply(data.reshape(-1, data.size(-1)).to(mm_dtype), weight_ih, bias_ih)
    forward, backward = gates.view(batch, steps, -1).split(3 * hidden, -1)
    backward = ReverseWithin.apply(backward, index)
    gates = torch.stack([forward.transpose(0, 1), backward.transpose(0, 1)], 1)  # (T, 2, B, 3H)
    weight_hh = torch.stack([layer.weight_hh_l0, layer.weight_hh_l0_reverse])
    bias_hh = torch.stack([layer.bias_hh_l0, layer.bias_hh_l0_reverse])
    with torch.autocast(device, enabled=False):
        out = GRURecurrence.apply(gates, weight_hh, bias_hh, mm_dtype)  # (T, 2, B, H)
    return out[:, 0].transpose(0, 1), ReverseWithin.apply(out[:, 1].transpose(0, 1), index)


class ReverseWithin(torch.autograd.Function):
    """Rows of a (B, T, W) tensor gathered by `index` (B*T,) into the batch-major flattening.

    Used with a permutation that is its own inverse (each sequence reversed within its
    length), so the gradient is gathered by the same index: no scatter-add.
    """

    @staticmethod
    def forward(ctx, data: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return data.reshape(-1, data.size(-1)).index_select(0, index).view(data.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.reshape(-1, grad.size(-1)).index_select(0, index).view(grad.shape), None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout, the function `F.dropout` computes: each element is zeroed with
    probability `p` and the rest are scaled by 1/(1-p).

    On CPU the mask comes from a uniform draw (`rand >= p`): PyTorch's CPU `bernoulli_`, which
    `F.dropout` uses, measured 4-6x slower on these machines and was 13% of a CoNLL-2003 tagger
    training step. Other devices keep `F.dropout` (CUDA has a fused kernel).
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
    return keep.unsqueeze(1) if data.dim() == 3 else keep[seq]


def check_probability(name: str, value) -> None:
    """Raise ConfigError unless `value` is a number in [0, 1) (a dropout rate)."""
    if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name}: must be in [0, 1), got {value!r}")


def check_int(name: str, value, minimum: int) -> None:
    """Raise ConfigError unless `value` is an int >= minimum (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}")
