"""Tests for birnn.encoder.BiRNN: stacked bidirectional RNN layers with a merge after each.

The independent reference (`reference_forward` below) never calls BiRNN.forward and never
packs or pads. For every layer it builds two UNIDIRECTIONAL single-layer torch modules
(nn.LSTM / nn.GRU / nn.RNN, bidirectional=False) and copies into them the BiRNN layer's
weights (`*_l0` into the forward module, `*_l0_reverse` into the backward one). It then runs
one sequence at a time on its real tokens only:

    forward  = fwd(x[i, :len])
    backward = bwd(x[i, :len].flip(0)).flip(0)

merges the two by hand (cat / + / * / (f + b) / 2 / pair) and feeds the merged sequence to
the next layer. The final state is the last layer's forward module's last `h` and backward
module's last `h` (not `c`), merged by the last layer's mode. Outputs are compared after
zero-padding the reference to T, so padding positions must come out as exact zeros.

Inputs are random everywhere, padding positions included, so any leak of padding into a
sequence's result shows up.
"""

import pytest
import torch
from conftest import needs_cpu_bf16
from torch import nn

from birnn import BiRNN
from birnn.errors import ConfigError

CELL_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
MODES = ("concat", "sum", "mul", "ave", "none")
ATOL = 1e-5

INPUT = 3
T = 6
# Unsorted, with a length-1 sequence and a full-length one that is not first.
LENGTHS = [4, 1, T, 3]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tensors here are tiny: extra intra-op threads only add overhead on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the independent reference ----------------------------------------------------------


def hand_merge(f, b, mode):
    """Keras merge written out by hand; f, b: (L, H)."""
    if mode == "concat":
        return torch.cat([f, b], dim=-1)  # (L, 2H)
    if mode == "sum":
        return f + b
    if mode == "mul":
        return f * b
    if mode == "ave":
        return (f + b) / 2
    if mode == "none":
        return (f, b)
    raise AssertionError(mode)


def direction_modules(layer, cell, in_width, hidden):
    """Two unidirectional copies of one bidirectional BiRNN layer: (forward, backward)."""
    cls = CELL_CLASSES[cell]
    assert layer.cell == cell, f"layer is {layer.cell}, config says {cell}"
    fwd = cls(in_width, hidden, num_layers=1, batch_first=True, bidirectional=False)
    bwd = cls(in_width, hidden, num_layers=1, batch_first=True, bidirectional=False)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            # copy_ also checks the shapes, i.e. the layer's input width and hidden size
            getattr(fwd, f"{name}_l0").copy_(getattr(layer, f"{name}_l0"))
            getattr(bwd, f"{name}_l0").copy_(getattr(layer, f"{name}_l0_reverse"))
    return fwd.eval(), bwd.eval()


def last_h(state):
    h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c); take h
    return h[0, 0]  # (1 layer, batch 1, H) -> (H,)


@torch.no_grad()
def reference_forward(model, cells, hiddens, merges, x, lengths):
    """Outputs (B, T, W) or a pair, and final (B, W) or a pair, computed without BiRNN."""
    batch, total = x.shape[:2]
    dirs = []
    width = x.shape[-1]
    for layer, cell, hidden, mode in zip(model.layers, cells, hiddens, merges, strict=True):
        dirs.append(direction_modules(layer, cell, width, hidden))
        width = 2 * hidden if mode == "concat" else hidden

    outs, finals = [], []
    for i in range(batch):
        seq = x[i, : lengths[i]]  # (L, I): real tokens only, no padding
        for (fwd, bwd), mode in zip(dirs, merges, strict=True):
            f_out, f_state = fwd(seq.unsqueeze(0))  # (1, L, H)
            b_out, b_state = bwd(seq.flip(0).unsqueeze(0))  # (1, L, H), reversed time
            f, b = f_out[0], b_out[0].flip(0)  # (L, H) each, both in original time order
            seq = hand_merge(f, b, mode)  # (L, W) or a pair of (L, H)
        outs.append(seq)
        finals.append(hand_merge(last_h(f_state), last_h(b_state), merges[-1]))

    def pad(rows):  # list of (L_i, W) -> (B, T, W), zeros after each end
        full = torch.zeros(batch, total, rows[0].shape[-1])
        for i, r in enumerate(rows):
            full[i, : r.shape[0]] = r
        return full

    if merges[-1] == "none":
        return (
            (pad([o[0] for o in outs]), pad([o[1] for o in outs])),
            (torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals])),
        )
    return pad(outs), torch.stack(finals)


# --- comparisons and batches ------------------------------------------------------------


def as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def assert_close(got, expected, atol=ATOL):
    got, expected = as_tuple(got), as_tuple(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape, (g.shape, e.shape)
        torch.testing.assert_close(g, e, atol=atol, rtol=0)


def batch_input(lengths=LENGTHS, total=T, width=INPUT):
    return torch.randn(len(lengths), total, width), torch.tensor(lengths)


def twin(model, impl, ragged=None, gru=None, directions=None, lstm=None):
    """A BiRNN with the same config and weights as `model` but another impl (or ragged, GRU
    or LSTM recurrence, or way of running the two directions)."""
    other = BiRNN(
        model.input_size,
        model.hidden_sizes,
        model.cells,
        merge=model.merges,
        dropout=model.dropout,
        impl=impl,
        residual=any(model.residuals),
        ragged=ragged or model.ragged,
        gru=gru or model.gru,
        lstm=lstm or model.lstm,
        directions=directions or model.directions,
    )
    other.load_state_dict(model.state_dict())
    return other.train(model.training)


def module_twins(cls, count, width, hidden):
    """`count` unidirectional `cls` (nn.LSTM, nn.GRU) modules and a copy of each with the same
    weights."""
    modules = [cls(width, hidden) for _ in range(count)]
    copies = [cls(width, hidden) for _ in range(count)]
    for copy, module in zip(copies, modules, strict=True):
        copy.load_state_dict(module.state_dict())
    return modules, copies


def assert_same_parameter_gradients(got_modules, want_modules, atol=1e-5):
    for got, want in zip(got_modules, want_modules, strict=True):
        for (name, a), b in zip(want.named_parameters(), got.parameters(), strict=True):
            torch.testing.assert_close(b.grad, a.grad, atol=atol, rtol=0, msg=name)


def stack_merges(mode, num_layers):
    """`mode` on every layer; `none` only on the last one (concat before it)."""
    if mode == "none":
        return ["concat"] * (num_layers - 1) + ["none"]
    return [mode] * num_layers


# --- 1. against the reference -----------------------------------------------------------


RAGGED = ["pack", "reverse"]


@pytest.mark.parametrize("ragged", RAGGED)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_matches_reference(cell, num_layers, mode, ragged):
    hidden = 4
    merges = stack_merges(mode, num_layers)
    model = BiRNN(INPUT, hidden, cell, num_layers, merge=merges, impl="layered",
                  ragged=ragged).eval()
    x, lengths = batch_input()
    expected = reference_forward(
        model, [cell] * num_layers, [hidden] * num_layers, merges, x, lengths.tolist()
    )

    impls = ["layered", "fused"] if model.fusable else ["layered"]
    for impl in impls:
        m = model if impl == "layered" else twin(model, impl)
        with torch.no_grad():
            outputs, final = m(x, lengths)
        assert_close(outputs, expected[0])
        assert_close(final, expected[1])


@pytest.mark.parametrize("ragged", RAGGED)
def test_mixed_stack_matches_reference(ragged):
    cells, hiddens, merges = ["gru", "lstm", "rnn"], [5, 3, 4], ["concat", "sum", "ave"]
    model = BiRNN(INPUT, hiddens, cells, merge=merges, ragged=ragged).eval()
    assert model.num_layers == 3 and not model.fusable
    x, lengths = batch_input()
    with torch.no_grad():
        outputs, final = model(x, lengths)
    expected_out, expected_final = reference_forward(
        model, cells, hiddens, merges, x, lengths.tolist()
    )
    assert outputs.shape == (len(LENGTHS), T, 4)
    assert_close(outputs, expected_out)
    assert_close(final, expected_final)


@pytest.mark.parametrize("ragged", RAGGED)
def test_mixed_stack_with_none_last_matches_reference(ragged):
    cells, hiddens, merges = ["lstm", "rnn"], [3, 5], ["mul", "none"]
    model = BiRNN(INPUT, hiddens, cells, merge=merges, ragged=ragged).eval()
    x, lengths = batch_input()
    with torch.no_grad():
        outputs, final = model(x, lengths)
    expected = reference_forward(model, cells, hiddens, merges, x, lengths.tolist())
    assert_close(outputs, expected[0])
    assert_close(final, expected[1])


def test_default_lengths_mean_full_length():
    model = BiRNN(INPUT, 4, "gru", 2, merge="sum").eval()
    x = torch.randn(3, T, INPUT)
    with torch.no_grad():
        outputs, final = model(x)
    expected = reference_forward(model, ["gru"] * 2, [4, 4], ["sum", "sum"], x, [T] * 3)
    assert_close(outputs, expected[0])
    assert_close(final, expected[1])


@pytest.mark.parametrize(
    ("kwargs", "fusable"),
    [
        ({"cell": "lstm", "num_layers": 3, "merge": "concat"}, True),
        ({"cell": "gru", "num_layers": 2, "merge": ["concat", "none"]}, True),
        ({"cell": "rnn", "num_layers": 1, "merge": "none"}, True),
        ({"cell": "lstm", "num_layers": 1, "merge": "sum"}, False),
        ({"cell": "lstm", "num_layers": 2, "merge": ["sum", "concat"]}, False),
        ({"cell": "lstm", "num_layers": 2, "merge": ["concat", "ave"]}, False),
        ({"cell": ["lstm", "gru"], "merge": "concat"}, False),
        ({"cell": "gru", "hidden_size": [4, 5], "merge": "concat"}, False),
    ],
)
def test_fusable(kwargs, fusable):
    kwargs.setdefault("hidden_size", 4)
    assert BiRNN(INPUT, **kwargs).fusable is fusable


# --- 2. fused vs layered ----------------------------------------------------------------

FUSABLE = [
    ("lstm", 1, "concat"),
    ("lstm", 3, "concat"),
    ("gru", 2, "concat"),
    ("gru", 3, "none"),
    ("rnn", 2, "none"),
    ("rnn", 3, "concat"),
]


def scalar_loss(outputs, final, weights):
    """A loss that weights every output and final-state element differently."""
    parts = as_tuple(outputs) + as_tuple(final)
    return sum((p * w).sum() for p, w in zip(parts, weights, strict=True))


def assert_same_values_and_gradients(a, b, x, lengths, close=None):
    """Run `a` and `b` forward and backward on copies of `x` with one loss that weights every
    output and final-state element differently; assert equal outputs, final states, input
    gradients and parameter gradients (every parameter gets one). `close(got, expected)`
    compares (default: `assert_close`). Returns `b`'s outputs and input gradient."""
    close = close or assert_close
    x_a = x.clone().requires_grad_(True)
    x_b = x.clone().requires_grad_(True)
    out_a, final_a = a(x_a, lengths)
    out_b, final_b = b(x_b, lengths)
    close(out_b, out_a)
    close(final_b, final_a)
    weights = [torch.randn_like(p) for p in as_tuple(out_a) + as_tuple(final_a)]
    scalar_loss(out_a, final_a, weights).backward()
    scalar_loss(out_b, final_b, weights).backward()
    assert x_a.grad.abs().sum() > 0
    close(x_b.grad, x_a.grad)
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        assert p.grad is not None and grads_b[name].grad is not None, name
        assert p.grad.abs().sum() > 0, name
        close(grads_b[name].grad, p.grad)
    return out_b, x_b.grad


def assert_same_stack(a, b, full=False):
    """`assert_same_values_and_gradients` for `a` and `b` on a ragged batch (a full-length one
    with `full`), and no gradient reaches the padded input positions."""
    x, lengths = batch_input()
    if full:
        lengths = torch.full_like(lengths, x.size(1))
    _, x_grad = assert_same_values_and_gradients(a, b, x, lengths)
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(x_grad[i, n:] == 0)


@pytest.mark.parametrize(("cell", "num_layers", "last"), FUSABLE)
def test_fused_equals_layered_values_and_gradients(cell, num_layers, last):
    merges = ["concat"] * (num_layers - 1) + [last]
    layered = BiRNN(INPUT, 4, cell, num_layers, merge=merges, impl="layered")
    fused = twin(layered, "fused")
    assert_same_stack(layered, fused)


def reverses(model, device, ragged=True):
    """Whether `model` runs a batch on `device` padded and reversed within lengths (packed
    otherwise, or padded as is for a full batch)."""
    plan = model.plan(torch.device(device), T, ragged)
    assert not (plan.pack and plan.reverse)
    assert plan.pack == (ragged and not plan.reverse)
    return plan.reverse


def test_auto_ragged_reverses_on_cpu_only():
    # serial directions and PyTorch's GRU: they would take the padded run for their own sake
    serial = {"directions": "serial", "gru": "torch", "lstm": "torch"}
    model = BiRNN(INPUT, 4, "lstm", 2, merge="sum", **serial)
    assert reverses(model, "cpu")
    assert not reverses(model, "cuda")
    assert not reverses(model, "cpu", ragged=False)  # a full batch runs as it is
    gru = BiRNN(INPUT, 4, "gru", 2, merge="sum", **serial)
    mixed = BiRNN(INPUT, 4, ["gru", "lstm"], merge="sum", **serial)
    assert reverses(gru, "cpu") and reverses(mixed, "cpu")
    with torch.no_grad():  # inference: packed unless a layer is an LSTM
        assert not reverses(gru, "cpu")
        assert reverses(mixed, "cpu") and reverses(model, "cpu")
    assert not reverses(BiRNN(INPUT, 4, ragged="pack"), "cpu")
    assert reverses(BiRNN(INPUT, 4, merge="sum", ragged="reverse"), "cuda")
    # birnn's GRU recurrence runs padded only: every layer reversed, full batches too
    own = BiRNN(INPUT, 4, ["gru", "lstm"], merge="sum", gru="birnn", lstm="torch")
    assert reverses(own, "cpu", ragged=False)
    assert own.plan(torch.device("cpu"), T).layers == ("birnn_gru", "reversed")


def test_auto_fuses_on_cuda_only():
    fusable = BiRNN(INPUT, 4, "lstm", 2)
    assert fusable.plan(torch.device("cuda"), T).fused
    assert not fusable.plan(torch.device("cpu"), T).fused
    assert not BiRNN(INPUT, 4, "lstm", 2, merge="sum").plan(torch.device("cuda"), T).fused
    assert not BiRNN(INPUT, 4, "lstm", 2, impl="layered").plan(torch.device("cuda"), T).fused
    assert BiRNN(INPUT, 4, "lstm", 2, impl="fused").plan(torch.device("cpu"), T).fused


@pytest.mark.parametrize("impl", ["auto", "fused"])
def test_export_plan_is_layered_padded_and_serial(impl, monkeypatch):
    """Traced or exported, every option takes the exportable path: layer by layer, padded and
    reversed within lengths (full batches too), PyTorch's GRU, serial directions."""
    from birnn.encoder import policy

    model = BiRNN(INPUT, 4, ["gru", "lstm"] if impl == "auto" else "gru", 2,
                  gru="birnn" if impl == "auto" else "auto", impl=impl)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert policy.exporting()
    for ragged in (True, False):
        plan = model.plan(torch.device("cuda"), 40, ragged)
        assert plan == policy.Plan(fused=False, pack=False, reverse=True,
                                   layers=("reversed", "reversed"))
    x, lengths = batch_input()
    monkeypatch.undo()
    with torch.no_grad():
        want = twin(model, "layered", ragged="pack", gru="torch")(x, lengths)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    with torch.no_grad():
        got = model(x, lengths)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])


def test_bidirectional_layer_matches_two_unidirectional_modules():
    """One `Bidirectional` layer on its own, every strategy: the forward module over the
    sequence, the backward module over it flipped, merged by hand."""
    from birnn.encoder import Bidirectional
    from birnn.encoder.layout import Layout

    layer = Bidirectional(INPUT, 4, "gru", "sum").eval()
    fwd, bwd = direction_modules(layer, "gru", INPUT, 4)
    x, lengths = batch_input()
    with torch.no_grad():
        for strategy in ("joint", "reversed", "concurrent", "birnn_gru"):
            layout = Layout(x, lengths, pack=strategy == "joint", reverse=strategy != "joint")
            merged, final = layer(layout.data, layout, strategy, return_state=True)
            merged = layout.restore(merged)
            for i, n in enumerate(lengths.tolist()):
                f, f_state = fwd(x[i : i + 1, :n])
                b, b_state = bwd(x[i : i + 1, :n].flip(1))
                assert_close(merged[i, :n], f[0] + b[0].flip(0))
                assert torch.all(merged[i, n:] == 0)
                assert_close(final[i], last_h(f_state) + last_h(b_state))


@pytest.mark.parametrize(
    ("cells", "merges", "residual"),
    [
        (["lstm", "lstm"], ["sum", "mul"], False),
        (["gru", "lstm", "rnn"], ["concat", "ave", "none"], False),
        (["lstm", "gru", "gru"], ["sum", "sum", "ave"], True),
    ],
)
def test_reverse_equals_pack_values_and_gradients(cells, merges, residual):
    """The two ragged strategies: same outputs, same gradients for input and every weight
    (the reference above checks values only; the packed path is PyTorch's own)."""
    packed = BiRNN(INPUT, 4, cells, merge=merges, residual=residual, ragged="pack")
    reverse = twin(packed, "layered", ragged="reverse")
    assert_same_stack(packed, reverse)


@pytest.mark.parametrize("layer_index", [0, 1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_uses_the_per_layer_parameters(cell, layer_index):
    layered = BiRNN(INPUT, 4, cell, 3, impl="layered").eval()
    fused = twin(layered, "fused")
    x, lengths = batch_input()
    with torch.no_grad():
        before, _ = fused(x, lengths)  # first call also lets the fused module set itself up
        for model in (layered, fused):
            model.layers[layer_index].weight_hh_l0_reverse.add_(0.5)
        out_l, final_l = layered(x, lengths)
        out_f, final_f = fused(x, lengths)
    assert not torch.allclose(out_f, before, atol=1e-3), "fused output ignored the change"
    assert_close(out_f, out_l)
    assert_close(final_f, final_l)


def test_fused_shares_parameters_with_layers():
    model = BiRNN(INPUT, 4, "lstm", 2, impl="fused")
    x, lengths = batch_input()
    with torch.no_grad():
        before, _ = model(x, lengths)
        model.layers[1].bias_ih_l0.add_(1.0)  # layer 2, forward direction
        after, _ = model(x, lengths)
    # only layer 2's forward half of the output moves
    assert not torch.allclose(after[..., :4], before[..., :4])
    # the backward half of layer 2 does not depend on that bias
    torch.testing.assert_close(after[..., 4:], before[..., 4:], atol=ATOL, rtol=0)


# --- 3. padding invariance --------------------------------------------------------------


@pytest.mark.parametrize(
    ("impl", "cell", "merges", "ragged"),
    [
        ("layered", "lstm", ["concat", "concat"], "pack"),
        ("layered", "lstm", ["concat", "concat"], "reverse"),
        ("fused", "lstm", ["concat", "concat"], "auto"),
        ("fused", "gru", ["concat", "none"], "auto"),
        ("layered", "gru", ["sum", "mul"], "pack"),
        ("layered", "gru", ["sum", "mul"], "reverse"),
        ("layered", "rnn", ["ave", "none"], "reverse"),
    ],
)
def test_padding_invariance(impl, cell, merges, ragged):
    model = BiRNN(INPUT, 4, cell, merge=merges, impl=impl, ragged=ragged).eval()
    lengths = [2, 5, 1, 8, 3]
    x, lens = batch_input(lengths, total=10)  # padded past the longest sequence too
    with torch.no_grad():
        outputs, final = model(x, lens)
        for i, n in enumerate(lengths):
            alone_out, alone_final = model(x[i : i + 1, :n])  # batch of 1, no padding
            for got, want in zip(as_tuple(outputs), as_tuple(alone_out), strict=True):
                torch.testing.assert_close(got[i, :n], want[0], atol=ATOL, rtol=0)
                assert torch.all(got[i, n:] == 0)
            for got, want in zip(as_tuple(final), as_tuple(alone_final), strict=True):
                torch.testing.assert_close(got[i], want[0], atol=ATOL, rtol=0)


# --- 4. output_size and checkpoints -----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "width"), [("concat", 10), ("sum", 5), ("mul", 5), ("ave", 5), ("none", 5)]
)
def test_output_size(mode, width):
    model = BiRNN(INPUT, [3, 5], "gru", merge=["sum", mode]).eval()
    assert model.output_size == width
    x, lengths = batch_input()
    outputs, final = model(x, lengths)
    for out in as_tuple(outputs):
        assert out.shape == (len(LENGTHS), T, width)
    for f in as_tuple(final):
        assert f.shape == (len(LENGTHS), width)
    assert isinstance(outputs, tuple) == (mode == "none")


def test_output_size_mixed_stack():
    model = BiRNN(INPUT, [5, 3, 4], ["gru", "lstm", "rnn"], merge=["concat", "sum", "concat"])
    assert model.output_size == 8
    assert model.layers[1].input_size == 10 and model.layers[2].input_size == 3


@pytest.mark.parametrize(("source", "target"), [("fused", "layered"), ("layered", "fused")])
def test_state_dict_is_impl_independent(source, target):
    a = BiRNN(INPUT, 4, "lstm", 2, merge=["concat", "none"], impl=source).eval()
    b = BiRNN(INPUT, 4, "lstm", 2, merge=["concat", "none"], impl=target).eval()
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(k.startswith("layers.") for k in a.state_dict())
    assert len(list(a.parameters())) == len(list(b.parameters())) == 2 * 2 * 4
    b.load_state_dict(a.state_dict())  # strict by default
    x, lengths = batch_input()
    with torch.no_grad():
        out_a, final_a = a(x, lengths)
        out_b, final_b = b(x, lengths)
    assert_close(out_b, out_a)
    assert_close(final_b, final_a)


def test_state_dict_loaded_after_first_call():
    """Loading weights into a fused model that already ran must take effect."""
    fused = BiRNN(INPUT, 4, "gru", 2, impl="fused").eval()
    x, lengths = batch_input()
    with torch.no_grad():
        fused(x, lengths)
        source = BiRNN(INPUT, 4, "gru", 2, impl="layered").eval()
        fused.load_state_dict(source.state_dict())
        assert_close(fused(x, lengths)[0], source(x, lengths)[0])


def test_state_dict_assign_reaches_fused():
    fused = BiRNN(INPUT, 4, "lstm", 2, impl="fused").eval()
    source = BiRNN(INPUT, 4, "lstm", 2, impl="layered").eval()
    x, lengths = batch_input()
    fused.load_state_dict(source.state_dict(), assign=True)
    with torch.no_grad():
        assert_close(fused(x, lengths)[0], source(x, lengths)[0])


# --- 5. configuration errors ------------------------------------------------------------


def test_unknown_cell_lists_valid_cells():
    with pytest.raises(ConfigError, match=r"^encoder\.cell: must be one of lstm, gru, rnn, "
                       r"or a list of them \(one per layer\), got 'lstmm'$"):
        BiRNN(INPUT, 4, "lstmm")


def test_unknown_cell_in_list():
    with pytest.raises(ConfigError, match=r"^encoder\.cell: unknown 'transformer': each entry "
                       r"must be one of lstm, gru, rnn, got \['lstm', 'transformer'\]$"):
        BiRNN(INPUT, 4, ["lstm", "transformer"])


def test_unknown_merge_lists_valid_modes():
    with pytest.raises(ConfigError, match=r"^encoder\.merge: unknown 'max'") as info:
        BiRNN(INPUT, 4, "lstm", 2, merge=["concat", "max"])
    assert "\n" not in str(info.value)
    for mode in MODES:
        assert mode in str(info.value).split("'max'")[1]


def test_names_are_case_insensitive():
    model = BiRNN(INPUT, 4, ["GRU", "lstm"], merge="Sum")
    assert model.cells == ["gru", "lstm"] and model.merges == ["sum", "sum"]


@pytest.mark.parametrize("merges", [["none", "concat"], ["sum", "none", "none"]])
def test_none_only_on_last_layer(merges):
    with pytest.raises(ConfigError, match=r"'none' is only allowed on the last layer"):
        BiRNN(INPUT, 4, "gru", merge=merges)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"hidden_size": [4, 4], "num_layers": 3}, "hidden_size"),
        ({"cell": ["lstm"], "num_layers": 2}, "cell"),
        ({"merge": ["sum", "sum", "sum"], "num_layers": 2}, "merge"),
        ({"hidden_size": [4, 4], "cell": ["lstm", "gru", "rnn"]}, "hidden_size"),
    ],
)
def test_per_layer_list_length_mismatch(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^encoder\.{key}: \d+ entries .* \d+ layers"):
        BiRNN(INPUT, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": -3}, "hidden_size"),
        ({"hidden_size": [4, 0]}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_layers": -1}, "num_layers"),
    ],
)
def test_non_positive_sizes(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^encoder\.{key}: must be an integer >= 1"):
        BiRNN(INPUT, **kwargs)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_out_of_range(dropout):
    with pytest.raises(ConfigError, match=rf"^encoder\.dropout: must be in \[0, 1\), "
                       rf"got {dropout}$"):
        BiRNN(INPUT, 4, "lstm", 2, dropout=dropout)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"cell": ["lstm", "gru"]}, "'gru'"),
        ({"hidden_size": [4, 5]}, "5"),
        ({"merge": ["sum", "concat"]}, "'sum'"),
        ({"merge": ["concat", "ave"]}, "'ave'"),
    ],
)
def test_fused_on_non_fusable_stack(kwargs, shown):
    kwargs = {"hidden_size": 4, "cell": "lstm", "num_layers": 2, **kwargs}
    with pytest.raises(ConfigError, match=r"^encoder\.impl: 'fused' needs .*layered") as info:
        BiRNN(INPUT, impl="fused", **kwargs)
    assert shown in str(info.value)
    BiRNN(INPUT, impl="layered", **kwargs)  # the same stack is fine layer by layer


def test_unknown_impl():
    with pytest.raises(ConfigError, match=r"^encoder\.impl: must be one of auto, fused, "
                       r"layered, got 'cudnn'$"):
        BiRNN(INPUT, 4, impl="cudnn")


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


# --- 6. bad inputs at forward -----------------------------------------------------------


@pytest.mark.parametrize("impl", ["layered", "fused"])
@pytest.mark.parametrize(
    ("shape", "lengths", "match"),
    [
        ((4, T, INPUT), [4, 0, T, 3], r"lengths must be 4 values in \[1, 6\]"),
        ((4, T, INPUT), [4, 1, T + 1, 3], r"lengths must be 4 values in \[1, 6\]"),
        ((4, T, INPUT), [4, 1, T], r"lengths must be 4 values"),
        ((4, T, INPUT + 1), LENGTHS, r"expects input of shape \(B, T, 3\), got \(4, 6, 4\)"),
        ((T, INPUT), None, r"expects input of shape"),
    ],
)
def test_bad_inputs(impl, shape, lengths, match):
    model = BiRNN(INPUT, 4, "lstm", 2, impl=impl)
    lengths = None if lengths is None else torch.tensor(lengths)
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape), lengths)


# --- 7. dropout -------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["layered", "fused"])
def test_dropout_active_in_training(impl):
    model = BiRNN(INPUT, 8, "lstm", 2, dropout=0.5, impl=impl).train()
    x, lengths = batch_input()
    with torch.no_grad():
        first, _ = model(x, lengths)
        second, _ = model(x, lengths)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("impl", ["layered", "fused"])
def test_dropout_off_in_eval(impl):
    model = BiRNN(INPUT, 8, "lstm", 2, dropout=0.5, impl=impl)
    model.train()
    model.eval()
    x, lengths = batch_input()
    with torch.no_grad():
        first, _ = model(x, lengths)
        second, _ = model(x, lengths)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    # and equal to the reference, which has no dropout at all
    expected, _ = reference_forward(
        model, ["lstm"] * 2, [8, 8], ["concat"] * 2, x, lengths.tolist()
    )
    assert_close(first, expected)


def test_dropout_not_after_last_layer():
    """Dropout sits between layers only: a 1-layer stack is deterministic in training."""
    model = BiRNN(INPUT, 4, "gru", 1, dropout=0.5).train()
    x, lengths = batch_input()
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths)[0], model(x, lengths)[0])


@needs_cpu_bf16
@pytest.mark.parametrize("ragged", RAGGED)
@pytest.mark.parametrize("cells", [["lstm", "gru"], ["gru", "lstm", "rnn"]])
def test_bf16_autocast_on_cpu_close_to_fp32(cells, ragged):
    """Under CPU bf16 autocast an LSTM layer hands bf16 to the next layer while GRU/RNN layers
    may not: every mix must run forward and backward and stay near the fp32 result (which the
    tests above check against the reference)."""
    model = BiRNN(INPUT, 8, cells, merge="sum", ragged=ragged)
    x, lengths = batch_input()
    want, want_final = model(x, lengths)
    x16 = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_final = model(x16, lengths)
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0)
    torch.testing.assert_close(got_final.float(), want_final, atol=0.05, rtol=0)
    got.float().sum().backward()
    assert torch.isfinite(x16.grad).all() and x16.grad.abs().sum() > 0
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(got[i, n:] == 0)


# --- 8. the config schema and the fused module's parameters ------------------------------


def test_schema_checks_a_config_group_as_birnn_does():
    """The command line's `encoder` group and `BiRNN`'s keyword arguments share one schema:
    the same value fails with the same line, and a good group builds the same stack."""
    from omegaconf import OmegaConf

    from birnn.config.base import check
    from birnn.config.encoder import EncoderSchema

    group = OmegaConf.create({"cell": ["gru", "lstm"], "hidden_size": [5, 3],
                              "merge": ["concat", "none"], "dropout": 0.1})
    options = check(EncoderSchema, group, "encoder")
    assert options.cells == ["gru", "lstm"] and options.hidden_sizes == [5, 3]
    assert options.num_layers == 2 and not options.fusable
    assert BiRNN(INPUT, **group).output_size == 3
    bad = {**group, "merge": ["none", "concat"]}
    with pytest.raises(ConfigError) as from_config:
        check(EncoderSchema, bad, "encoder")
    with pytest.raises(ConfigError) as from_python:
        BiRNN(INPUT, **bad)
    assert str(from_config.value) == str(from_python.value)
    assert str(from_config.value).startswith("encoder.merge: 'none' is only allowed")


@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        ({"gru": "birnn", "ragged": "pack"}, r"^encoder\.gru: 'birnn' runs batches padded"),
        ({"directions": "concurrent", "ragged": "pack"}, r"^encoder\.directions: 'concurrent'"),
        ({"residual": True}, r"^encoder\.residual: no layer's input has its output's width"),
        ({"residual": 1}, r"^encoder\.residual: must be true or false, got 1$"),
        ({"forget_bias": float("inf")}, r"^encoder\.forget_bias: must be a finite number"),
        ({"init": "xavier"}, r"^encoder\.init: must be one of default, orthogonal, got"),
        ({"dropout_kind": "zoneout"}, r"^encoder\.dropout_kind: must be one of standard, "),
        ({"hidden_size": True}, r"^encoder\.hidden_size: must be an integer >= 1"),
        ({"dropout": "0.1"}, r"^encoder\.dropout: must be in \[0, 1\), got '0.1'$"),
    ],
)
def test_rules_across_options_name_the_key(kwargs, line):
    with pytest.raises(ConfigError, match=line):
        BiRNN(INPUT, **{"hidden_size": 4, **kwargs})


def test_input_size_checked():
    with pytest.raises(ConfigError, match=r"^input_size: must be an integer >= 1, got 0$"):
        BiRNN(0, 4)


def test_fused_module_owns_no_parameters():
    model = BiRNN(INPUT, 4, "gru", 2, impl="fused")
    assert list(model.fused.parameters()) == [] and list(model.fused.buffers()) == []
    assert {n for n, _ in model.named_parameters()} == set(model.state_dict())


def test_fused_follows_a_cast():
    """`.double()` replaces every parameter's data: the fused call must run on it (in
    float64, as the layer-by-layer stack does)."""
    fused = BiRNN(INPUT, 4, "lstm", 2, impl="fused").eval()
    x, lengths = batch_input()
    with torch.no_grad():
        fused(x, lengths)  # a first call before the cast
        fused.double()
        layered = twin(fused, "layered").double().eval()
        out_f, final_f = fused(x.double(), lengths)
        out_l, final_l = layered(x.double(), lengths)
    assert out_f.dtype == torch.float64
    torch.testing.assert_close(out_f, out_l, atol=1e-12, rtol=0)
    torch.testing.assert_close(final_f, final_l, atol=1e-12, rtol=0)


def test_onnx_export_takes_any_lengths(tmp_path):
    """Exported once from a full batch, the graph runs other batch sizes, lengths and padding
    exactly (onnxruntime against the module): the export plan packs nothing."""
    import warnings

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = BiRNN(INPUT, 4, ["gru", "lstm"], merge=["sum", "none"]).eval()
    x = torch.randn(2, 5, INPUT)
    path = str(tmp_path / "encoder.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python ints
        torch.onnx.export(model, (x, torch.tensor([5, 5])), path, dynamo=False,
                          input_names=["x", "lengths"],
                          dynamic_axes={"x": {0: "B", 1: "T"}, "lengths": {0: "B"}})
    runtime = ort.InferenceSession(path)
    x, lengths = batch_input()
    got = runtime.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        outputs, final = model(x, lengths)
    for g, want in zip(got, (*outputs, *final), strict=True):
        torch.testing.assert_close(torch.from_numpy(g), want, atol=ATOL, rtol=0)


def test_every_plan_keeps_the_layout_promises():
    """Over every option, device, gradient mode, batch length and raggedness: a plan packs
    only ragged batches, never packs and reverses at once, gives birnn's recurrence to GRU
    layers only, and runs padded (reversed) whenever a layer's strategy needs it."""
    import itertools

    from birnn.encoder import policy

    stacks = [["lstm", "lstm"], ["gru", "gru"], ["gru", "lstm"], ["rnn", "rnn"]]
    for cells, ragged_opt, gru, directions in itertools.product(
            stacks, ("auto", "pack", "reverse"), ("auto", "torch", "birnn"),
            ("auto", "serial", "concurrent")):
        if ragged_opt == "pack" and (gru == "birnn" or directions == "concurrent"):
            continue  # refused by the schema
        model = BiRNN(INPUT, 4, cells, ragged=ragged_opt, gru=gru, directions=directions)
        for device, grad, steps, ragged in itertools.product(
                ("cpu", "cuda"), (True, False), (5, 40), (True, False)):
            with torch.set_grad_enabled(grad):
                plan = model.plan(torch.device(device), steps, ragged)
            assert not (plan.pack and plan.reverse)
            assert not plan.pack or ragged
            if plan.fused:
                assert model.fusable and device == "cuda" and plan.layers == ()
                continue
            assert len(plan.layers) == len(cells)
            for cell, strategy in zip(cells, plan.layers, strict=True):
                assert strategy in policy.STRATEGIES
                assert strategy != "birnn_gru" or cell == "gru"
                assert strategy == "joint" or plan.reverse
                assert strategy != "concurrent" or (device == "cpu" and grad)
            if ragged and ragged_opt == "pack":
                assert plan.pack
            if ragged and ragged_opt == "reverse":
                assert plan.reverse
            if gru == "torch" or "gru" not in cells:
                assert "birnn_gru" not in plan.layers
