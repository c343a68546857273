"""birnn's LSTM recurrence (`birnn.encoder.lstm`, `encoder.lstm=birnn`): its C loop against
PyTorch's LSTM, and where `lstm=auto` takes it.

`test_encoder.py` checks every stack against a reference built from PyTorch modules with the
default `lstm=auto` (on CPU: birnn's recurrence where its C loop runs); here the two
recurrences are compared directly, gradients included.
"""

from __future__ import annotations

import pytest
import torch
from test_encoder import (
    INPUT,
    assert_close,
    assert_same_parameter_gradients,
    assert_same_stack,
    batch_input,
    module_twins,
    twin,
)

from birnn import BiRNN
from birnn.encoder import lstm, native, policy
from birnn.encoder.lstm import LSTMLayer
from birnn.errors import ConfigError

needs_loop = pytest.mark.skipif(not lstm.loop_available(),
                                reason="no C kernel or no MKL sgemm_ in PyTorch's library")


@needs_loop
@pytest.mark.parametrize(("dirs", "threads"), [(2, None), (2, 1), (1, 2), (3, 2)])
def test_recurrence_gradients_equal_nn_lstm(dirs, threads, monkeypatch):
    """`dirs` directions of the C loop against as many `nn.LSTM` modules: outputs and the
    gradients of the input and of every weight and bias. The loop runs up to `threads`
    directions at once (None: this process's threads)."""
    if threads is not None:
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    t, batch, width, hidden = 7, 4, 5, 6
    modules, copies = module_twins(torch.nn.LSTM, dirs, width, hidden)
    x = torch.randn(t, batch, width)
    grad_out = torch.randn(dirs, t, batch, hidden)

    x_ref = x.clone().requires_grad_(True)
    want = torch.stack([m(x_ref)[0] for m in modules])  # (D, T, B, H)
    want.backward(grad_out)

    x_own = x.clone().requires_grad_(True)

    def stacked(name):
        return torch.stack([getattr(c, name) for c in copies])

    got = LSTMLayer.apply(x_own.expand(dirs, -1, -1, -1), stacked("weight_ih_l0"),
                          stacked("bias_ih_l0") + stacked("bias_hh_l0"), stacked("weight_hh_l0"))
    got.backward(grad_out)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(x_own.grad, x_ref.grad, atol=1e-5, rtol=0)
    assert_same_parameter_gradients(copies, modules)


STACKS = [
    (["lstm"], ["concat"], False),
    (["lstm", "lstm"], ["concat", "none"], False),
    (["lstm", "lstm", "lstm"], ["sum", "mul", "ave"], True),
    (["gru", "lstm", "rnn"], ["sum", "concat", "ave"], False),
]


@needs_loop
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize(("cells", "merges", "residual"), STACKS)
def test_birnn_lstm_equals_torch_lstm_values_and_gradients(cells, merges, residual, full):
    torch_lstm = BiRNN(INPUT, 4, cells, merge=merges, residual=residual, lstm="torch")
    birnn_lstm = twin(torch_lstm, "layered", lstm="birnn")
    assert policy.BIRNN_LSTM in birnn_lstm.plan(torch.device("cpu"), 6).layers
    assert_same_stack(torch_lstm, birnn_lstm, full)


@needs_loop
def test_birnn_lstm_at_training_sizes():
    """A batch of realistic width, on every thread this process has."""
    torch_lstm = BiRNN(40, 64, "lstm", 2, merge="concat", lstm="torch")
    birnn_lstm = twin(torch_lstm, "layered", lstm="birnn")
    x = torch.randn(16, 25, 40)
    lengths = torch.randint(15, 26, (16,))
    want, _ = torch_lstm(x, lengths)
    got, _ = birnn_lstm(x, lengths)
    assert_close(got, want, atol=1e-5)
    grad = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, list(torch_lstm.parameters()), grad)
    got_grads = torch.autograd.grad(got, list(birnn_lstm.parameters()), grad)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


@needs_loop
def test_inference_equals_torch_lstm():
    """Without gradients nothing is kept for a backward pass: the outputs stay PyTorch's."""
    torch_lstm = BiRNN(INPUT, 8, "lstm", 2, merge="concat", lstm="torch")
    birnn_lstm = twin(torch_lstm, "layered", lstm="birnn")
    x, lengths = batch_input()
    with torch.no_grad():
        assert birnn_lstm.plan(torch.device("cpu"), 6).layers == (policy.BIRNN_LSTM,) * 2
        assert_close(birnn_lstm(x, lengths), torch_lstm(x, lengths))


@needs_loop
def test_other_dtypes_run_pytorchs_lstm():
    """The loop is fp32: a float64 model runs PyTorch's LSTM under `lstm=birnn`, exactly."""
    torch_lstm = BiRNN(INPUT, 4, "lstm", 2, lstm="torch").double()
    birnn_lstm = twin(torch_lstm, "layered", lstm="birnn").double()
    x, lengths = batch_input()
    x = x.double()
    assert not lstm.runs_here(x)
    got, want = birnn_lstm(x, lengths), torch_lstm(x, lengths)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_auto_takes_birnn_lstm_on_cpu_where_the_loop_runs(monkeypatch):
    def layers(model, device="cpu"):
        return model.plan(torch.device(device), 6).layers

    loop = lstm.loop_available()
    birnn = policy.BIRNN_LSTM
    assert (layers(BiRNN(INPUT, 4, "lstm", 2)) == (birnn, birnn)) == loop
    with torch.no_grad():
        assert (layers(BiRNN(INPUT, 4, "lstm")) == (birnn,)) == loop
    assert (layers(BiRNN(INPUT, 4, ["lstm", "gru"], gru="torch"))[0] == birnn) == loop
    assert birnn not in layers(BiRNN(INPUT, 4, "lstm", lstm="torch"))
    assert birnn not in layers(BiRNN(INPUT, 4, "lstm", ragged="pack"))
    assert birnn not in layers(BiRNN(INPUT, 4, "lstm", impl="layered"), "cuda")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert birnn not in layers(BiRNN(INPUT, 4, "lstm", lstm="birnn"))
    # without the C loop (no compiler, no MKL) PyTorch's LSTM runs, lstm=birnn too
    monkeypatch.setattr(native, "blas", lambda: None)
    assert birnn not in layers(BiRNN(INPUT, 4, "lstm", lstm="birnn"))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lstm": "fast"}, r"^encoder\.lstm: must be one of auto, torch, birnn, got 'fast'$"),
    ({"lstm": "birnn", "ragged": "pack"},
     r"^encoder\.lstm: 'birnn' .* ragged=pack rules out.*or lstm=torch"),
])
def test_bad_lstm_option(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BiRNN(INPUT, 4, "lstm", **kwargs)
