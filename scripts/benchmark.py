"""Encoder throughput benchmark for `birnn.BiRNN`, with baselines measured in the same run.

What is measured, for every configuration of the grid
    cell (lstm, gru, mixed = gru/lstm alternating per layer) x merge (concat, sum, mul, ave)
    x layers x hidden x device (cpu, cuda when available) x precision (fp32, bf16 autocast)
    x lengths (full; plus ragged with --ragged: random lengths in [0.8 T, T], the spread of a
    length-bucketed batch, one sequence at T)
on one random batch of shape (B, T, E) (default 32 x 40 x 100, seeded):

- training tokens/s: one step = zero the grads + forward + `outputs.sum()` loss + backward
  (no optimizer step); inference tokens/s: forward under `torch.inference_mode()`. Each is the
  median of `--steps` timed steps after `--warmup` untimed ones (`time.perf_counter`, with
  `torch.cuda.synchronize()` on GPU), interleaved across the implementations. Tokens are the
  batch's real tokens (B*T when full).
- achieved GFLOP/s: the RNN's matmul FLOPs counted analytically, per layer, direction and real
  token 2*G*H*(in + H) (G = 4 gates LSTM, 3 GRU, 1 tanh RNN), training = 3x forward; and its
  fraction of a large square `torch.matmul`'s GFLOP/s measured in the same run on the same
  device and precision ("% of matmul": how far the recurrence is from what this PyTorch build
  delivers on dense work). It can exceed 100%: on CPU an fp32 matmul goes to the BLAS (MKL)
  while the RNN kernels may come from oneDNN, which can use a wider vector ISA on the same CPU;
  the header also gives oneDNN's rate for the same matmul on CPU.
- peak memory of two untimed training steps started from no gradients: on CUDA
  `torch.cuda.max_memory_allocated()` minus what was allocated before; on CPU the growth of
  the process's peak resident set (Linux + glibc: free heap memory is returned with
  malloc_trim, VmHWM is reset through /proc/self/clear_refs, and the peak is compared with
  VmRSS before the steps; elsewhere the `resource.getrusage` max-RSS delta, which only moves
  on a new process-wide peak). The CPU figure is an estimate (gradients + activations +
  workspaces, rounded to pages), not an allocator count.

Implementations per configuration:

- ``birnn-layered`` and ``birnn-fused`` (when the stack is fusable: one cell type, ``concat``);
  ``impl="auto"`` only dispatches to one of these per call (``BiRNN.use_fused``), so it is not
  timed again: the implementation it picks is marked ``auto`` in the tables. With ragged
  lengths ``birnn-layered`` takes ``ragged="auto"`` (on CPU: padded, the backward direction
  reversed within each length), and ``birnn-packed`` is the same stack with ``ragged="pack"``
  (PyTorch's ``PackedSequence``), to show what the choice is worth. Stacks with GRU layers
  add the GRU recurrence ``gru="auto"`` does not take: ``birnn-torch-gru``, the same stack
  with ``gru="torch"`` (PyTorch's recurrence), on CPUs where auto takes birnn's
  (`birnn.encoder.gru`: where its C kernel could be built or oneDNN's matmul is the faster),
  else ``birnn-own-gru``
  (``gru="birnn"``). ``birnn-layered`` keeps the encoder's default ``directions="auto"``
  (on CPU, GRU layers of batches of 20+ steps train their two directions on two threads). On
  CPU, ``birnn-concurrent`` is the layer-by-layer stack with ``directions="concurrent"`` (every
  layer's two directions on two threads; its inference runs serial, as the others').
- ``layered-loop``: the simplest hand-written stack, a list of single-layer bidirectional
  ``nn.LSTM/GRU`` modules with the merge done by hand on padded tensors (no packing).
- ``torch-fused``: ``nn.LSTM/GRU(num_layers=L, bidirectional=True, batch_first=True)`` on the
  padded batch; only where it computes the same stack (uniform cell, ``concat``).

The baselines do not pack, so with ragged lengths they also compute the padding (and their
backward direction reads it, so their outputs are not exact there); as birnn's ``reverse``
strategy computes the padding too, the two do the same work. Every tokens/s counts real
tokens only.

birnn's ratios to the baselines (``vs_layered_loop``, ``vs_fused``: its tokens/s over theirs,
>1 = birnn faster) come from one process, one input and one machine state, which makes them
comparable; the absolute numbers depend on the machine, its load (recorded in the header)
and the thread count, and are not claims about any other machine.

``--profile`` adds a breakdown of an end-to-end tagger training step (embedding, encoder
forward, head + loss, backward, optimizer step) with the same shapes. ``--peer keras`` adds
Keras `Bidirectional` stacks when `import keras` works (not a dependency of this project).

Outputs in --out (default docs/benchmarks): results.json, results.md, results.png.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
try:
    from birnn import BiRNN
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))
    from birnn import BiRNN
# after the path fallback above
from birnn.encoder.gru import ONEDNN, onednn_is_faster, onednn_linear  # noqa: E402
from birnn.encoder.native import gru_kernel  # noqa: E402

CELL_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
GRID_CELLS = ("lstm", "gru", "mixed")
GRID_MERGES = ("concat", "sum", "mul", "ave")
PRECISIONS = ("fp32", "bf16")
FULL_GRID = {
    "cells": "lstm,gru,mixed",
    "merges": "concat,sum,mul,ave",
    "layers": "1,2,3",
    "hidden": "128,256,512",
    "precisions": "fp32,bf16",
    "steps": 10,
    "warmup": 3,
}
QUICK_GRID = {
    "cells": "lstm,gru",
    "merges": "concat,sum,mul,ave",
    "layers": "2",
    "hidden": "256",
    "precisions": "fp32,bf16",
    "steps": 7,
    "warmup": 2,
}
CONTENTION_FACTOR = 10  # multi-thread probe this many times slower than 1 thread: contended
IMPL_ORDER = ("birnn-layered", "birnn-packed", "birnn-torch-gru", "birnn-own-gru",
              "birnn-concurrent", "birnn-fused", "layered-loop", "torch-fused", "keras")
RAGGED_MIN = 0.8  # ragged batches: lengths uniform in [RAGGED_MIN * T, T]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    """One point of the grid."""

    cell: str
    merge: str
    layers: int
    hidden: int
    device: str
    precision: str
    lengths: str  # "full" or "ragged"

    def label(self) -> str:
        return (
            f"{self.cell} {self.merge} L={self.layers} H={self.hidden} {self.device} "
            f"{self.precision} {self.lengths}"
        )


def layer_cells(cell: str, layers: int) -> list[str]:
    """The per-layer cell list: `mixed` alternates gru, lstm, gru, ... ."""
    if cell == "mixed":
        return ["gru" if k % 2 == 0 else "lstm" for k in range(layers)]
    return [cell] * layers


def forward_flops_per_token(cells: list[str], merge: str, input_size: int, hidden: int) -> int:
    """Matmul FLOPs of one forward pass per token: sum over layers and both directions."""
    total, width = 0, input_size
    for cell in cells:
        total += 2 * (2 * GATES[cell] * hidden * (width + hidden))
        width = 2 * hidden if merge == "concat" else hidden
    return total


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision == "bf16"`, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------- models under measure


def merge_by_hand(forward: Tensor, backward: Tensor, mode: str) -> Tensor:
    if mode == "sum":
        return forward + backward
    if mode == "mul":
        return forward * backward
    return (forward + backward) / 2  # ave


class LayeredLoop(nn.Module):
    """Baseline: single-layer bidirectional modules, merged by hand, on padded tensors."""

    def __init__(self, input_size: int, hidden: int, cells: list[str], merge: str):
        super().__init__()
        self.hidden, self.merge = hidden, merge
        self.rnns = nn.ModuleList()
        width = input_size
        for cell in cells:
            self.rnns.append(
                CELL_CLASSES[cell](width, hidden, batch_first=True, bidirectional=True)
            )
            width = 2 * hidden if merge == "concat" else hidden

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        for rnn in self.rnns:
            out, _ = rnn(x)
            if self.merge == "concat":  # the module's output is already [forward ; backward]
                x = out
            else:
                x = merge_by_hand(out[..., : self.hidden], out[..., self.hidden :], self.merge)
        return x


class TorchFused(nn.Module):
    """Baseline: PyTorch's multi-layer bidirectional module on the padded batch."""

    def __init__(self, input_size: int, hidden: int, cell: str, layers: int):
        super().__init__()
        self.rnn = CELL_CLASSES[cell](
            input_size, hidden, num_layers=layers, batch_first=True, bidirectional=True
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.rnn(x)[0]


class BiRNNOutputs(nn.Module):
    """`BiRNN` returning only its padded outputs, like the baselines."""

    def __init__(self, encoder: BiRNN):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.encoder(x, lengths)[0]


def candidates(cfg: Config, input_size: int, seed: int) -> dict[str, Callable[[], nn.Module]]:
    """Builders of every implementation that applies to `cfg`, by name (seeded weights)."""
    cells = layer_cells(cfg.cell, cfg.layers)

    def seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            torch.manual_seed(seed)
            return build()

        return make

    def birnn(impl: str, ragged: str = "auto", gru: str = "auto",
              directions: str = "auto") -> Callable[[], nn.Module]:
        return seeded(
            lambda: BiRNNOutputs(
                BiRNN(input_size, cfg.hidden, cells, cfg.layers, cfg.merge, impl=impl,
                      ragged=ragged, gru=gru, directions=directions)
            )
        )

    builders = {"birnn-layered": birnn("layered")}
    if cfg.lengths == "ragged":
        builders["birnn-packed"] = birnn("layered", ragged="pack")
    if "gru" in cells:  # the GRU recurrence `gru="auto"` does not take here, for comparison
        other = other_gru(cfg, input_size)
        builders[other] = birnn("layered", gru=OTHER_GRU[other])
    if cfg.device == "cpu":
        builders["birnn-concurrent"] = birnn("layered", directions="concurrent")
    if len(set(cells)) == 1 and cfg.merge == "concat":
        builders["birnn-fused"] = birnn("fused")
    builders["layered-loop"] = seeded(lambda: LayeredLoop(input_size, cfg.hidden, cells, cfg.merge))
    if len(set(cells)) == 1 and cfg.merge == "concat":
        builders["torch-fused"] = seeded(
            lambda: TorchFused(input_size, cfg.hidden, cells[0], cfg.layers)
        )
    return builders


# the extra row of a stack with GRU layers: the recurrence `gru="auto"` did not choose
OTHER_GRU = {"birnn-torch-gru": "torch", "birnn-own-gru": "birnn"}


def other_gru(cfg: Config, input_size: int) -> str:
    """`birnn-torch-gru` where `gru="auto"` runs birnn's GRU recurrence for `cfg` (on CPU, where
    its C kernel could be built or oneDNN's matmul is the faster), else `birnn-own-gru`."""
    cells = layer_cells(cfg.cell, cfg.layers)
    enc = BiRNN(input_size, cfg.hidden, cells, cfg.layers, cfg.merge)
    return "birnn-torch-gru" if enc.use_birnn_gru(torch.device(cfg.device)) else "birnn-own-gru"


def auto_choice(cfg: Config, input_size: int) -> str:
    """The implementation `impl="auto"` runs for `cfg` (as BiRNN itself decides)."""
    cells = layer_cells(cfg.cell, cfg.layers)
    enc = BiRNN(input_size, cfg.hidden, cells, cfg.layers, cfg.merge, impl="auto")
    return "birnn-fused" if enc.use_fused(torch.device(cfg.device)) else "birnn-layered"


# ----------------------------------------------------------------------------- measurement


def median_seconds(step: Callable[[], object], steps: int, warmup: int, device) -> float:
    """Median wall time of `steps` calls of `step` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Give the C heap's free memory back to the OS (glibc), so RSS growth shows new memory."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    _trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to VmRSS
        return True
    except OSError:
        return False


def cpu_memory_method() -> str:
    if _reset_peak_rss() and _proc_status_kb("VmHWM") is not None:
        return (
            "CPU: peak RSS growth over the training steps (glibc malloc_trim, then VmHWM reset "
            "via /proc/self/clear_refs, minus VmRSS before)"
        )
    return "CPU: getrusage max-RSS delta (only counts growth past the process's earlier peak)"


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Yield a dict whose "mb" is set, on exit, to the peak memory growth inside the block."""
    result: dict = {"mb": None}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        sync(device)
        result["mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    if _reset_peak_rss() and (base := _proc_status_kb("VmRSS")) is not None:
        yield result
        result["mb"] = max(0, (_proc_status_kb("VmHWM") or base) - base) / 1024
        return
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    yield result
    result["mb"] = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def round_robin_seconds(
    steps_by_name: dict[str, Callable[[], object]], steps: int, warmup: int, device
) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds.

    Every round calls each function once, so a change of machine load during the measurement
    hits all implementations alike and their ratios stay meaningful.
    """
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def train_step_fn(model: nn.Module, x: Tensor, lengths: Tensor, precision: str):
    """Zero grads, forward, sum-of-outputs loss, backward (no optimizer step)."""

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(x.device, precision):
            loss = model(x, lengths).float().sum()
        loss.backward()

    return train_step


def infer_step_fn(model: nn.Module, x: Tensor, lengths: Tensor, precision: str):
    def infer_step() -> None:
        with torch.inference_mode(), autocast(x.device, precision):
            model(x, lengths)

    return infer_step


def time_models(
    models: dict[str, nn.Module], x: Tensor, lengths: Tensor, precision: str, args
) -> dict[str, dict]:
    """Per model: median training-step and inference seconds, and training peak memory."""
    device = x.device
    train = {n: train_step_fn(m, x, lengths, precision) for n, m in models.items()}
    infer = {n: infer_step_fn(m, x, lengths, precision) for n, m in models.items()}
    memory = {}
    for name, step in train.items():  # untimed, from no gradients: they count as new memory
        with peak_memory(device) as mem:
            step()
            step()
        memory[name] = mem["mb"]
    for model in models.values():
        model.train()
    train_s = round_robin_seconds(train, args.steps, args.warmup, device)
    for model in models.values():
        model.eval()
        model.zero_grad(set_to_none=True)
    infer_s = round_robin_seconds(infer, args.steps, args.warmup, device)
    return {
        name: {"train_s": train_s[name], "infer_s": infer_s[name], "peak_mem_mb": memory[name]}
        for name in models
    }


def matmul_gflops(device: torch.device, precision: str, size: int, reps: int,
                  onednn: bool = False) -> float:
    """GFLOP/s of a (size x size) @ (size x size) matmul: the dense reference for "% of matmul".

    `onednn`: through oneDNN's matmul (what birnn's GRU uses on CPUs where it is the faster,
    `birnn.encoder.gru.onednn_is_faster`) instead of `torch.matmul` (for fp32 on CPU: the
    BLAS, MKL)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    step = (lambda: onednn_linear(a, b.t())) if onednn else (lambda: a @ b)
    seconds = median_seconds(step, max(reps, 1), 1, device)
    return 2 * size**3 / seconds / 1e9


def contention_probe(threads: int) -> dict:
    """Time a small CPU LSTM forward with `threads` threads and with one.

    On a CPU shared with busy processes a multi-thread OpenMP team waits for a descheduled
    member in every parallel region: the multi-thread time is then many times the one-thread
    time (thousands of times was seen on a 2-core VM), and every measurement would be too.
    """
    torch.manual_seed(0)
    rnn = nn.LSTM(32, 64, batch_first=True, bidirectional=True)
    x = torch.randn(8, 10, 32)

    def forward() -> None:
        with torch.inference_mode():
            rnn(x)

    before = torch.get_num_threads()
    ms = {}
    for n in dict.fromkeys((1, threads)):
        torch.set_num_threads(n)
        ms[n] = median_seconds(forward, 3, 1, torch.device("cpu")) * 1e3
    torch.set_num_threads(before)
    return {"threads": threads, "ms": ms[threads], "ms_1_thread": ms[1]}


def contended(probe: dict) -> bool:
    return probe["ms"] > CONTENTION_FACTOR * probe["ms_1_thread"] + 1.0


def make_batch(cfg: Config, args, device: torch.device) -> tuple[Tensor, Tensor]:
    """The seeded input batch and its lengths (all T; for ragged, random in [0.8 T, T], as in
    a batch of length-bucketed sentences)."""
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, args.seq, args.input, generator=gen).to(device)
    if cfg.lengths == "ragged":
        shortest = max(1, math.ceil(RAGGED_MIN * args.seq))
        lengths = torch.randint(shortest, args.seq + 1, (args.batch,), generator=gen)
        lengths[0] = args.seq  # the longest sequence fills the padded width
    else:
        lengths = torch.full((args.batch,), args.seq, dtype=torch.int64)
    return x, lengths


def make_record(cfg: Config, impl: str, timing: dict, tokens: int, flops: int, peak) -> dict:
    """One result row: axes, impl, tokens/s, GFLOP/s and their fraction of the matmul peak."""
    train_gflops = 3 * flops / timing["train_s"] / 1e9
    infer_gflops = flops / timing["infer_s"] / 1e9
    return {
        "kind": "result",
        **asdict(cfg),
        "impl": impl,
        "tokens": tokens,
        "train_ms": timing["train_s"] * 1e3,
        "infer_ms": timing["infer_s"] * 1e3,
        "train_tok_s": tokens / timing["train_s"],
        "infer_tok_s": tokens / timing["infer_s"],
        "train_gflops": train_gflops,
        "infer_gflops": infer_gflops,
        "train_frac_matmul": train_gflops / peak if peak else None,
        "infer_frac_matmul": infer_gflops / peak if peak else None,
        "peak_mem_mb": timing["peak_mem_mb"],
    }


def add_ratios(records: list[dict], auto_impl: str) -> None:
    """Set birnn rows' speed ratios (>1 = birnn faster) to the baselines of the same config."""
    by_impl = {r["impl"]: r for r in records}
    for rec in records:
        if not rec["impl"].startswith("birnn-"):
            continue
        rec["auto"] = rec["impl"] == auto_impl
        for key, base in (("vs_layered_loop", "layered-loop"), ("vs_fused", "torch-fused")):
            ref = by_impl.get(base)
            rec[key] = rec["train_tok_s"] / ref["train_tok_s"] if ref else None
            rec[key + "_infer"] = rec["infer_tok_s"] / ref["infer_tok_s"] if ref else None


def run_config(cfg: Config, args, peaks: dict) -> list[dict]:
    """Measure every implementation that applies to `cfg`; return one record per impl."""
    device = torch.device(cfg.device)
    x, lengths = make_batch(cfg, args, device)
    tokens = int(lengths.sum())
    flops = tokens * forward_flops_per_token(
        layer_cells(cfg.cell, cfg.layers), cfg.merge, args.input, cfg.hidden
    )
    models = {n: build().to(device) for n, build in candidates(cfg, args.input, args.seed).items()}
    timings = time_models(models, x, lengths, cfg.precision, args)
    peak = peaks[cfg.device][cfg.precision]
    records = [make_record(cfg, n, t, tokens, flops, peak) for n, t in timings.items()]
    add_ratios(records, auto_choice(cfg, args.input))
    return records


# ------------------------------------------------------------------------------ keras peer


def keras_records(cfgs: list[Config], args) -> list[dict]:
    """Optional peer: the same stacks as Keras `Bidirectional` layers (fp32, full lengths).

    Runs on whatever device and backend Keras is configured for (device = "keras:<backend>").
    Its training step is `train_on_batch` against zeros with MSE and SGD(lr=0): the closest
    Keras equivalent of forward + sum loss + backward, plus a no-op optimizer update.
    """
    try:
        import keras
        import numpy as np
    except ImportError:
        print("--peer keras: `import keras` failed (not installed); skipping the Keras peer.")
        return []
    backend = keras.backend.backend()
    if backend == "tensorflow":
        # before TensorFlow runs its first op; 1 intra-op and 2 inter-op threads let it run the
        # two directions of a layer at the same time, one per core (its best setting on 2 cores)
        import tensorflow as tf
        intra, inter = args.keras_threads
        with contextlib.suppress(RuntimeError):  # already initialised: keep what it has
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    seen, records = set(), []
    for cfg in cfgs:
        key = (cfg.cell, cfg.merge, cfg.layers, cfg.hidden)
        if key in seen or cfg.lengths != "full" or cfg.precision != "fp32":
            continue
        seen.add(key)
        kcfg = Config(*key, device=f"keras:{backend}", precision="fp32", lengths="full")
        layers = [keras.Input((args.seq, args.input))]
        for cell in layer_cells(cfg.cell, cfg.layers):
            rnn_cls = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
            rnn = rnn_cls(cfg.hidden, return_sequences=True)
            layers.append(keras.layers.Bidirectional(rnn, merge_mode=cfg.merge))
        model = keras.Sequential(layers)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse",
                      jit_compile=args.keras_jit)
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((args.batch, args.seq, args.input), dtype=np.float32)
        y = np.zeros((args.batch, *model.output_shape[1:]), np.float32)
        timing = _keras_timing(model, x, y, args)
        tokens = args.batch * args.seq
        flops = tokens * forward_flops_per_token(
            layer_cells(cfg.cell, cfg.layers), cfg.merge, args.input, cfg.hidden
        )
        records.append(make_record(kcfg, "keras", timing, tokens, flops, None))
        print(f"  keras ({backend}) {kcfg.label()}: {records[-1]['train_tok_s']:,.0f} tok/s train")
    return records


def add_keras_ratios(results: list[dict]) -> None:
    """birnn's training tok/s over Keras' fp32 figure for the same stack (full lengths), set
    as `vs_keras` on the rows of every precision of what impl=auto runs and of
    `birnn-concurrent` (the option that runs both directions at once, as Keras does here)."""
    keras = {(r["cell"], r["merge"], r["layers"], r["hidden"]): r["train_tok_s"]
             for r in results if r["impl"] == "keras"}
    for r in results:
        key = (r["cell"], r["merge"], r["layers"], r["hidden"])
        compared = r.get("auto") or r["impl"] == "birnn-concurrent"
        if compared and r["lengths"] == "full" and key in keras:
            r["vs_keras"] = r["train_tok_s"] / keras[key]


def keras_markdown(results: list[dict]) -> str:
    rows = [r for r in results if "vs_keras" in r]
    if not rows:
        return ""
    lines = ["| cell | merge | L | H | device | prec | birnn | birnn train tok/s "
             "| Keras fp32 tok/s | birnn / Keras |",
             "|---|---|---:|---:|---|---|---|---:|---:|---:|"]
    for r in rows:
        option = "directions=concurrent" if r["impl"] == "birnn-concurrent" else "auto"
        lines.append(f"| {r['cell']} | {r['merge']} | {r['layers']} | {r['hidden']} "
                     f"| {r['device']} | {r['precision']} | {option} | {r['train_tok_s']:,.0f} "
                     f"| {r['train_tok_s'] / r['vs_keras']:,.0f} | {r['vs_keras']:.2f}x |")
    return "\n".join(lines) + "\n"


def _keras_timing(model, x, y, args) -> dict:
    cpu = torch.device("cpu")  # nothing to synchronize from torch's side
    return {
        "train_s": median_seconds(lambda: model.train_on_batch(x, y), args.steps, args.warmup, cpu),
        "infer_s": median_seconds(lambda: model.predict_on_batch(x), args.steps, args.warmup, cpu),
        "peak_mem_mb": None,
    }


# ------------------------------------------------------------------------- tagger profile


class Tagger(nn.Module):
    """Embedding -> BiRNN -> Linear: the end-to-end model the profile times."""

    def __init__(self, vocab: int, cfg: Config, input_size: int, tags: int):
        super().__init__()
        cells = layer_cells(cfg.cell, cfg.layers)
        self.embed = nn.Embedding(vocab, input_size, padding_idx=0)
        self.encoder = BiRNN(input_size, cfg.hidden, cells, cfg.layers, cfg.merge)
        self.head = nn.Linear(self.encoder.output_size, tags)


def profile_step(cfg: Config, args) -> dict[str, float]:
    """Median milliseconds per phase of one tagger training step (manual timers + sync)."""
    device = torch.device(cfg.device)
    torch.manual_seed(args.seed)
    model = Tagger(args.vocab, cfg, args.input, args.tags).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(1, args.vocab, (args.batch, args.seq), generator=gen)
    gold = torch.randint(0, args.tags, (args.batch, args.seq), generator=gen)
    _, lengths = make_batch(cfg, args, device)
    pad = torch.arange(args.seq)[None] >= lengths[:, None]
    ids, gold = ids.masked_fill(pad, 0).to(device), gold.masked_fill(pad, -100).to(device)
    phases = ("embedding", "encoder forward", "head + loss", "backward", "optimizer step")
    samples: dict[str, list[float]] = {p: [] for p in phases}

    for step in range(args.warmup + args.steps):
        marks = _tagger_step(model, opt, ids, gold, lengths, cfg.precision)
        if step >= args.warmup:
            for phase, start, end in zip(phases, marks[:-1], marks[1:], strict=True):
                samples[phase].append((end - start) * 1e3)
    return {p: statistics.median(v) for p, v in samples.items()}


def _tagger_step(model: Tagger, opt, ids, gold, lengths, precision: str) -> list[float]:
    """One training step; the perf_counter time at its start and after each phase."""
    device = ids.device
    marks = [time.perf_counter()]

    def mark() -> None:
        sync(device)
        marks.append(time.perf_counter())

    opt.zero_grad(set_to_none=True)
    with autocast(device, precision):
        emb = model.embed(ids)
        mark()
        out, _ = model.encoder(emb, lengths)
        mark()
        logits = model.head(out)
        loss = F.cross_entropy(logits.float().flatten(0, 1), gold.flatten())
        mark()
    loss.backward()
    mark()
    opt.step()
    mark()
    return marks


def profile_records(cfgs: list[Config], args) -> list[dict]:
    """One tagger profile per (device, precision, cell), at the first merge/layers/hidden."""
    seen, records = set(), []
    for cfg in cfgs:
        key = (cfg.device, cfg.precision, cfg.cell)
        if key in seen:
            continue
        seen.add(key)
        ms = profile_step(cfg, args)
        records.append({"kind": "profile", **asdict(cfg), "phases_ms": ms})
    return records


def profile_markdown(records: list[dict]) -> str:
    lines = []
    for rec in records:
        total = sum(rec["phases_ms"].values())
        cfg = Config(**{k: rec[k] for k in Config.__dataclass_fields__})
        lines += [f"Tagger training step, {cfg.label()} (median ms per phase):", ""]
        lines += ["| phase | ms | % of step |", "|---|---:|---:|"]
        for phase, ms in rec["phases_ms"].items():
            lines.append(f"| {phase} | {ms:.2f} | {100 * ms / total:.1f}% |")
        lines += [f"| **total** | {total:.2f} | 100% |", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- outputs


def _probe_text(probe: dict) -> str:
    return f"{probe['threads']} threads {probe['ms']:.2f} vs 1 thread {probe['ms_1_thread']:.2f}"


def _ratio(value) -> str:
    return "" if value is None else f"{value:.2f}x"


def _impl_label(rec: dict) -> str:
    return rec["impl"] + (" (auto)" if rec.get("auto") else "")


def markdown_table(header: dict, results: list[dict]) -> str:
    """One row per configuration and implementation."""
    matmul = header["matmul_gflops"]
    onednn = header.get("onednn_matmul_gflops", {})
    peaks = ", ".join(
        f"{d} {p} {g:,.0f}" + (f" (oneDNN {onednn[p]:,.0f})" if d == "cpu" and p in onednn else "")
        for d, by in matmul.items() for p, g in by.items())
    lines = [
        f"B={header['batch']} T={header['seq']} E={header['input']}, "
        f"threads: {header['threads']}, torch {header['torch']}, {header['date']}. "
        f"Matmul {header['matmul_size']}^3 GFLOP/s: {peaks}. "
        f"Ratios are birnn's tokens/s over the baseline's (>1 = birnn faster), training "
        f"(inference). Load average before/after: {header['loadavg_before']} / "
        f"{header['loadavg_after']}. Contention probe (small LSTM forward, ms): before "
        f"{_probe_text(header['probe_before'])}, after {_probe_text(header['probe_after'])}. "
        f"birnn's GRU recurrence on CPU ran its matmuls through "
        f"{header.get('gru_matmul', 'oneDNN')} and its element-wise steps as "
        f"{header.get('gru_steps', 'PyTorch ops')}.",
        "",
        "| cell | merge | L | H | device | prec | lengths | impl | train tok/s | infer tok/s "
        "| train GFLOP/s | % matmul | peak MB | vs layered loop | vs fused |",
        "|---|---|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        loop = _ratio(r.get("vs_layered_loop"))
        fused = _ratio(r.get("vs_fused"))
        if loop:
            loop += f" ({_ratio(r['vs_layered_loop_infer'])})"
        if fused:
            fused += f" ({_ratio(r['vs_fused_infer'])})"
        frac = r["train_frac_matmul"]
        mem = "" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        lines.append(
            f"| {r['cell']} | {r['merge']} | {r['layers']} | {r['hidden']} | {r['device']} "
            f"| {r['precision']} | {r['lengths']} | {_impl_label(r)} | {r['train_tok_s']:,.0f} "
            f"| {r['infer_tok_s']:,.0f} | {r['train_gflops']:.1f} "
            f"| {'' if frac is None else f'{100 * frac:.1f}%'} | {mem} | {loop} | {fused} |"
        )
    return "\n".join(lines) + "\n"


def _geomean_tok_s(rows: list[dict], cell: str, keep: Callable[[dict], bool]) -> float:
    """Geometric mean of the training tok/s of `rows` of `cell` that `keep` selects."""
    values = [r["train_tok_s"] for r in rows if r["cell"] == cell and keep(r)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def plot(results: list[dict], path: Path) -> None:
    """Grouped bars of training tok/s (impl=auto) per merge, one group per cell; one panel per
    device (and precision). A black tick marks the layered-loop baseline of the same bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r["impl"] != "keras"]
    devices = list(dict.fromkeys(r["device"] for r in results))
    precs = list(dict.fromkeys(r["precision"] for r in results))
    cells = list(dict.fromkeys(r["cell"] for r in results))
    merges = list(dict.fromkeys(r["merge"] for r in results))
    fig, axes = plt.subplots(
        len(devices),
        len(precs),
        figsize=(4.5 * len(precs) + 1, 3.6 * len(devices)),
        squeeze=False,
    )
    width = 0.8 / len(merges)
    for (i, device), (j, prec) in ((a, b) for a in enumerate(devices) for b in enumerate(precs)):
        ax = axes[i][j]
        for m, merge in enumerate(merges):
            xs = [c + (m - (len(merges) - 1) / 2) * width for c in range(len(cells))]
            rows = [
                r
                for r in results
                if (r["device"], r["precision"], r["merge"]) == (device, prec, merge)
            ]
            ours = [_geomean_tok_s(rows, c, lambda r: bool(r.get("auto"))) for c in cells]
            loops = [_geomean_tok_s(rows, c, lambda r: r["impl"] == "layered-loop") for c in cells]
            ax.bar(xs, ours, width, label=merge)
            label = "layered loop" if m == 0 else None
            ax.scatter(xs, loops, marker="_", s=200, color="black", zorder=3, label=label)
        ax.set_xticks(range(len(cells)), cells)
        ax.set_title(f"{device} {prec}")
        ax.set_ylabel("training tokens/s")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize="small")
    fig.suptitle(
        "birnn (impl=auto) training throughput\n"
        "geometric mean over the layers, hidden sizes and lengths measured"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, header: dict, results: list[dict], profiles: list[dict]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([header, *results, *profiles], indent=1) + "\n")
    table = markdown_table(header, results)
    text = "# Encoder benchmark\n\n" + table
    peer = keras_markdown(results)
    if peer:
        text += ("\n## Against Keras\n\nTraining tokens/s of birnn (what impl=auto runs, and "
                 "with `directions=concurrent` on CPU) over Keras `Bidirectional` stacks "
                 "(fp32), same shapes, full-length batches, same run.\n\n" + peer)
    if profiles:
        text += "\n## Tagger training step breakdown\n\n" + profile_markdown(profiles)
    (out / "results.md").write_text(text)
    plot(results, out / "results.png")
    return table


# ------------------------------------------------------------------------------------ main


def _csv(value: str, cast=str) -> list:
    return [cast(v.strip()) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", help=f"comma list of {','.join(GRID_CELLS)}")
    p.add_argument("--merges", help=f"comma list of {','.join(GRID_MERGES)}")
    p.add_argument("--layers", help="comma list, e.g. 1,2,3")
    p.add_argument("--hidden", help="comma list, e.g. 128,256,512")
    p.add_argument("--devices", help="comma list of cpu,cuda (default: cpu, + cuda if available)")
    p.add_argument("--precisions", help="comma list of fp32,bf16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=40)
    p.add_argument("--input", type=int, default=100)
    p.add_argument("--steps", type=int, help="timed steps per measurement (median)")
    p.add_argument("--warmup", type=int, help="untimed steps before the timed ones")
    p.add_argument("--ragged", action="store_true",
                   help="also measure ragged batches (random lengths in [0.8 T, T])")
    p.add_argument("--quick", action="store_true", help="reduced grid (about a minute on 2 cores)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    p.add_argument("--profile", action="store_true", help="add a tagger training-step breakdown")
    p.add_argument("--peer", choices=["keras"], help="also time Keras (if `import keras` works)")
    p.add_argument("--keras-threads", default="1,2",
                   help="TensorFlow intra-op,inter-op threads for the Keras peer (default 1,2)")
    p.add_argument("--keras-jit", default="auto", choices=["auto", "true", "false"],
                   help="Keras compile(jit_compile=...) for the peer")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: the cores, or 1 when a probe finds them contended)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=5000, help="--profile embedding rows")
    p.add_argument("--tags", type=int, default=9, help="--profile output classes")
    args = p.parse_args(argv)
    preset = QUICK_GRID if args.quick else FULL_GRID
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.cells, args.merges = _csv(args.cells), _csv(args.merges)
    args.layers, args.hidden = _csv(args.layers, int), _csv(args.hidden, int)
    args.precisions = _csv(args.precisions)
    args.keras_threads = tuple(_csv(args.keras_threads, int))
    if len(args.keras_threads) != 2 or min(args.keras_threads) < 1:
        p.error(f"--keras-threads: two counts >= 1, e.g. 1,2 (got {args.keras_threads})")
    args.keras_jit = {"auto": "auto", "true": True, "false": False}[args.keras_jit]
    cuda = torch.cuda.is_available()
    args.devices = _csv(args.devices) if args.devices else ["cpu"] + (["cuda"] if cuda else [])
    for name, values, valid in (
        ("cells", args.cells, GRID_CELLS),
        ("merges", args.merges, GRID_MERGES),
        ("precisions", args.precisions, PRECISIONS),
        ("devices", args.devices, ("cpu", "cuda")),
    ):
        if not values or set(values) - set(valid):
            p.error(f"--{name}: {values} (valid: {','.join(valid)})")
    if "cuda" in args.devices and not cuda:
        p.error("--devices cuda: torch.cuda.is_available() is False")
    if min(args.layers + args.hidden + [args.batch, args.seq, args.input, args.steps]) < 1:
        p.error("layers, hidden, batch, seq, input and steps must be >= 1")
    return args


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def grid(args) -> list[Config]:
    lengths = ["full", "ragged"] if args.ragged else ["full"]
    return [
        Config(cell, merge, layers, hidden, device, prec, lens)
        for device in args.devices
        for prec in args.precisions
        for cell in args.cells
        for layers in args.layers
        for hidden in args.hidden
        for merge in args.merges
        for lens in lengths
    ]


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_header(args, peaks: dict, load_before: str) -> dict:
    names = {"cpu": _cpu_name()}
    if "cuda" in args.devices:
        names["cuda"] = torch.cuda.get_device_name()
    return {
        "kind": "header",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device_names": names,
        "threads": torch.get_num_threads(),
        "cores": _cores(),
        "batch": args.batch,
        "seq": args.seq,
        "input": args.input,
        "steps": args.steps,
        "warmup": args.warmup,
        "seed": args.seed,
        "matmul_size": args.matmul_size,
        "matmul_gflops": peaks,
        "memory": {"cpu": cpu_memory_method(), "cuda": "torch.cuda.max_memory_allocated growth"},
        "loadavg_before": load_before,
        "command": " ".join(sys.argv),
    }


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def choose_threads(requested: int | None) -> tuple[int, dict]:
    """The thread count to use, and the contention probe's result for it."""
    threads = requested or _cores()
    probe = contention_probe(threads)
    if threads > 1 and contended(probe):
        print(
            f"warning: {threads} threads ran a small LSTM {probe['ms']:.1f} ms vs "
            f"{probe['ms_1_thread']:.2f} ms on 1 thread: other processes are busy on this "
            "CPU and a multi-thread team would stall in every parallel region."
        )
        if requested is None:
            print("using 1 thread (pass --threads to force a count)")
            threads = 1
    return threads, probe


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_before = time.perf_counter(), _loadavg()
    args.threads, probe = choose_threads(args.threads)
    torch.set_num_threads(args.threads)
    peaks = {
        dev: {
            prec: matmul_gflops(torch.device(dev), prec, args.matmul_size, args.steps)
            for prec in args.precisions
        }
        for dev in args.devices
    }
    header = make_header(args, peaks, load_before)
    header["onednn_matmul_gflops"] = {
        prec: matmul_gflops(torch.device("cpu"), prec, args.matmul_size, args.steps, onednn=True)
        for prec in args.precisions
    } if "cpu" in args.devices and ONEDNN else {}
    header["gru_matmul"] = "oneDNN" if onednn_is_faster() else "torch.matmul"
    header["gru_steps"] = "C kernel" if gru_kernel() is not None else "PyTorch ops"
    header["probe_before"] = probe
    if os.getloadavg()[0] > _cores():
        print(
            f"warning: load average {header['loadavg_before']} exceeds {_cores()} cores: "
            "other processes compete for the CPU, absolute numbers will be low and noisy"
        )
    cfgs = grid(args)
    results: list[dict] = []
    for n, cfg in enumerate(cfgs, 1):
        t0 = time.perf_counter()
        records = run_config(cfg, args, peaks)
        results += records
        summary = ", ".join(f"{_impl_label(r)} {r['train_tok_s']:,.0f}" for r in records)
        print(
            f"[{n}/{len(cfgs)}] {cfg.label()}: train tok/s {summary} "
            f"({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    if args.peer == "keras":
        results += keras_records(cfgs, args)
        add_keras_ratios(results)
    profiles = profile_records(cfgs, args) if args.profile else []
    header["loadavg_after"] = _loadavg()
    header["probe_after"] = contention_probe(args.threads)
    if contended(header["probe_after"]):
        print(f"warning: the CPU was contended by the end of the run ({header['probe_after']})")
    header["seconds"] = round(time.perf_counter() - started, 1)
    rank = {impl: i for i, impl in enumerate(IMPL_ORDER)}
    results.sort(
        key=lambda r: (
            r["device"],
            PRECISIONS.index(r["precision"]),
            GRID_CELLS.index(r["cell"]),
            r["layers"],
            r["hidden"],
            GRID_MERGES.index(r["merge"]),
            r["lengths"],
            rank[r["impl"]],
        )
    )
    table = write_outputs(args.out, header, results, profiles)
    print()
    print(table)
    if profiles:
        print(profile_markdown(profiles))
    print(f"wrote {args.out}/results.{{json,md,png}} in {header['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
