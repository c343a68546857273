"""CUDA paths: the fused cuDNN encoder, CPU/CUDA agreement, bf16 autocast, `trainer=gpu`, and
the benchmark on `--devices cuda`.

Every test here needs a CUDA device (marker `gpu`; `make test` deselects them and they skip
without one). Sizes are tiny: the whole file takes well under a minute on one GPU.

Comparisons in fp32 run with TF32 off (cuBLAS and cuDNN), so fused vs layered and CUDA vs CPU
agree to fp32 rounding: atol 1e-5, rtol 1e-4.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TEST_OVERRIDES
from test_benchmark import ARGS, AXES
from test_encoder import as_tuple, assert_same_values_and_gradients, stack_merges, twin

from birnn import BiRNN

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
MODES = ("concat", "sum", "mul", "ave", "none")
ATOL, RTOL = 1e-5, 1e-4

INPUT, HIDDEN, T = 5, 8, 7
RAGGED = [5, 1, T, 3]  # unsorted, a length-1 sequence, a full-length one that is not first
FULL = [T] * 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 comparisons need real fp32 math: TF32 off for cuBLAS and cuDNN, then restored."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --- comparisons and batches ------------------------------------------------------------


def make_batch(lengths=RAGGED, device=CUDA, dtype=torch.float32):
    """Random input (padding positions included) on `device`, and CPU int64 lengths."""
    return torch.randn(len(lengths), T, INPUT).to(device, dtype), torch.tensor(lengths)


def assert_close(got, expected, atol=ATOL, rtol=RTOL):
    """Tensors or (forward, backward) pairs, compared on CPU (so devices may differ)."""
    got, expected = as_tuple(got), as_tuple(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape, (g.shape, e.shape)
        torch.testing.assert_close(g.cpu(), e.cpu(), atol=atol, rtol=rtol)


def assert_padding_zero(outputs, lengths):
    for out in as_tuple(outputs):
        for i, n in enumerate(lengths):
            assert torch.all(out[i, n:] == 0), f"sequence {i}: padding after {n} is not zero"


def count_calls(model: BiRNN) -> dict[str, int]:
    """Count forward calls of the fused module and of the per-layer modules (hooks)."""
    calls = {"fused": 0, "layers": 0}

    def counter(key):
        def hook(module, args, output):
            calls[key] += 1

        return hook

    if model.fused is not None:
        model.fused.register_forward_hook(counter("fused"))
    for layer in model.layers:
        layer.register_forward_hook(counter("layers"))
    return calls


def fused_on(model: BiRNN, device: torch.device) -> bool:
    """Whether a forward call of `model` on `device` takes the fused module now."""
    return model.plan(device, T).fused


def assert_packed(model: BiRNN):
    """After a fused call on CUDA, cuDNN has packed every parameter into one flat buffer:
    the fused module runs on the current parameters, not on an earlier packing of them."""
    if not (torch.backends.cudnn.is_available() and torch._use_cudnn_rnn_flatten_weight()):
        return  # no cuDNN flattening in this build: nothing to check
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == 1, f"parameters live in {len(storages)} buffers, not one"


# --- 1. impl=auto dispatch, fused vs layered on CUDA ------------------------------------

FUSABLE = [
    {"cell": "lstm", "num_layers": 1, "merge": "concat"},
    {"cell": "lstm", "num_layers": 3, "merge": "concat"},
    {"cell": "gru", "num_layers": 2, "merge": ["concat", "none"]},
    {"cell": "rnn", "num_layers": 1, "merge": "none"},
]
NOT_FUSABLE = [
    {"cell": "lstm", "num_layers": 2, "merge": "sum"},
    {"cell": "gru", "num_layers": 1, "merge": "ave"},
    {"cell": "lstm", "num_layers": 2, "merge": ["concat", "mul"]},
    {"cell": ["gru", "lstm"], "merge": "concat"},
    {"cell": "gru", "hidden_size": [HIDDEN, 6], "merge": "concat"},
]


@pytest.mark.parametrize(
    ("kwargs", "fusable"), [(k, True) for k in FUSABLE] + [(k, False) for k in NOT_FUSABLE]
)
def test_auto_takes_fused_on_cuda_for_fusable_stacks_only(kwargs, fusable):
    model = BiRNN(INPUT, **{"hidden_size": HIDDEN, **kwargs}).eval()  # impl="auto"
    assert model.impl == "auto" and model.fusable is fusable
    assert fused_on(model, CUDA) is fusable
    assert fused_on(model, CPU) is False
    calls = count_calls(model)
    x, lengths = make_batch(device=CPU)
    with torch.no_grad():
        model(x, lengths)  # CPU: layer by layer
        assert calls == {"fused": 0, "layers": model.num_layers}
        model.to(CUDA)
        outputs, final = model(x.to(CUDA), lengths)
    if fusable:
        assert calls == {"fused": 1, "layers": model.num_layers}  # one fused call, no layer
    else:
        assert model.fused is None
        assert calls == {"fused": 0, "layers": 2 * model.num_layers}
    for t in as_tuple(outputs) + as_tuple(final):
        assert t.device.type == "cuda" and t.dtype == torch.float32


@pytest.mark.parametrize("lengths", [RAGGED, FULL], ids=["ragged", "full"])
@pytest.mark.parametrize("last", ["concat", "none"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_equals_layered_on_cuda(cell, num_layers, last, lengths):
    merges = ["concat"] * (num_layers - 1) + [last]
    layered = BiRNN(INPUT, HIDDEN, cell, num_layers, merge=merges, impl="layered").to(CUDA)
    fused = twin(layered, "fused").to(CUDA)
    assert fused_on(fused, CUDA) and not fused_on(layered, CUDA)
    x, lens = make_batch(lengths)
    out_f, x_grad = assert_same_values_and_gradients(layered, fused, x, lens, assert_close)
    assert_padding_zero(out_f, lengths)
    assert_packed(fused)
    assert_padding_zero(x_grad, lengths)  # padded input positions get no gradient


# --- 2. CUDA against CPU, same weights ------------------------------------------------------


def _cross_device_cases():
    cases = []
    for cell in ("lstm", "gru"):
        for mode in MODES:
            kwargs = {"cell": cell, "num_layers": 2, "merge": stack_merges(mode, 2)}
            cases.append(pytest.param(kwargs, "auto", id=f"{cell}-{mode}-auto"))
            if mode in ("concat", "none"):  # fused on CPU first, then moved
                cases.append(pytest.param(kwargs, "fused", id=f"{cell}-{mode}-fused"))
    mixed = {"cell": ["gru", "lstm", "rnn"], "hidden_size": [6, HIDDEN, 5],
             "merge": ["concat", "mul", "none"]}
    cases.append(pytest.param(mixed, "auto", id="mixed-auto"))
    # the reversal strategy, which auto takes on CPU only, forced on CUDA too
    for cell in ("lstm", "gru"):
        kwargs = {"cell": cell, "num_layers": 2, "merge": ["sum", "none"], "ragged": "reverse"}
        cases.append(pytest.param(kwargs, "layered", id=f"{cell}-reverse-layered"))
    # birnn's GRU recurrence, which auto takes on CPU only, forced on CUDA too
    kwargs = {"cell": ["gru", "lstm"], "num_layers": 2, "merge": ["concat", "ave"], "gru": "birnn"}
    cases.append(pytest.param(kwargs, "layered", id="birnn-gru-layered"))
    return cases


@pytest.mark.parametrize(("kwargs", "impl"), _cross_device_cases())
def test_cuda_matches_cpu(kwargs, impl):
    """The same module, moved with `.to`: CPU kernels (layered, ragged batches reversed, for
    auto) vs cuDNN (packed for auto)."""
    model = BiRNN(INPUT, **{"hidden_size": HIDDEN, **kwargs}, impl=impl).eval()
    x, lengths = make_batch(device=CPU)
    with torch.no_grad():
        cpu_out, cpu_final = model(x, lengths)
        model.to(CUDA)
        # lengths on the device too: the encoder takes them back to the CPU for packing
        out, final = model(x.to(CUDA), lengths.to(CUDA))
    for t in as_tuple(out) + as_tuple(final):
        assert t.device.type == "cuda"
    assert_close(out, cpu_out)
    assert_close(final, cpu_final)
    assert_padding_zero(out, RAGGED)
    if fused_on(model, CUDA):
        assert_packed(model)


# --- 3. weights moved, cast or replaced after a forward pass ------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_sees_weights_moved_cast_or_replaced(cell):
    merges = ["concat", "none"]
    fused = BiRNN(INPUT, HIDDEN, cell, 2, merge=merges, impl="fused").eval()
    layered = twin(fused, "layered").eval()
    pair = (fused, layered)
    x, lengths = make_batch(device=CPU)

    def check(dtype=torch.float32, atol=ATOL, rtol=RTOL):
        device = next(fused.parameters()).device
        xi = x.to(device, dtype)
        with torch.no_grad():
            out_f, final_f = fused(xi, lengths)
            out_l, final_l = layered(xi, lengths)
        for t in as_tuple(out_f) + as_tuple(final_f):
            assert t.device == device and t.dtype == dtype
        assert_close(out_f, out_l, atol=atol, rtol=rtol)
        assert_close(final_f, final_l, atol=atol, rtol=rtol)
        if device.type == "cuda":
            assert_packed(fused)
        return torch.cat([t.float().cpu() for t in as_tuple(out_f)], dim=-1)  # (B, T, 2H)

    check()  # the fused module is set up on the CPU first
    for m in pair:
        m.cuda()
    check()
    for m in pair:
        m.double()
    check(torch.float64, atol=1e-10, rtol=1e-8)
    for m in pair:
        m.float()
    before = check()

    # new Parameter objects (each model gets its own copies on the device)
    source = BiRNN(INPUT, HIDDEN, cell, 2, merge=merges).state_dict()
    for m in pair:
        m.load_state_dict({k: v.to(CUDA, copy=True) for k, v in source.items()}, assign=True)
    assert all(p.device.type == "cuda" for p in fused.parameters())
    replaced = check()
    assert not torch.allclose(replaced, before, atol=1e-3), "fused output ignored the new weights"

    # an in-place edit of a parameter that cuDNN packed
    with torch.no_grad():
        for m in pair:
            m.layers[1].weight_hh_l0_reverse.add_(0.5)
    edited = check()
    assert not torch.allclose(edited, replaced, atol=1e-3), "fused output ignored the edit"

    # to the CPU and back
    for m in pair:
        m.cpu()
    check()
    for m in pair:
        m.to(CUDA)
    torch.testing.assert_close(check(), edited, atol=ATOL, rtol=RTOL)


# --- 4. bf16 autocast -------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fused", "layered"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bf16_autocast_close_to_fp32(cell, impl):
    model = BiRNN(INPUT, HIDDEN, cell, 2, impl=impl).to(CUDA)  # training mode, no dropout
    assert fused_on(model, CUDA) is (impl == "fused")
    x, lengths = make_batch()
    with torch.no_grad():
        ref_out, ref_final = model(x, lengths)  # fp32
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, final = model(x, lengths)
    # No dtype check: PyTorch's cuDNN RNN autocast wrapper has cast to fp16 even when bf16 was
    # asked for, and what it casts to is PyTorch's choice, not this project's.
    for got, ref in ((out, ref_out), (final, ref_final)):
        assert torch.isfinite(got).all()
        scale = ref.abs().max().item()
        assert scale > 0
        error = (got.float() - ref).abs().max().item()
        assert error <= 5e-2 * scale, (error, scale)
    assert_padding_zero(out, RAGGED)

    (out.float().sum() + final.float().sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# --- 5. train.py trainer=gpu ---------------------------------------------------------------

TINY = ("encoder.hidden_size=16", "model.embedding_dim=16", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=10")


@pytest.mark.parametrize(
    ("extra", "precision"),
    [((), "bf16-mixed"), (("trainer.precision=32-true",), "32-true")],
    ids=["bf16-mixed", "32-true"],
)
def test_train_py_on_gpu(tmp_path, extra, precision):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "trainer=gpu", *extra, *TEST_OVERRIDES,
         *TINY, f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert re.search(r"GPU available: True.*used: True", result.stdout + result.stderr)
    config = (tmp_path / "config.yaml").read_text()
    assert "accelerator: gpu" in config and f"precision: {precision}" in config

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    assert metrics["train_tokens_per_s"] > 0
    for split in ("val", "test"):
        assert math.isfinite(metrics[split]["loss"]), metrics[split]
        assert 0 <= metrics[split]["f1"] <= 1
    assert str(metrics["device"]).startswith("cuda"), metrics["device"]

    ckpt = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu",
                      weights_only=False)
    state = ckpt["state_dict"]
    assert "encoder.layers.0.weight_ih_l0" in state  # impl-independent keys
    assert not any("_fused" in k for k in state)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


# --- 6. scripts/benchmark.py --devices cuda -------------------------------------------------

BENCH_ARGS = ("--devices", "cuda", *ARGS)  # the CPU test's tiny grid, on CUDA


def test_benchmark_on_cuda(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "birnn.bench", *BENCH_ARGS, "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    records = json.loads((tmp_path / "results.json").read_text())
    header = records[0]
    assert header["kind"] == "header"
    assert header["device_names"]["cuda"]
    assert set(header["matmul_gflops"]) == {"cuda"}
    assert all(v > 0 for v in header["matmul_gflops"]["cuda"].values())

    results = [r for r in records if r["kind"] == "result"]
    assert {r["device"] for r in results} == {"cuda"}
    assert {r["precision"] for r in results} == {"fp32", "bf16"}
    assert len({tuple(r[a] for a in AXES) for r in results}) == 2 * 2 * 2 * 2 * 2
    for rec in results:
        assert rec["train_tok_s"] > 0 and rec["infer_tok_s"] > 0, rec
        assert rec["peak_mem_mb"] is not None and rec["peak_mem_mb"] >= 0, rec

    # impl=auto is the fused module on CUDA wherever the stack is fusable
    by_config: dict[tuple, dict[str, dict]] = {}
    for rec in results:
        by_config.setdefault(tuple(rec[a] for a in AXES), {})[rec["impl"]] = rec
    for (cell, merge, layers, *_), impls in by_config.items():
        fusable = (cell != "mixed" or layers == 1) and merge == "concat"
        auto = [name for name, r in impls.items() if r.get("auto")]
        assert auto == (["birnn-fused"] if fusable else ["birnn-layered"]), (cell, merge, layers)
        # on CUDA: no concurrent directions; gru=auto takes PyTorch's GRU, so birnn's is the
        # extra row; ragged batches add the packed stack
        expected = {"birnn-layered", "layered-loop"}
        if fusable:
            expected |= {"birnn-fused", "torch-fused"}
        if cell != "lstm":
            expected.add("birnn-own-gru")
        if impls["birnn-layered"]["lengths"] == "ragged":
            expected.add("birnn-packed")
        assert set(impls) == expected, (cell, merge, layers)

    profiles = [r for r in records if r["kind"] == "profile"]
    assert len(profiles) == 2 * 2  # (precision, cell)
    for rec in profiles:
        assert rec["device"] == "cuda"
        assert all(ms > 0 for ms in rec["phases_ms"].values())
