"""birnn's GRU recurrence (`birnn.encoder.gru`, `encoder.gru=birnn`) against PyTorch's GRU.

`test_encoder.py` checks every stack against a reference built from PyTorch modules with the
default `gru=auto` (on CPU: birnn's recurrence where its C kernel builds or oneDNN's matmul is
the faster, unless `ragged=pack`); here the two recurrences are compared directly, gradients
included, and the pieces on their own, with both matmul paths and both step implementations
(the C kernel, PyTorch ops) whichever this CPU takes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_encoder import (
    INPUT,
    assert_close,
    assert_same_parameter_gradients,
    assert_same_stack,
    assert_same_values_and_gradients,
    batch_input,
    module_twins,
    twin,
)

from birnn import BiRNN
from birnn.encoder import gru, native
from birnn.encoder.gru import GRURecurrence, Linear
from birnn.errors import ConfigError


@pytest.fixture(autouse=True, params=["onednn", "torch-matmul"])
def matmul(request, monkeypatch):
    """Every test with both matmul paths of the recurrence, whichever this CPU's probe picks
    (`onednn_is_faster`)."""
    monkeypatch.setattr(gru, "onednn_is_faster", lambda: request.param == "onednn")
    torch.manual_seed(0)
    return request.param


@pytest.fixture(autouse=True, params=["c-kernel", "c-steps", "torch-ops"])
def steps(request, monkeypatch):
    """Every test with each implementation of the loop: birnn's C kernel running the whole
    fp32 loop with MKL's sgemm_ (a direction per thread), the kernel's steps in a Python loop
    (where MKL is missing), and PyTorch ops. The kernel's are skipped where it cannot be
    built; "c-steps" is "c-kernel" where there is no MKL."""
    if request.param == "torch-ops":
        monkeypatch.setattr(native, "gru_kernel", lambda: None)
    elif native.gru_kernel() is None:
        pytest.skip("birnn's C kernel could not be built here (no C compiler?)")
    if request.param == "c-steps":
        monkeypatch.setattr(native, "blas", lambda: None)
    return request.param


def test_the_chosen_step_implementation_runs(steps, monkeypatch):
    """fp32 and bf16 recurrences take the C kernel when it is there, other dtypes never."""
    calls = []
    real = gru._forward_native
    monkeypatch.setattr(gru, "_forward_native", lambda *a: calls.append(a[3]) or real(*a))
    for dtype in (torch.float32, torch.bfloat16):
        gates = torch.randn(3, 2, 2, 6, dtype=dtype)
        GRURecurrence.apply(gates, torch.randn(2, 6, 2), torch.randn(2, 6), dtype)
    GRURecurrence.apply(*(t.double() for t in (torch.randn(3, 2, 2, 6), torch.randn(2, 6, 2),
                                               torch.randn(2, 6))), torch.double)
    assert calls == ([torch.float32, torch.bfloat16] if steps != "torch-ops" else [])


def test_fp32_loops_in_c_where_mkl_is_there(steps, monkeypatch):
    """The kernel's whole-loop functions run fp32 recurrences, forward and backward, where
    MKL's sgemm_ was found; bf16 ones and the other implementations loop in Python."""
    found = []
    real = gru._blas
    monkeypatch.setattr(gru, "_blas", lambda dtype: found.append(real(dtype)) or found[-1])
    for dtype in (torch.float32, torch.bfloat16):
        gates = torch.randn(3, 2, 2, 6, dtype=dtype, requires_grad=True)
        GRURecurrence.apply(gates, torch.randn(2, 6, 2), torch.randn(2, 6), dtype).sum() \
            .backward()
    looped = [blas is not None for blas in found]
    if steps == "c-kernel" and native.blas() is not None:
        assert looped == [True, True, False, False]
    else:
        assert not any(looped)


def test_linear_takes_the_path_the_probe_chose(matmul, monkeypatch):
    calls = []
    monkeypatch.setattr(gru, "onednn_linear", lambda *args: calls.append(args) or F.linear(*args))
    x, weight = torch.randn(3, 4), torch.randn(5, 4)
    torch.testing.assert_close(gru.linear(x, weight), F.linear(x, weight))
    assert len(calls) == (1 if matmul == "onednn" and gru.ONEDNN else 0)


def test_recurrence_gradients_match_finite_differences(steps):
    """The hand-written backward pass of the PyTorch-ops steps against numerical
    differentiation (float64, which the C kernel never takes: its gradients are checked in
    float32 against these steps and against `nn.GRU` below)."""
    if steps != "torch-ops":
        pytest.skip("float64 runs the PyTorch-ops steps only")
    steps, dirs, batch, hidden = 4, 2, 3, 3
    gates = torch.randn(steps, dirs, batch, 3 * hidden, dtype=torch.double, requires_grad=True)
    weight = torch.randn(dirs, 3 * hidden, hidden, dtype=torch.double, requires_grad=True)
    bias = torch.randn(dirs, 3 * hidden, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda g, w, b: GRURecurrence.apply(g, w, b, torch.double), (gates, weight, bias))


def test_recurrence_matches_gru_cell():
    """Each direction's states equal `torch.nn.GRUCell` stepped by hand from zero."""
    steps, dirs, batch, hidden, width = 5, 2, 3, 4, 6
    cells = [torch.nn.GRUCell(width, hidden) for _ in range(dirs)]
    x = torch.randn(steps, batch, width)
    gates = torch.stack([F.linear(x, c.weight_ih, c.bias_ih) for c in cells], 1)
    with torch.no_grad():
        got = GRURecurrence.apply(gates, torch.stack([c.weight_hh for c in cells]),
                                  torch.stack([c.bias_hh for c in cells]), torch.float32)
        for k, cell in enumerate(cells):
            h = torch.zeros(batch, hidden)
            for t in range(steps):
                h = cell(x[t], h)
                torch.testing.assert_close(got[t, k], h, atol=1e-5, rtol=0)


def recurrence_and_gradients(gates, weight, bias, grad_out, mm_dtype):
    """`GRURecurrence` forward, and the gradients of <out, grad_out> for its three inputs."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (gates, weight, bias)]
    out = GRURecurrence.apply(*leaves, mm_dtype)
    return out.detach(), torch.autograd.grad(out, leaves, grad_out)


@pytest.mark.parametrize("mm_dtype", [torch.float32, torch.bfloat16])
def test_kernel_gradients_equal_the_ops_steps(steps, mm_dtype, monkeypatch):
    """The C kernel's forward and backward steps (fp32 state, fp32 or bf16 matmuls) against
    the same equations as PyTorch ops, on one input."""
    if steps == "torch-ops":
        pytest.skip("compares the C kernel with the PyTorch-ops steps")
    t, dirs, batch, hidden = 9, 2, 5, 8
    gates = torch.randn(t, dirs, batch, 3 * hidden).to(mm_dtype)
    weight = torch.randn(dirs, 3 * hidden, hidden) * 0.4
    bias = torch.randn(dirs, 3 * hidden) * 0.4
    grad_out = torch.randn(t, dirs, batch, hidden)
    assert gru.native_steps(gates, weight, mm_dtype)
    kernel = recurrence_and_gradients(gates, weight, bias, grad_out, mm_dtype)
    monkeypatch.setattr(native, "gru_kernel", lambda: None)
    assert not gru.native_steps(gates, weight, mm_dtype)
    ops = recurrence_and_gradients(gates, weight, bias, grad_out, mm_dtype)
    tol = 1e-5 if mm_dtype == torch.float32 else 2e-2
    for got, want in zip((kernel[0], *kernel[1]), (ops[0], *ops[1]), strict=True):
        scale = want.abs().max()
        assert scale > 0
        torch.testing.assert_close(got.float() / scale, want.float() / scale, atol=tol, rtol=0)


@pytest.mark.parametrize(("dirs", "threads"), [(2, None), (2, 1), (1, 2), (3, 2)])
def test_recurrence_gradients_equal_nn_gru_in_float32(steps, dirs, threads, monkeypatch):
    """`dirs` directions of the recurrence (the C loop, the kernel's steps or PyTorch ops)
    against as many `nn.GRU` modules in float32: outputs and the gradients of the input and
    of every weight, the input gates computed from `x` by the modules' own input weights.
    The C loop runs up to `threads` directions at once (None: this process's threads)."""
    if threads is not None:
        if steps != "c-kernel":
            pytest.skip("the thread count matters to the C loop only")
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    t, batch, width, hidden = 7, 4, 5, 6
    modules, copies = module_twins(torch.nn.GRU, dirs, width, hidden)
    x = torch.randn(t, batch, width)
    grad_out = torch.randn(t, dirs, batch, hidden)

    x_ref = x.clone().requires_grad_(True)
    want = torch.stack([m(x_ref)[0] for m in modules], 1)  # (T, 2, B, H)
    want.backward(grad_out)

    x_own = x.clone().requires_grad_(True)
    gates = torch.stack([F.linear(x_own, c.weight_ih_l0, c.bias_ih_l0) for c in copies], 1)
    assert gru.native_steps(gates, copies[0].weight_hh_l0, torch.float32) == (
        steps != "torch-ops")
    got = GRURecurrence.apply(gates, torch.stack([c.weight_hh_l0 for c in copies]),
                              torch.stack([c.bias_hh_l0 for c in copies]), torch.float32)
    got.backward(grad_out)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(x_own.grad, x_ref.grad, atol=1e-5, rtol=0)
    assert_same_parameter_gradients(copies, modules)


@pytest.mark.parametrize("transposed", [False, True])
def test_linear_equals_f_linear(transposed):
    """oneDNN's matmul (the CPU path of `Linear`): values and all three gradients."""
    x = torch.randn(7, 5, requires_grad=True)
    weight = torch.randn(5, 6).t() if transposed else torch.randn(6, 5)
    weight.requires_grad_(True)
    bias = torch.randn(6, requires_grad=True)
    grad = torch.randn(7, 6)
    want = F.linear(x, weight, bias)
    want_grads = torch.autograd.grad(want, (x, weight, bias), grad)
    got = Linear.apply(x, weight, bias)
    got_grads = torch.autograd.grad(got, (x, weight, bias), grad)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


STACKS = [
    (["gru"], ["concat"], False),
    (["gru", "gru"], ["concat", "none"], False),
    (["gru", "gru", "gru"], ["sum", "mul", "ave"], True),
    (["lstm", "gru", "rnn"], ["sum", "concat", "ave"], False),
]


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(("cells", "merges", "residual"), STACKS)
def test_birnn_gru_equals_torch_gru_values_and_gradients(cells, merges, residual, full):
    torch_gru = BiRNN(INPUT, 4, cells, merge=merges, residual=residual, dropout=0.0,
                      gru="torch")
    birnn_gru = twin(torch_gru, "layered", gru="birnn")
    assert_same_stack(torch_gru, birnn_gru, full)


def test_birnn_gru_at_training_sizes():
    """A batch of realistic width (oneDNN picks other kernels than for tiny matrices)."""
    torch_gru = BiRNN(40, 64, "gru", 2, merge="concat", gru="torch")
    birnn_gru = twin(torch_gru, "layered", gru="birnn")
    x = torch.randn(16, 25, 40)
    lengths = torch.randint(15, 26, (16,))

    def close(got, want):
        assert_close(got, want, atol=1e-4)

    assert_same_values_and_gradients(torch_gru, birnn_gru, x, lengths, close)


def test_inference_equals_torch_gru(steps, monkeypatch):
    """Without gradients the C kernel keeps one step's gates instead of every step's: the
    outputs stay PyTorch's."""
    torch_gru = BiRNN(INPUT, 8, "gru", 2, merge="concat", gru="torch")
    birnn_gru = twin(torch_gru, "layered", gru="birnn")
    kept = []
    real = gru._forward_native
    monkeypatch.setattr(gru, "_forward_native",
                        lambda *a: kept.append(a[4]) or real(*a))
    x, lengths = batch_input()
    with torch.no_grad():
        assert_close(birnn_gru(x, lengths), torch_gru(x, lengths))
    assert kept == ([False, False] if steps != "torch-ops" else [])


def test_bf16_autocast_close_to_torch_fp32():
    """Under CPU bf16 autocast the matmuls run in bf16 and the state in fp32: outputs and
    gradients stay near PyTorch's fp32 GRU."""
    torch_gru = BiRNN(INPUT, 8, "gru", 2, merge="sum", gru="torch")
    birnn_gru = twin(torch_gru, "layered", gru="birnn")
    x, lengths = batch_input()
    want, _ = torch_gru(x, lengths)
    want.sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = birnn_gru(x, lengths)
    assert got.dtype == torch.float32  # the state's dtype: the weights'
    torch.testing.assert_close(got, want, atol=0.03, rtol=0)
    got.sum().backward()
    for (name, a), b in zip(torch_gru.named_parameters(), birnn_gru.parameters(), strict=True):
        scale = a.grad.abs().max()
        torch.testing.assert_close(b.grad / scale, a.grad / scale, atol=0.03, rtol=0,
                                   msg=name)


def test_auto_takes_birnn_gru_on_cpu_with_the_kernel_or_faster_onednn_unless_packing(
        matmul, steps):
    def birnn_gru(model, device):
        return model.plan(torch.device(device), 6).birnn_gru

    faster = matmul == "onednn" or steps != "torch-ops"
    assert birnn_gru(BiRNN(INPUT, 4, "gru"), "cpu") == faster
    assert birnn_gru(BiRNN(INPUT, 4, ["lstm", "gru"]), "cpu") == faster
    assert birnn_gru(BiRNN(INPUT, 4, "gru", gru="birnn"), "cpu")
    assert not birnn_gru(BiRNN(INPUT, 4, "gru", merge="sum"), "cuda")
    assert not birnn_gru(BiRNN(INPUT, 4, "lstm"), "cpu")  # no GRU layer
    assert not birnn_gru(BiRNN(INPUT, 4, "gru", ragged="pack"), "cpu")
    assert not birnn_gru(BiRNN(INPUT, 4, "gru", gru="torch"), "cpu")
    assert birnn_gru(BiRNN(INPUT, 4, "gru", merge="sum", gru="birnn"), "cuda")
    # only the GRU layers of a mixed stack take it; the others run padded alongside
    plan = BiRNN(INPUT, 4, ["lstm", "gru"], gru="birnn", lstm="torch").plan(
        torch.device("cpu"), 6)
    assert plan.layers == ("reversed", "birnn_gru")
    # inference: birnn's with the C kernel; without it (as PyTorch ops) only under bf16
    # autocast, where oneDNN's matmul is the faster
    with torch.no_grad():
        assert birnn_gru(BiRNN(INPUT, 4, "gru"), "cpu") == (steps != "torch-ops")
        assert birnn_gru(BiRNN(INPUT, 4, "gru", gru="birnn"), "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert birnn_gru(BiRNN(INPUT, 4, "gru"), "cpu") == faster


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"gru": "fast"}, r"^encoder\.gru: must be one of auto, torch, birnn, got 'fast'$"),
    ({"gru": "birnn", "ragged": "pack"}, r"^encoder\.gru: 'birnn' .* ragged=pack rules out"),
])
def test_bad_gru_option(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BiRNN(INPUT, 4, "gru", **kwargs)
