"""A GRU recurrence with a hand-written backward pass, for CPU training.

PyTorch's CPU GRU has no fused kernel: `torch._VF.gru` runs a few small ops per time step
under autograd, and its backward pass walks that graph op by op, computing the recurrent
weight gradient one time step at a time. `GRURecurrence` runs the same recurrence for
several independent directions at once (a matmul per direction and a handful of element-wise
ops per time step for all of them), keeps the gate values it needs, and computes the backward
pass in one reverse loop of its own; each weight gradient is then one matmul over all time
steps. On CPUs where oneDNN's matmul is faster than the BLAS's, the matmuls go through oneDNN
(`linear`). The element-wise part of each step (the gates, the new state; backward, their
gradients) runs in birnn's C kernel (`gru_kernel.c`, built by `birnn.encoder.native`) where
it could be built: one call per step instead of a dozen PyTorch ops forward and twenty
backward, whose dispatch cost more than their arithmetic. With fp32 matmuls and MKL in
PyTorch's library the kernel runs the whole time loop, a direction per thread, each step's
matmul MKL's on that thread (`_blas`). Without the kernel the same equations run as PyTorch
ops (`_forward_ops`, `_backward_ops`). The input projections are not part of it:
the caller computes them for every time step with one matmul beforehand
(`birnn.encoder.directions.bigru`). How much faster than PyTorch's GRU it trains, with and
without the kernel, and where `gru="auto"` takes it: docs/performance.md, "How `auto`
chooses".

The equations are `nn.GRU`'s (gate order r, z, n in the weight rows):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h = n + z * (h - n)
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from birnn.encoder import native
from birnn.hardware import cpu_supports_bf16

# whether this PyTorch build has oneDNN's linear ops (the CPU wheels do)
ONEDNN = (torch.backends.mkldnn.is_available()
          and hasattr(torch.ops.mkldnn, "_linear_pointwise")
          and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`x @ weight.T + bias` through oneDNN's matmul (CPU, fp32 or bf16, 2-D `x`)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.cache
def onednn_is_faster() -> bool:
    """Whether oneDNN's fp32 matmul beats `torch.matmul`'s (the BLAS, MKL) by 30% or more on
    this CPU, timed once per process at a GRU step's shape, (32 x 256) @ (256 x 768): about
    20 milliseconds.

    Which is faster depends on the CPU (docs/performance.md, "How `auto` chooses"), so the
    recurrence takes oneDNN only where it measures clearly faster; the margin keeps the choice
    the same from run to run on either kind of machine.
    """
    if not ONEDNN:
        return False
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(32, 256, generator=gen), torch.randn(768, 256, generator=gen)

    def best(step, reps: int = 20) -> float:
        for _ in range(3):
            step()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(reps):
                step()
            times.append(time.perf_counter() - start)
        return min(times)

    return best(lambda: x @ weight.t()) >= 1.3 * best(lambda: onednn_linear(x, weight))


def _onednn(x: Tensor) -> bool:
    """Whether `x` goes through oneDNN's matmul: fp32, or bf16 where oneDNN has bf16 kernels
    (`birnn.hardware`), on a CPU where it is faster."""
    dtypes = (torch.float32, torch.bfloat16) if cpu_supports_bf16() else (torch.float32,)
    return ONEDNN and x.device.type == "cpu" and x.dtype in dtypes and onednn_is_faster()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`x @ weight.T + bias` for 2-D `x`: through oneDNN on CPUs where its matmul is faster
    (`onednn_is_faster`), else `F.linear`. `weight` may be a transposed view or a weight
    packed by `pack`.
    """
    if _onednn(x):
        return onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def pack(weight: Tensor, rows: int) -> Tensor:
    """`weight` (N, K) in oneDNN's layout for `linear` with inputs of `rows` rows (CPU)."""
    if _onednn(weight):
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)
    return weight


class Linear(torch.autograd.Function):
    """`linear` with its backward pass through `linear` too (2-D `x`)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        d_x = linear(grad, weight.t()) if ctx.needs_input_grad[0] else None
        d_weight = linear(grad.t(), x.t()) if ctx.needs_input_grad[1] else None
        d_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return d_x, d_weight, d_bias


def _tanh_(x: Tensor) -> Tensor:
    # tanh(x) = 2 sigmoid(2x) - 1, in place: PyTorch's CPU tanh measured 8x slower than its
    # sigmoid at these sizes (36 vs 4 microseconds for 2 x 32 x 256 floats)
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


class GRURecurrence(torch.autograd.Function):
    """Input gates (T, D, B, 3H), recurrent weights (D, 3H, H) and biases (D, 3H) -> the
    hidden states (T, D, B, H) of D independent GRUs started from zero.

    The state and the gates are kept in the weights' dtype; the matmuls run in `mm_dtype`
    (bf16 under autocast, as PyTorch's autocast runs matmuls). Each time step is one matmul
    for all D directions and the element-wise rest; that rest runs in birnn's C kernel
    (`native_steps`) where it can (fp32: the whole loop, `_forward_native`), else as PyTorch
    ops, with the same equations.
    """

    @staticmethod
    def forward(ctx, gates_in: Tensor, weight_hh: Tensor, bias_hh: Tensor,
                mm_dtype: torch.dtype) -> Tensor:
        native = native_steps(gates_in, weight_hh, mm_dtype)
        if native:
            # without gradients (inference) the gates are not kept: less memory traffic
            keep = any(ctx.needs_input_grad[:3])
            out, saved = _forward_native(gates_in, weight_hh, bias_hh, mm_dtype, keep)
        else:
            out, saved = _forward_ops(gates_in, weight_hh, bias_hh, mm_dtype)
        ctx.save_for_backward(weight_hh, out, *saved)
        ctx.mm_dtype, ctx.in_dtype, ctx.native = mm_dtype, gates_in.dtype, native
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        weight_hh, out, rz, n, gh = ctx.saved_tensors
        mm_dtype = ctx.mm_dtype
        run = _backward_native if ctx.native else _backward_ops
        d_hh, d_in = run(grad_out, weight_hh, out, rz, n, gh, mm_dtype)
        steps, dirs, batch, hidden = out.shape
        zero = out.new_zeros(1, dirs, batch, hidden)
        h_prev = torch.cat([zero, out[:-1]], 0).to(mm_dtype)  # (T, D, B, H)
        # sums over time steps and the batch, per direction, on contiguous (T*B, .) rows (a
        # sum over dims 0 and 2 of (T, D, B, 3H) measured 10x slower than the copy + sum)
        rows = [d_hh[:, k].reshape(-1, 3 * hidden) for k in range(dirs)]
        d_bias = torch.stack([d_k.sum(0) for d_k in rows])
        d_weight = torch.stack([  # (3H, T*B) @ (T*B, H)
            linear(d_k.to(mm_dtype).t(), h_prev[:, k].reshape(-1, hidden).t())
            for k, d_k in enumerate(rows)]).to(weight_hh.dtype)
        return d_in.to(ctx.in_dtype), d_weight, d_bias, None


def native_steps(gates_in: Tensor, weight_hh: Tensor, mm_dtype: torch.dtype) -> bool:
    """Whether `GRURecurrence` runs its element-wise steps in birnn's C kernel: on CPU, for
    an fp32 state with fp32 or bf16 matmuls, where the kernel could be built
    (`birnn.encoder.native`)."""
    return (gates_in.device.type == "cpu" and weight_hh.dtype == torch.float32
            and mm_dtype in (torch.float32, torch.bfloat16) and gates_in.dtype == mm_dtype
            and native.gru_kernel() is not None)


class _Recurrent:
    """The per-step matmul of D directions at once, in `mm_dtype`, written into `out`:
    `transpose=False` (forward) h (D, B, H) -> h @ W_h^T + b_h (D, B, 3H); `transpose=True`
    (backward, no bias) gate gradients d (D, B, 3H) -> d @ W_h (D, B, H). Through oneDNN
    where its matmul is the faster (`linear`), else as one batched matmul."""

    def __init__(self, weight_hh: Tensor, bias_hh: Tensor | None, mm_dtype: torch.dtype,
                 batch: int, transpose: bool):
        weight = weight_hh.to(mm_dtype)
        self.onednn = _onednn(weight)
        if self.onednn:
            self.packed = [pack(w.t() if transpose else w, batch) for w in weight]
            self.bias = bias_hh.to(mm_dtype) if bias_hh is not None else [None] * len(weight)
        else:
            self.weight = (weight if transpose else weight.transpose(1, 2)).contiguous()
            self.bias = bias_hh.to(mm_dtype).unsqueeze(1) if bias_hh is not None else None

    def __call__(self, x: Tensor, out: Tensor) -> None:
        if self.onednn:
            torch.stack([linear(x[k], w, b) for k, (w, b) in enumerate(
                zip(self.packed, self.bias, strict=True))], out=out)
        elif self.bias is None:
            torch.bmm(x, self.weight, out=out)
        else:
            torch.baddbmm(self.bias, x, self.weight, out=out)


def _blas(mm_dtype: torch.dtype) -> tuple[int, int] | None:
    """MKL's sgemm_ for the kernel's whole-loop functions (`native.blas`): fp32 matmuls only
    (bf16 ones, and CPUs without MKL, loop in Python)."""
    return native.blas() if mm_dtype == torch.float32 else None


def _forward_native(gates_in: Tensor, weight_hh: Tensor, bias_hh: Tensor,
                    mm_dtype: torch.dtype, keep: bool = True) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The forward loop with the C kernel; `keep`: keep every step's gates for the backward
    pass (else one step's, overwritten). fp32 matmuls with MKL run the whole loop in C, a
    direction per thread (`_blas`); otherwise the loop is here, a kernel call per step."""
    kernel = native.gru_kernel()
    steps, dirs, batch, width = gates_in.shape
    hidden, rows = width // 3, dirs * batch
    gates_in = gates_in.contiguous()
    out = weight_hh.new_empty(steps, dirs, batch, hidden)
    kept = steps if keep else 1
    rz = weight_hh.new_empty(kept, dirs, batch, 2 * hidden)  # sigmoid(r), sigmoid(z)
    n = weight_hh.new_empty(kept, dirs, batch, hidden)  # tanh(...)
    gh = gates_in.new_empty(kept, dirs, batch, width)  # W_h h + b_h, in mm_dtype
    zero = weight_hh.new_zeros(dirs, batch, hidden)
    blas = _blas(mm_dtype)
    if blas:
        # named, so that the copies live until the call returns
        weight, bias = weight_hh.contiguous(), bias_hh.contiguous()
        kernel.birnn_gru_forward_loop_f32(
            steps, dirs, batch, hidden, int(keep), gates_in.data_ptr(), weight.data_ptr(),
            bias.data_ptr(), zero.data_ptr(), out.data_ptr(), rz.data_ptr(), n.data_ptr(),
            gh.data_ptr(), *blas, *native.loop_threads(dirs))
        return out, (rz, n, gh)
    step = kernel.birnn_gru_forward_bf16 if mm_dtype == torch.bfloat16 \
        else kernel.birnn_gru_forward_f32
    recurrent = _Recurrent(weight_hh, bias_hh, mm_dtype, batch, transpose=False)
    # the state in mm_dtype for the next matmul (bf16: the kernel writes it; fp32: the state)
    h_mm = out.new_empty(dirs, batch, hidden, dtype=mm_dtype) if mm_dtype != out.dtype else None
    gh[0].copy_(bias_hh.to(mm_dtype).unsqueeze(1).expand(dirs, batch, width))  # h_0 = 0
    outs, ghs = out.unbind(0), gh.unbind(0)
    for t in range(steps):
        k = t if keep else 0
        if t > 0:
            recurrent(outs[t - 1] if h_mm is None else h_mm, ghs[k])
        step(rows, hidden, gates_in[t].data_ptr(), ghs[k].data_ptr(),
             (outs[t - 1] if t > 0 else zero).data_ptr(), rz[k].data_ptr(), n[k].data_ptr(),
             outs[t].data_ptr(), None if h_mm is None else h_mm.data_ptr())
    return out, (rz, n, gh)


def _backward_native(grad_out: Tensor, weight_hh: Tensor, out: Tensor, rz: Tensor, n: Tensor,
                     gh: Tensor, mm_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    kernel = native.gru_kernel()
    steps, dirs, batch, hidden = out.shape
    rows = dirs * batch
    grad_out = grad_out.to(out.dtype).contiguous()
    d_hh = out.new_empty(steps, dirs, batch, 3 * hidden)  # d (W_h h + b_h)
    d_in = out.new_empty(steps, dirs, batch, 3 * hidden)  # d (W_i x + b_i)
    carry = torch.zeros_like(out[0])  # dh * z of the step after
    mm = out.new_zeros(dirs, batch, hidden, dtype=mm_dtype)  # d_hh of the step after @ W_h
    zero = torch.zeros_like(out[0])
    blas = _blas(mm_dtype)
    if blas:  # the same loop in C (`_forward_native`)
        weight = weight_hh.contiguous()  # named: it lives until the call returns
        kernel.birnn_gru_backward_loop_f32(
            steps, dirs, batch, hidden, rz.data_ptr(), n.data_ptr(), gh.data_ptr(),
            out.data_ptr(), zero.data_ptr(), weight.data_ptr(), grad_out.data_ptr(),
            carry.data_ptr(), mm.data_ptr(), d_hh.data_ptr(), d_in.data_ptr(), *blas,
            *native.loop_threads(dirs))
        return d_hh, d_in
    step = kernel.birnn_gru_backward_bf16 if mm_dtype == torch.bfloat16 \
        else kernel.birnn_gru_backward_f32
    recurrent = _Recurrent(weight_hh, None, mm_dtype, batch, transpose=True)  # d gates -> d h
    d_mm = d_hh.new_empty(dirs, batch, 3 * hidden, dtype=mm_dtype) \
        if mm_dtype != out.dtype else None
    outs = out.unbind(0)
    for t in range(steps - 1, -1, -1):
        step(rows, hidden, rz[t].data_ptr(), n[t].data_ptr(), gh[t].data_ptr(),
             (outs[t - 1] if t > 0 else zero).data_ptr(), grad_out[t].data_ptr(),
             mm.data_ptr(), carry.data_ptr(), d_hh[t].data_ptr(), d_in[t].data_ptr(),
             None if d_mm is None else d_mm.data_ptr())
        if t > 0:
            recurrent(d_hh[t] if d_mm is None else d_mm, mm)
    return d_hh, d_in


def _forward_ops(gates_in: Tensor, weight_hh: Tensor, bias_hh: Tensor,
                 mm_dtype: torch.dtype) -> tuple[Tensor, tuple[Tensor, ...]]:
    steps, dirs, batch, width = gates_in.shape
    hidden = width // 3
    cast = mm_dtype != weight_hh.dtype
    recurrent = _Recurrent(weight_hh, bias_hh, mm_dtype, batch, transpose=False)
    out = weight_hh.new_empty(steps, dirs, batch, hidden)
    rz = weight_hh.new_empty(steps, dirs, batch, 2 * hidden)  # sigmoid(r), sigmoid(z)
    n = weight_hh.new_empty(steps, dirs, batch, hidden)  # tanh(...)
    gh = gates_in.new_empty(steps, dirs, batch, width)  # W_h h + b_h, in mm_dtype
    h = weight_hh.new_zeros(dirs, batch, hidden)
    for t in range(steps):
        g, r_z, n_t = gh[t], rz[t], n[t]
        recurrent(h.to(mm_dtype) if cast else h, g)
        torch.add(gates_in[t, :, :, :2 * hidden], g[..., :2 * hidden], out=r_z).sigmoid_()
        _tanh_(torch.addcmul(gates_in[t, :, :, 2 * hidden:], r_z[..., :hidden],
                             g[..., 2 * hidden:], out=n_t))
        h = torch.lerp(n_t, h, r_z[..., hidden:], out=out[t])
    return out, (rz, n, gh)


def _backward_ops(grad_out: Tensor, weight_hh: Tensor, out: Tensor, rz: Tensor, n: Tensor,
                  gh: Tensor, mm_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    cast = mm_dtype != out.dtype
    steps, dirs, batch, hidden = out.shape
    grad_out = grad_out.to(out.dtype).contiguous()
    recurrent = _Recurrent(weight_hh, None, mm_dtype, batch, transpose=True)  # d gates -> d h
    mm = out.new_empty(dirs, batch, hidden, dtype=mm_dtype)
    # d loss / d (recurrent gate pre-activations) [r, z, n], and d loss / d n's
    # pre-activation (the input gates' gradient: r and z as the recurrent ones)
    d_hh = out.new_empty(steps, dirs, batch, 3 * hidden)
    d_n = out.new_empty(steps, dirs, batch, hidden)
    dh = torch.zeros_like(out[0])
    zero = torch.zeros_like(out[0])
    one_minus = out.new_empty(dirs, batch, hidden)
    for t in range(steps - 1, -1, -1):
        dh = dh + grad_out[t]
        r, z = rz[t, ..., :hidden], rz[t, ..., hidden:]
        n_t = n[t]
        h_prev = out[t - 1] if t > 0 else zero
        d = d_hh[t]
        dr, dz, dn = d[..., :hidden], d[..., hidden:2 * hidden], d_n[t]
        # dn = dh * (1 - z) * (1 - n^2)
        torch.neg(z, out=one_minus).add_(1)
        torch.mul(dh, one_minus, out=dn)
        torch.addcmul(dn, dn, n_t * n_t, value=-1, out=dn)
        # dz = dh * (h_prev - n) * z * (1 - z)
        torch.sub(h_prev, n_t, out=dz)
        dz.mul_(dh).mul_(z).mul_(one_minus)
        # d(W_hn h + b_hn) = dn * r; dr = dn * (W_hn h + b_hn) * r * (1 - r)
        torch.mul(dn, r, out=d[..., 2 * hidden:])
        torch.mul(dn, gh[t, ..., 2 * hidden:], out=dr)
        dr.mul_(r).sub_(dr * r)
        # dh_prev = dh * z + d_hh @ W_hh
        recurrent(d.to(mm_dtype) if cast else d, mm)
        dh = (dh * z).add_(mm)
    d_in = torch.cat([d_hh[..., :2 * hidden], d_n], -1)  # (T, D, B, 3H)
    return d_hh, d_in
