"""The ways a `Bidirectional` layer runs its two directions over padded data (B, T, W),
each from a zero state, the backward one over each sequence reversed within its length
(`birnn.encoder.layout`):

- `reversed_pair`: one direction after the other, each with the functional op behind
  ``nn.LSTM/GRU/RNN`` (on CPU an LSTM keeps oneDNN's kernel and bf16 autocast, which the
  packed call does not take);
- `concurrent_pair`: the same two calls on two threads, forward and backward pass
  (`birnn.encoder.concurrent`);
- `bigru`: a GRU layer's two directions in one loop of birnn's recurrence
  (`birnn.encoder.gru`);
- `concurrent_bigru`: birnn's recurrence, one direction per thread;
- `bilstm`: an LSTM layer's two directions in birnn's LSTM recurrence, a direction per
  thread in C (`birnn.encoder.lstm`).

All five return the forward and the backward outputs (B, T, H) in the original time order;
padding positions hold garbage that the stack zeroes at the end.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from birnn.encoder.concurrent import two_directions
from birnn.encoder.gru import GRURecurrence, Linear
from birnn.encoder.layout import ReverseWithin
from birnn.encoder.lstm import LSTMLayer, runs_here

# The functional RNN ops behind nn.LSTM/GRU/RNN, called with one direction's weights.
RNN_OPS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn": torch._VF.rnn_tanh}


def direction(cell: str, data: Tensor, weights: list[Tensor], training: bool) -> Tensor:
    """One direction of a `cell` layer with `[weight_ih, weight_hh, bias_ih, bias_hh]` over
    padded `data` (B, T, W), from t = 0 up, from a zero state: outputs (B, T, H)."""
    h0 = data.new_zeros(1, data.size(0), weights[1].size(1))
    args = (weights, True, 1, 0.0, training, False, True)
    if cell == "lstm":
        return RNN_OPS[cell](data, (h0, h0), *args)[0]
    return RNN_OPS[cell](data, h0, *args)[0]


def direction_weights(layer: nn.RNNBase, reverse: bool) -> list[Tensor]:
    """`[weight_ih, weight_hh, bias_ih, bias_hh]` of one direction of a single-layer
    bidirectional `layer`."""
    suffix = "_l0_reverse" if reverse else "_l0"
    return [getattr(layer, name + suffix)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def reversed_pair(layer: nn.RNNBase, cell: str, data: Tensor,
                  index: Tensor) -> tuple[Tensor, Tensor]:
    """Both directions, one after the other: forward and backward outputs (B, T, H)."""
    forward = direction(cell, data, direction_weights(layer, False), layer.training)
    backward = direction(cell, ReverseWithin.apply(data, index),  # (B, T, W), reversed
                         direction_weights(layer, True), layer.training)
    return forward, ReverseWithin.apply(backward, index)  # back in time order


def concurrent_pair(layer: nn.RNNBase, cell: str, data: Tensor,
                    index: Tensor) -> tuple[Tensor, Tensor]:
    """`reversed_pair` computed on two threads
    (`birnn.encoder.concurrent.two_directions`): forward and backward outputs (B, T, H)."""
    def run_forward(data: Tensor, *weights: Tensor) -> Tensor:
        return direction(cell, data, list(weights), layer.training)

    def run_backward(data: Tensor, *weights: Tensor) -> Tensor:
        reversed_data = ReverseWithin.apply(data, index)
        return ReverseWithin.apply(direction(cell, reversed_data, list(weights),
                                             layer.training), index)

    return two_directions(run_forward, [data, *direction_weights(layer, False)],
                          run_backward, [data, *direction_weights(layer, True)])


def _mm_dtype(data: Tensor) -> torch.dtype:
    """The dtype birnn's GRU runs its matmuls in: the autocast dtype under autocast."""
    device = data.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) \
        else data.dtype


def _recurrence(gates: Tensor, weight_hh: Tensor, bias_hh: Tensor,
                mm_dtype: torch.dtype) -> Tensor:
    """`GRURecurrence` over input gates (T, D, B, 3H), its state in the weights' dtype."""
    with torch.autocast(gates.device.type, enabled=False):
        return GRURecurrence.apply(gates, weight_hh, bias_hh, mm_dtype)  # (T, D, B, H)


def _input_gates(layer: nn.RNNBase, data: Tensor, index: Tensor, mm_dtype: torch.dtype,
                 bias_ih: Tensor) -> Tensor:
    """Both directions' input gates W_i x + `bias_ih` at every time step, in one matmul:
    (T, 2, B, kH), the backward direction's reversed within lengths."""
    batch, steps = data.shape[:2]
    weight_ih = torch.cat([layer.weight_ih_l0, layer.weight_ih_l0_reverse]).to(mm_dtype)
    gates = Linear.apply(data.reshape(-1, data.size(-1)).to(mm_dtype), weight_ih,
                         bias_ih.to(mm_dtype))  # (B * T, 2kH)
    forward, backward = gates.view(batch, steps, -1).chunk(2, -1)  # (B, T, kH) each
    backward = ReverseWithin.apply(backward, index)  # reversed within lengths
    return torch.stack([forward.transpose(0, 1), backward.transpose(0, 1)], 1)


def _in_time_order(out: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """(T, 2, B, H) -> the forward and the backward outputs (B, T, H), the backward one
    reversed back into time order."""
    return out[:, 0].transpose(0, 1), ReverseWithin.apply(out[:, 1].transpose(0, 1), index)


def bigru(layer: nn.RNNBase, data: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Both directions of a single-layer bidirectional GRU over padded `data` (B, T, W)
    with `birnn.encoder.gru`'s recurrence: forward and backward outputs (B, T, H).

    Under autocast the matmuls run in the autocast dtype and the recurrence's state and gates
    in the weights' dtype; the outputs have the weights' dtype.
    """
    mm_dtype = _mm_dtype(data)
    bias_ih = torch.cat([layer.bias_ih_l0, layer.bias_ih_l0_reverse])
    gates = _input_gates(layer, data, index, mm_dtype, bias_ih)  # (T, 2, B, 3H)
    weight_hh = torch.stack([layer.weight_hh_l0, layer.weight_hh_l0_reverse])  # (2, 3H, H)
    bias_hh = torch.stack([layer.bias_hh_l0, layer.bias_hh_l0_reverse])
    return _in_time_order(_recurrence(gates, weight_hh, bias_hh, mm_dtype), index)


def bilstm(layer: nn.RNNBase, data: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Both directions of a single-layer bidirectional LSTM over padded `data` (B, T, W)
    with `birnn.encoder.lstm`'s recurrence, a direction per thread: forward and backward
    outputs (B, T, H). Where that cannot run (`birnn.encoder.lstm.runs_here`: not fp32 on
    CPU), PyTorch's LSTM runs them (`reversed_pair`)."""
    if not runs_here(data):
        return reversed_pair(layer, "lstm", data, index)
    # (2, T, B, W): each direction's input, time first, the backward one reversed within lengths
    x = torch.stack([data.transpose(0, 1), ReverseWithin.apply(data, index).transpose(0, 1)])
    weight_ih = torch.stack([layer.weight_ih_l0, layer.weight_ih_l0_reverse])  # (2, 4H, W)
    # an LSTM's two biases only add: both go into the input gates' matmul
    bias = torch.stack([layer.bias_ih_l0 + layer.bias_hh_l0,
                        layer.bias_ih_l0_reverse + layer.bias_hh_l0_reverse])  # (2, 4H)
    weight_hh = torch.stack([layer.weight_hh_l0, layer.weight_hh_l0_reverse])  # (2, 4H, H)
    h = LSTMLayer.apply(x, weight_ih, bias, weight_hh)  # (2, T, B, H)
    # (B, T, H) each; the backward one reversed back into time order
    return h[0].transpose(0, 1), ReverseWithin.apply(h[1].transpose(0, 1), index)


def gru_direction(data: Tensor, index: Tensor, reverse: bool, weight_ih: Tensor,
                  weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """One direction of birnn's GRU recurrence over padded `data` (B, T, W), the backward
    one (`reverse`) over each sequence reversed within its length: outputs (B, T, H) in time
    order."""
    batch, steps = data.shape[:2]
    mm_dtype = _mm_dtype(data)
    gates = Linear.apply(data.reshape(-1, data.size(-1)).to(mm_dtype), weight_ih.to(mm_dtype),
                         bias_ih.to(mm_dtype)).view(batch, steps, -1)  # (B, T, 3H)
    if reverse:
        gates = ReverseWithin.apply(gates, index)
    out = _recurrence(gates.transpose(0, 1).unsqueeze(1), weight_hh.unsqueeze(0),
                      bias_hh.unsqueeze(0), mm_dtype)[:, 0].transpose(0, 1)  # (B, T, H)
    return ReverseWithin.apply(out, index) if reverse else out


def concurrent_bigru(layer: nn.RNNBase, data: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """`bigru` with one direction per thread (`birnn.encoder.concurrent.two_directions`),
    each direction's matmuls on its own thread, as TensorFlow runs a bidirectional layer:
    forward and backward outputs (B, T, H)."""
    def run(reverse: bool):
        return lambda data, w_ih, w_hh, b_ih, b_hh: gru_direction(data, index, reverse, w_ih,
                                                                 w_hh, b_ih, b_hh)

    return two_directions(run(False), [data, *direction_weights(layer, False)],
                          run(True), [data, *direction_weights(layer, True)])
