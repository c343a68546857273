"""A whole stack in one ``nn.LSTM/GRU/RNN(num_layers=L, bidirectional=True)`` call.

Only for stacks that call can express (`EncoderSchema.fusable`: one cell and width, `concat`
between layers, no residual, standard dropout). On CUDA it is one cuDNN call for all layers.
`FusedStack` owns no parameters: each call reads the current parameters of the per-layer
`Bidirectional` modules it is handed, so it follows `.to()`, casting and
`load_state_dict(assign=True)` without any bookkeeping, and checkpoints do not depend on the
implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from birnn.encoder.directions import RNN_OPS
from birnn.encoder.layer import MODES, Bidirectional


class FusedStack(nn.Module):
    """The multi-layer call over `layers`' parameters (inter-layer dropout `dropout`, as
    ``nn.LSTM``'s, in training)."""

    def __init__(self, cell: str, dropout: float = 0.0):
        super().__init__()
        self.cell, self.dropout = cell, dropout
        # on CUDA, the data pointers of the weights cuDNN last packed into one buffer
        self._packed_at: tuple[int, ...] | None = None

    def forward(self, data: Tensor | PackedSequence,
                layers: list[Bidirectional]) -> tuple[Tensor, Tensor]:
        """Outputs of the last layer [forward ; backward] ((N, 2H) packed rows, or
        (B, T, 2H)) and the final hidden states (2L, B, H) in the caller's batch order."""
        weights = []
        for layer in layers:
            layer._update_flat_weights()  # parameters replaced by load_state_dict(assign=True)
            weights += layer._flat_weights
        if weights[0].is_cuda:
            self._pack_for_cudnn(weights, layers)
        num_layers, hidden = len(layers), layers[0].hidden_size
        dropout = self.dropout if num_layers > 1 else 0.0
        packed = data if isinstance(data, PackedSequence) else None
        rows = packed.data if packed is not None else data
        batch = int(packed.batch_sizes[0]) if packed is not None else rows.size(0)
        h0 = rows.new_zeros(2 * num_layers, batch, hidden)
        hx = (h0, h0) if self.cell == "lstm" else h0
        op = RNN_OPS[self.cell]
        if packed is None:
            result = op(rows, hx, weights, True, num_layers, dropout, self.training, True, True)
            return result[0], result[1]
        result = op(rows, packed.batch_sizes, hx, weights, True, num_layers, dropout,
                    self.training, True)
        # the states come in the packing's (sorted) order
        return result[0], result[1].index_select(1, packed.unsorted_indices)

    def _pack_for_cudnn(self, weights: list[Tensor], layers: list[Bidirectional]) -> None:
        # cuDNN wants all layers' weights in one buffer (else it copies them at every call):
        # pack them as nn.LSTM.flatten_parameters does, in place, whenever they are not
        # where the last packing put them (moved, cast, replaced)
        where = tuple(w.data_ptr() for w in weights)
        if where == self._packed_at:
            return
        if not (torch.backends.cudnn.is_available() and torch._use_cudnn_rnn_flatten_weight()
                and len(set(where)) == len(weights)
                and all(w.dtype == weights[0].dtype and w.is_cuda
                        and torch.backends.cudnn.is_acceptable(w) for w in weights)):
            return
        from torch.backends.cudnn import rnn

        first = layers[0]
        with torch.cuda.device_of(weights[0]), torch.no_grad():
            torch._cudnn_rnn_flatten_weight(
                weights, 4, first.input_size, rnn.get_cudnn_mode(MODES[self.cell]),
                first.hidden_size, 0, len(layers), True, True)
        self._packed_at = tuple(w.data_ptr() for w in weights)
