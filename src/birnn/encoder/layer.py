"""One bidirectional layer: a forward and a backward RNN over the same input, merged.

`Bidirectional` reads like Keras' ``Bidirectional.call``: run the forward direction, run the
backward one over the reversed input, flip its output back, merge. How the two directions
run (one joint PyTorch call on packed rows, two padded calls, two threads, birnn's GRU
recurrence) is the `strategy` that `birnn.encoder.policy` chose for the batch; the numbers
are the same either way.

The layer *is* a single-layer bidirectional ``nn.RNNBase``: its parameters are named
``weight_ih_l0``, ``weight_hh_l0_reverse`` and so on, exactly as ``nn.LSTM``'s, so state-dict
keys and PyTorch's own initialisation, device moves and cuDNN weight packing are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from birnn.encoder import directions
from birnn.encoder.layout import Layout
from birnn.encoder.merge import Merged, merge_pair, output_width
from birnn.encoder.policy import (
    BIRNN_GRU,
    BIRNN_GRU_CONCURRENT,
    BIRNN_LSTM,
    CONCURRENT,
    JOINT,
    REVERSED,
)

# nn.RNNBase's mode name of each cell
MODES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH"}
CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class Bidirectional(nn.RNNBase):
    """A bidirectional `cell` layer whose two directions are merged by `merge`.

    Args:
        input_size: width of the input per token.
        hidden_size: hidden units per direction (H).
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh).
        merge: ``"concat"`` (2H), ``"sum"``, ``"mul"``, ``"ave"`` (H) or ``"none"`` (the pair).

    Attributes:
        output_size: width of the merged output per token (of each tensor, for ``none``).
    """

    def __init__(self, input_size: int, hidden_size: int, cell: str = "lstm",
                 merge: str = "concat"):
        super().__init__(MODES[cell], input_size, hidden_size, num_layers=1, bias=True,
                         batch_first=True, bidirectional=True)
        if cell == "rnn":
            self.nonlinearity = "tanh"  # as nn.RNN has it
        self.cell, self.merge = cell, merge
        self.output_size = output_width(hidden_size, merge)

    def forward(self, data: Tensor, layout: Layout, strategy: str = JOINT,
                return_state: bool = False) -> tuple[Merged, Merged | None]:
        """Run both directions and merge them.

        Args:
            data: packed rows (N, W) when `layout` packs, else (B, T, W).
            layout: the batch's layout (`birnn.encoder.layout.Layout`).
            strategy: how the two directions run (`birnn.encoder.policy.STRATEGIES`).
            return_state: also return the final state.

        Returns:
            merged: the merged outputs, rows as `data`'s ((N, W') or (B, T, W')).
            final: with `return_state`, (B, W') the forward state at each sequence's last
                token merged with the backward state at its first token; else None.
        """
        if strategy == JOINT:
            out, h_n = self.joint(data, layout)  # (..., 2H), (2, B, H)
            forward, backward = out.split(self.hidden_size, dim=-1)
            # the joint output already is [forward ; backward]: merged row-wise, so on
            # packed rows too
            merged = out if self.merge == "concat" else merge_pair(forward, backward,
                                                                   self.merge)
            final = (h_n[0], h_n[1]) if return_state else None
        else:
            if strategy == BIRNN_GRU:
                forward, backward = directions.bigru(self, data, layout.index)
            elif strategy == BIRNN_LSTM:
                forward, backward = directions.bilstm(self, data, layout.index)
            elif strategy == BIRNN_GRU_CONCURRENT:
                forward, backward = directions.concurrent_bigru(self, data, layout.index)
            elif strategy == CONCURRENT:
                forward, backward = directions.concurrent_pair(self, self.cell, data,
                                                               layout.index)
            elif strategy == REVERSED:
                forward, backward = directions.reversed_pair(self, self.cell, data,
                                                             layout.index)
            else:
                raise ValueError(f"unknown strategy {strategy!r}")
            merged = merge_pair(forward, backward, self.merge)  # (B, T, W')
            final = None
            if return_state:
                rows = torch.arange(layout.batch, device=data.device)
                final = (forward[rows, layout.last], backward[:, 0])  # (B, H) each
        return merged, None if final is None else merge_pair(*final, self.merge)

    def joint(self, data: Tensor, layout: Layout) -> tuple[Tensor, Tensor]:
        """Both directions in one call of the op behind ``nn.LSTM/GRU/RNN``: outputs
        [forward ; backward] (N, 2H) on packed rows or (B, T, 2H), and the final hidden
        states (2, B, H) in the caller's batch order."""
        self._update_flat_weights()  # parameters replaced by load_state_dict(assign=True)
        packed = layout.packed
        batch = int(packed.batch_sizes[0]) if packed is not None else data.size(0)
        h0 = data.new_zeros(2, batch, self.hidden_size)
        hx = (h0, h0) if self.cell == "lstm" else h0
        op = directions.RNN_OPS[self.cell]
        if packed is None:
            result = op(data, hx, self._flat_weights, True, 1, 0.0, self.training, True, True)
            return result[0], result[1]
        result = op(data, packed.batch_sizes, hx, self._flat_weights, True, 1, 0.0,
                    self.training, True)
        # the states come in the packing's (sorted) order
        return result[0], result[1].index_select(1, packed.unsorted_indices)

    def init_orthogonal(self) -> None:
        """An orthogonal matrix per gate block of the recurrent weights, Xavier-uniform
        input weights per block, zero biases."""
        gates = self.weight_hh_l0.size(0) // self.hidden_size
        for name, p in self.named_parameters():
            if name.startswith("weight_hh"):
                for block in p.data.chunk(gates, 0):  # one (H, H) block per gate
                    nn.init.orthogonal_(block)
            elif name.startswith("weight_ih"):
                for block in p.data.chunk(gates, 0):
                    nn.init.xavier_uniform_(block)
            else:
                nn.init.zeros_(p)

    def set_forget_bias(self, value: float) -> None:
        """LSTM: the forget gate's input bias set to `value`, its recurrent bias to 0."""
        h = self.hidden_size  # PyTorch's LSTM gate order: input, forget, cell, output
        for name, p in self.named_parameters():
            if name.startswith("bias_ih"):
                p.data[h:2 * h].fill_(value)
            elif name.startswith("bias_hh"):
                p.data[h:2 * h].zero_()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cell={self.cell}, merge={self.merge}"
