"""`directions="concurrent"` (`birnn.encoder.concurrent`): the two directions of each layer
trained on two threads; `directions="auto"`, which takes it for GRU layers of long batches.

Checked against computations that do not use it: the per-sequence reference of
`test_encoder.py` (separate unidirectional PyTorch modules, merged by hand) for values, and
PyTorch's packed bidirectional modules (`ragged="pack"`) for values and every gradient.
"""

import functools
import os
import signal
import threading
import time

import pytest
import torch
from conftest import needs_cpu_bf16
from test_encoder import (
    INPUT,
    assert_close,
    assert_same_stack,
    assert_same_values_and_gradients,
    batch_input,
    reference_forward,
    twin,
)

import birnn
from birnn.encoder import directions, policy
from birnn.encoder.concurrent import two_directions
from birnn.errors import ConfigError

# These tests are about running the two directions of PyTorch's recurrences (and of birnn's
# GRU) on two threads; birnn's LSTM recurrence runs its directions on threads of its own, in
# C (test_lstm.py), so the LSTM layers here keep PyTorch's.
BiRNN = functools.partial(birnn.BiRNN, lstm="torch")

STACKS = [
    (["lstm", "lstm"], ["concat", "sum"]),
    (["gru", "gru"], ["mul", "ave"]),
    (["rnn", "gru", "lstm"], ["concat", "ave", "none"]),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def concurrent(model, device, steps):
    """Per layer, whether `model` now runs its two directions on two threads for a batch of
    `steps` steps on `device`."""
    return [s == "concurrent" for s in model.plan(torch.device(device), steps).layers] \
        or [False] * model.num_layers


@pytest.mark.parametrize(("cells", "merges"), STACKS)
def test_training_forward_matches_reference(cells, merges):
    hiddens = [4] * len(cells)
    model = BiRNN(INPUT, hiddens, cells, merge=merges, gru="torch", directions="concurrent")
    x, lengths = batch_input()
    assert model.training and torch.is_grad_enabled()
    assert all(concurrent(model, x.device, x.size(1)))
    outputs, final = model(x, lengths)
    expected = reference_forward(model, cells, hiddens, merges, x, lengths.tolist())
    assert_close(outputs, expected[0])
    assert_close(final, expected[1])


@pytest.mark.parametrize(("cells", "merges"), STACKS)
@pytest.mark.parametrize("full", [False, True])
def test_values_and_gradients_equal_packed_modules(cells, merges, full):
    packed = BiRNN(INPUT, 4, cells, merge=merges, gru="torch", ragged="pack")
    concurrent = twin(packed, "layered", ragged="auto", directions="concurrent")
    assert_same_stack(packed, concurrent, full)


@pytest.mark.parametrize("full", [False, True])
def test_birnn_gru_directions_on_two_threads_equal_packed_modules(full, monkeypatch):
    """`gru="birnn"` with `directions="concurrent"`: birnn's recurrence, one direction per
    thread, against PyTorch's packed modules (values and gradients)."""
    threads = []
    one = directions.gru_direction

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return one(*args, **kwargs)

    monkeypatch.setattr(directions, "gru_direction", recording)
    packed = BiRNN(INPUT, 4, ["gru", "lstm", "gru"], merge=["sum", "concat", "ave"],
                   gru="torch", ragged="pack")
    ours = twin(packed, "layered", ragged="auto", gru="birnn", directions="concurrent")
    assert ours.plan(torch.device("cpu"), 9).layers == (
        "birnn_gru_concurrent", "concurrent", "birnn_gru_concurrent")
    assert_same_stack(packed, ours, full)
    assert len(threads) == 4 and len(set(threads)) == 2  # 2 GRU layers x 2 directions


def record_directions(monkeypatch):
    """Patch the one-direction function to record (thread name, output dtype) per call."""
    calls = []
    direction = directions.direction

    def recording(*args, **kwargs):
        out = direction(*args, **kwargs)
        calls.append((threading.current_thread().name, out.dtype))
        return out

    monkeypatch.setattr(directions, "direction", recording)
    return calls


@needs_cpu_bf16
def test_directions_run_on_two_threads_under_the_callers_autocast(monkeypatch):
    model = BiRNN(INPUT, 8, ["lstm", "gru"], merge="sum", gru="torch", directions="concurrent")
    x, lengths = batch_input()
    calls = record_directions(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, _ = model(x, lengths)
    outputs.float().sum().backward()
    threads = {name for name, _ in calls}
    assert len(calls) == 4 and len(threads) == 2, calls
    assert threading.current_thread().name in threads
    # autocast is per thread: the worker's direction ran in bf16 like the caller's
    assert {dtype for _, dtype in calls} == {torch.bfloat16}, calls
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@needs_cpu_bf16
def test_bf16_matches_serial_run():
    serial = BiRNN(INPUT, 8, ["gru", "lstm"], merge="concat", gru="torch", ragged="reverse")
    concurrent = twin(serial, "layered", directions="concurrent")
    x, lengths = batch_input()

    def close(got, expected):
        assert_close(got, expected, atol=2e-2)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_same_values_and_gradients(serial, concurrent, x, lengths, close=close)


def test_inference_runs_serial(monkeypatch):
    model = BiRNN(INPUT, 4, "gru", 2, merge="sum", gru="torch", directions="concurrent")
    x, lengths = batch_input()
    calls = record_directions(monkeypatch)
    with torch.no_grad():
        assert not any(concurrent(model, x.device, x.size(1)))
        model(x, lengths)
    assert {name for name, _ in calls} <= {threading.current_thread().name}


def test_thread_count_restored_when_a_direction_fails(monkeypatch):
    model = BiRNN(INPUT, 4, "lstm", merge="concat", directions="concurrent")
    x, lengths = batch_input()
    threads = torch.get_num_threads()
    direction = directions.direction

    def failing(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("worker direction failed")
        return direction(*args, **kwargs)

    monkeypatch.setattr(directions, "direction", failing)
    with pytest.raises(RuntimeError, match="worker direction failed"):
        model(x, lengths)
    assert torch.get_num_threads() == threads
    monkeypatch.setattr(directions, "direction", direction)
    model(x, lengths)[0].sum().backward()  # the worker still serves the next call
    assert torch.get_num_threads() == threads


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def test_auto_is_the_default_and_takes_gru_layers_of_long_batches(two_threads):
    cpu, long = "cpu", policy.AUTO_CONCURRENT_MIN_STEPS
    model = BiRNN(INPUT, 4, ["lstm", "gru", "rnn"], gru="torch")
    assert model.directions == "auto"
    assert concurrent(model, cpu, long) == [False, True, False]
    assert concurrent(model, cpu, long - 1) == [False, False, False]
    assert not any(concurrent(model, "cuda", long))
    with torch.no_grad():
        assert not any(concurrent(model, cpu, long))
    torch.set_num_threads(1)  # one thread has nothing to split
    assert not any(concurrent(model, cpu, long))
    torch.set_num_threads(2)
    # birnn's GRU recurrence already runs both directions in one loop
    own = BiRNN(INPUT, 4, ["lstm", "gru", "rnn"], gru="birnn")
    assert own.plan(torch.device(cpu), long).layers == ("reversed", "birnn_gru", "reversed")
    assert not any(concurrent(BiRNN(INPUT, 4, "gru", ragged="pack"), cpu, long))
    assert not any(concurrent(BiRNN(INPUT, 4, "gru", directions="serial"), cpu, long))
    assert not any(concurrent(BiRNN(INPUT, 4, directions="concurrent", merge="sum"), "cuda",
                              long))


@pytest.mark.parametrize("gru", ["torch", "birnn"])
def test_auto_runs_gru_layers_of_long_batches_on_two_threads(monkeypatch, two_threads, gru):
    """A [gru, lstm] stack over a batch of AUTO_CONCURRENT_MIN_STEPS steps: the GRU layer's
    directions on two threads (unless birnn's GRU recurrence runs it), the LSTM layer's on
    this one; values and gradients as the serial stack's."""
    total = policy.AUTO_CONCURRENT_MIN_STEPS
    serial = BiRNN(INPUT, 6, ["gru", "lstm"], merge=["sum", "concat"], gru=gru,
                   directions="serial")
    auto = twin(serial, "layered", directions="auto")
    x, lengths = batch_input([total, 7, total - 3], total)
    calls = record_directions(monkeypatch)
    assert_same_values_and_gradients(serial, auto, x, lengths)
    here = threading.current_thread().name
    # the serial stack: its LSTM layer (and the GRU's when PyTorch's recurrence runs it)
    serial_calls = calls[: 2 if gru == "birnn" else 4]
    auto_calls = calls[len(serial_calls):]
    assert {name for name, _ in serial_calls} == {here}
    names = [name for name, _ in auto_calls]
    if gru == "torch":  # GRU layer: two threads; LSTM layer: this thread
        assert len(names) == 4 and set(names[:2]) != {here} and set(names[2:]) == {here}
    else:
        assert names == [here, here]
    # a shorter batch runs every layer serial
    calls.clear()
    auto(*batch_input([total - 1, 5], total - 1))[0].sum().backward()
    assert {name for name, _ in calls} == {here}


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [({"directions": "parallel"}, "concurrent"),
     ({"directions": "concurrent", "ragged": "pack"}, "ragged")],
)
def test_config_errors(kwargs, shown):
    with pytest.raises(ConfigError, match=shown):
        BiRNN(INPUT, 4, **kwargs)


def test_two_directions_without_gradients_runs_both_threads():
    """Under no_grad the two functions still run on two threads, without building a graph."""
    seen = []

    def record(x, w):
        seen.append(threading.current_thread().name)
        return x @ w

    x, w1, w2 = torch.randn(3, 4), torch.randn(4, 2, requires_grad=True), torch.randn(4, 5)
    with torch.no_grad():
        a, b = two_directions(record, [x, w1], record, [x, w2])
    assert len(set(seen)) == 2
    torch.testing.assert_close(a, x @ w1.detach())
    torch.testing.assert_close(b, x @ w2)
    assert not a.requires_grad and a.grad_fn is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_trains_both_directions_on_its_own_thread():
    """A child forked after the worker thread started (the thread is not copied) trains
    instead of waiting forever on the parent's thread: it runs both directions itself, one
    after the other, and starts no thread (two threads in a forked child crashed now and then:
    the libraries' thread state does not survive fork())."""
    model = BiRNN(INPUT, 4, "gru", merge="sum", gru="torch", directions="concurrent")
    x, lengths = batch_input()
    model(x, lengths)[0].sum().backward()  # starts the worker in this process
    pid = os.fork()
    if pid == 0:  # the child: train once, report through the exit status, never return
        code = 1
        try:
            # one intra-op thread, as DataLoader workers set: GNU OpenMP's thread pool does
            # not survive fork() either
            torch.set_num_threads(1)
            threads = threading.active_count()
            model(x, lengths)[0].sum().backward()
            if not all(p.grad is not None for p in model.parameters()):
                code = 2
            elif threading.active_count() != threads:
                code = 3
            else:
                code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish a concurrent training step in 60 s")
    assert os.waitstatus_to_exitcode(done[1]) == 0
