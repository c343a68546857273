"""A stack of bidirectional RNN layers with a Keras-style merge after every layer.

Each layer (`birnn.encoder.layer.Bidirectional`) runs a forward and a backward RNN over its
input and merges the two outputs (`concat`, `sum`, `mul`, `ave`, or `none` on the last
layer), exactly as stacking Keras ``Bidirectional(..., merge_mode=...)`` layers does; the
merged sequence is the next layer's input. Variable-length batches are exact: the backward
direction of each sequence starts at its own last token, outputs are zero at padding, and a
sequence's outputs do not depend on the rest of its batch.

The stack is a plain loop over its layers (dropout between layers, residual connections,
the last layer's final states). How each call runs (packed or padded, which strategy each
layer takes, or the whole stack in one fused call, `birnn.encoder.fused`) is one `Plan` from
`birnn.encoder.policy`, which documents the `auto` options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from birnn.config.base import check
from birnn.config.encoder import EncoderSchema, check_int
from birnn.encoder import policy
from birnn.encoder.dropout import SequenceDropout
from birnn.encoder.fused import FusedStack
from birnn.encoder.layer import Bidirectional
from birnn.encoder.layout import Layout
from birnn.encoder.merge import Merged, merge_pair


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
        impl: ``"fused"`` (the whole stack in one ``nn.LSTM/GRU/RNN(num_layers=L)`` call;
            only for one cell type and width, ``concat`` between layers, no residual,
            standard dropout), ``"layered"`` (layer by layer; every stack) or ``"auto"``.
        residual: add each layer's input to its merged output wherever the two have the same
            width (layers after the first; e.g. every layer of a ``sum`` stack of equal width,
            or a ``concat`` stack from the second layer on). An error when no layer qualifies.
        dropout_kind: ``"standard"`` (a new mask per token) or ``"locked"`` (one mask per
            sequence, shared by all its time steps: variational dropout, Gal & Ghahramani).
        init: ``"default"`` (PyTorch's uniform init) or ``"orthogonal"``: an orthogonal matrix
            per gate block of the recurrent weights, Xavier-uniform input weights, zero biases.
        forget_bias: LSTM layers only: set the forget gate's input bias to this value (and its
            recurrent bias to 0), e.g. 1.0 as in Jozefowicz et al. 2015; ``None`` leaves it.
        ragged: how the layer-by-layer stack runs a batch of unequal lengths: ``"pack"``
            (PyTorch's ``PackedSequence``), ``"reverse"`` (padded, the backward direction
            reversed within each length) or ``"auto"``. The fused call always packs.
        gru: the recurrence of GRU layers: ``"torch"`` (``nn.GRU``'s), ``"birnn"``
            (`birnn.encoder.gru`: both directions in one loop, a hand-written backward pass,
            a C kernel per step; runs padded, so not with ``ragged="pack"``) or ``"auto"``.
        lstm: the recurrence of LSTM layers: ``"torch"`` (``nn.LSTM``'s, oneDNN's kernel on
            CPU), ``"birnn"`` (`birnn.encoder.lstm`: the fp32 loop in C, a direction per
            thread, on CPU where it builds; PyTorch's elsewhere; runs padded, so not with
            ``ragged="pack"``) or ``"auto"``.
        directions: how a layer's two directions run in training on CPU: ``"serial"``,
            ``"concurrent"`` (on two threads, `birnn.encoder.concurrent`; runs padded, so not
            with ``ragged="pack"``) or ``"auto"``.

    Every ``auto`` is decided per call by `birnn.encoder.policy`; all choices give the same
    outputs. Invalid options raise `birnn.errors.ConfigError` naming the key
    (``encoder.merge: ...``), as the command line does.

    Attributes:
        output_size: width of the output per token: 2H for ``concat``, H for the other merges;
            for ``none``, the width of each of the two returned tensors.
        fusable: whether one multi-layer PyTorch module can compute this stack.
        options: the checked options (`birnn.config.encoder.EncoderSchema`).
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
        lstm: str = "auto",
        directions: str = "auto",
    ):
        super().__init__()
        check_int("input_size", input_size, minimum=1)
        self.options = options = check(EncoderSchema, {
            "hidden_size": hidden_size, "cell": cell, "num_layers": num_layers,
            "merge": merge, "dropout": dropout, "impl": impl, "residual": residual,
            "dropout_kind": dropout_kind, "init": init, "forget_bias": forget_bias,
            "ragged": ragged, "gru": gru, "lstm": lstm, "directions": directions},
            "encoder")
        self.input_size, self.num_layers = input_size, options.num_layers
        self.cells, self.hidden_sizes = options.cells, options.hidden_sizes
        self.merges, self.residuals = options.merges, options.residuals
        self.dropout, self.dropout_kind = options.dropout, options.dropout_kind
        self.impl, self.ragged = options.impl, options.ragged
        self.gru, self.lstm, self.directions = options.gru, options.lstm, options.directions
        self.init, self.forget_bias = options.init, options.forget_bias
        self.fusable = options.fusable

        self.layers = nn.ModuleList()
        width = input_size
        for c, h, m in zip(self.cells, self.hidden_sizes, self.merges, strict=True):
            self.layers.append(Bidirectional(width, h, c, m))
            width = self.layers[-1].output_size
        self.output_size = width
        # initialised after all layers are built, so a seed gives the weights it always gave
        if self.init == "orthogonal":
            for layer in self.layers:
                layer.init_orthogonal()
        if self.forget_bias is not None:
            for layer in self.layers:
                if layer.cell == "lstm":
                    layer.set_forget_bias(self.forget_bias)
        self.between = SequenceDropout(self.dropout, self.dropout_kind)
        self.fused = FusedStack(self.cells[0], self.dropout) if self.fusable else None

    def plan(self, device: torch.device, steps: int, ragged: bool = True) -> policy.Plan:
        """How a forward call on `device` over `steps` time steps runs now (in the current
        gradient mode), for a batch of unequal lengths (`ragged`) or of full ones."""
        return policy.choose(self.options, device, steps, ragged)

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
        exporting = policy.exporting()
        # data-dependent checks would be frozen into an exported graph
        if not exporting and (x.dim() != 3 or x.size(-1) != self.input_size):
            raise ValueError(
                f"BiRNN expects input of shape (B, T, {self.input_size}), got {tuple(x.shape)}"
            )
        batch, total = x.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.int64)
        lengths = lengths.to("cpu", torch.int64)
        if not exporting and (lengths.shape != (batch,) or (lengths < 1).any()
                              or (lengths > total).any()):
            raise ValueError(
                f"lengths must be {batch} values in [1, {total}], got {lengths.tolist()}"
            )
        ragged = exporting or not bool((lengths == total).all())
        plan = policy.choose(self.options, x.device, total, ragged, export=exporting)
        layout = Layout(x, lengths, plan.pack, plan.reverse)
        if plan.fused:
            return self._fused_forward(layout)

        data, last = layout.data, self.num_layers - 1
        # locked dropout on packed rows needs each row's sequence
        sequences = layout.sequences() if (self.dropout_kind == "locked" and self.training
                                          and self.dropout > 0) else None
        for k, layer in enumerate(self.layers):
            if k > 0:
                data = self.between(data, sequences, batch)
            merged, final = layer(data, layout, plan.layers[k], return_state=k == last)
            data = merged + data if self.residuals[k] else merged
        return layout.restore(data), final

    def _fused_forward(self, layout: Layout) -> tuple[Merged, Merged]:
        data = layout.packed if layout.packed is not None else layout.data
        out, h_n = self.fused(data, list(self.layers))  # (..., 2H), (2L, B, H)
        hidden = self.hidden_sizes[-1]
        merge = self.merges[-1]
        outputs = (out[..., :hidden], out[..., hidden:]) if merge == "none" else out
        # the last layer's forward state at each last token, backward state at the first
        return layout.restore(outputs), merge_pair(h_n[-2], h_n[-1], merge)

    def extra_repr(self) -> str:
        extra = ""
        if any(self.residuals):
            extra += f", residual={self.residuals}"
        if self.dropout_kind != "standard":
            extra += f", dropout_kind={self.dropout_kind}"
        if "gru" in self.cells:
            extra += f", gru={self.gru}"
        if "lstm" in self.cells:
            extra += f", lstm={self.lstm}"
        if self.directions != "auto":
            extra += f", directions={self.directions}"
        return (
            f"cells={self.cells}, hidden={self.hidden_sizes}, merges={self.merges}, "
            f"dropout={self.dropout}, impl={self.impl}, output_size={self.output_size}{extra}"
        )
