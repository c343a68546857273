"""An LSTM recurrence whose fp32 time loop, forward and backward, runs in birnn's C kernel
(`lstm_kernel.c`, built by `birnn.encoder.native`), a direction per thread.

PyTorch's CPU LSTM is oneDNN's kernel: fast, but each time step's small matmul, (B x H) @
(H x 4H), is split over all intra-op threads, which meet at every step. TensorFlow runs the
two directions of a bidirectional layer at the same time instead, a direction per core, each
step's matmul on that core alone; `LSTMRecurrence` does the same, each direction's loop in C
with MKL's sgemm_ from PyTorch's own library (`native.blas`). It runs only where that loop
can: on CPU, fp32, with the kernel built and MKL in PyTorch's library (`runs_here`); the
layers run PyTorch's LSTM elsewhere. `LSTMLayer` is a whole layer's directions: the input
gates of every time step in one matmul per direction, both biases included, then the loop;
backward, the loop, then the weight gradients in one matmul each over all time steps
(`birnn.encoder.directions.bilstm` gives it the inputs). How its speed compares, and where
`lstm="auto"` takes it: docs/performance.md, "How `auto` chooses".

The equations are `nn.LSTM`'s (gate order i, f, g, o in the weight rows):

    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
    c' = f * c + i * g;  h' = o * tanh(c')

with a = W_i x + b_i + W_h h + b_h.
"""

from __future__ import annotations

import torch
from torch import Tensor

from birnn.encoder import native


def loop_available() -> bool:
    """Whether the C loop can run on this machine: the kernel built and MKL's sgemm_ in
    PyTorch's library."""
    return native.gru_kernel() is not None and native.blas() is not None


def runs_here(data: Tensor) -> bool:
    """Whether the recurrence can run for `data`: fp32 on CPU outside autocast, where the C
    loop is available."""
    return (data.device.type == "cpu" and data.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and loop_available())


class LSTMLayer(torch.autograd.Function):
    """D independent LSTMs started from zero states, each over its own input: inputs
    (D, T, B, E), input weights (D, 4H, E), biases (D, 4H) (b_i + b_h) and recurrent weights
    (D, 4H, H) -> the hidden states (D, T, B, H).

    Direction first, so that each direction's input gates, states and gradients are
    contiguous (T, B, .) blocks that the C loop walks and one matmul per direction fills or
    reads, without reordering copies.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight_ih: Tensor, bias: Tensor, weight_hh: Tensor) -> Tensor:
        dirs, steps, batch, width = x.shape
        hidden = weight_hh.size(-1)
        x, weight = x.contiguous(), weight_hh.contiguous()
        # (D, T*B, 4H): the input gates of every step, which the loop turns into the
        # activated gates in place
        gates = torch.baddbmm(bias.unsqueeze(1), x.view(dirs, -1, width),
                              weight_ih.transpose(1, 2))
        h = x.new_empty(dirs, steps, batch, hidden)
        c = x.new_empty(dirs, steps, batch, hidden)
        zero = x.new_zeros(batch, hidden)
        native.gru_kernel().birnn_lstm_forward_loop_f32(
            steps, dirs, batch, hidden, gates.data_ptr(), weight.data_ptr(), zero.data_ptr(),
            h.data_ptr(), c.data_ptr(), *native.blas(), *native.loop_threads(dirs))
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(x, weight_ih, weight, h, c, gates)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight_ih, weight, h, c, gates = ctx.saved_tensors
        dirs, steps, batch, hidden = h.shape
        grad_out = grad_out.contiguous()
        d_gates = h.new_empty(dirs, steps * batch, 4 * hidden)
        carry, mm = h.new_zeros(dirs, batch, hidden), h.new_zeros(dirs, batch, hidden)
        zero = h.new_zeros(batch, hidden)
        native.gru_kernel().birnn_lstm_backward_loop_f32(
            steps, dirs, batch, hidden, gates.data_ptr(), c.data_ptr(), zero.data_ptr(),
            weight.data_ptr(), grad_out.data_ptr(), carry.data_ptr(), mm.data_ptr(),
            d_gates.data_ptr(), *native.blas(), *native.loop_threads(dirs))
        need = ctx.needs_input_grad
        rows = x.view(dirs, -1, x.size(-1))  # (D, T*B, E)
        d_x = torch.bmm(d_gates, weight_ih).view_as(x) if need[0] else None
        d_weight_ih = torch.bmm(d_gates.transpose(1, 2), rows) if need[1] else None
        d_bias = d_gates.sum(1) if need[2] else None
        # d W_h = sum over steps of d_gates_t^T h_{t-1}: (4H, (T-1)*B) @ ((T-1)*B, H) per
        # direction; h_{-1} = 0 drops the first step
        d_weight_hh = torch.bmm(d_gates[:, batch:].transpose(1, 2),
                                h[:, :-1].reshape(dirs, -1, hidden)) if need[3] else None
        return d_x, d_weight_ih, d_bias, d_weight_hh
