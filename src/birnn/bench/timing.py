"""The timing harness: medians of timed steps, interleaved across implementations, and the
dense-matmul and thread-contention references measured in the same run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from birnn.bench.memory import peak_memory

CONTENTION_FACTOR = 10  # multi-thread probe this many times slower than 1 thread: contended


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision == "bf16"`, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """A forward pass under `torch.inference_mode()`."""

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
                  matmul: Callable[[Tensor, Tensor], Tensor] | None = None) -> float:
    """GFLOP/s of a (size x size) @ (size x size) matmul: the dense reference for "% of matmul".

    `matmul(a, b)`: another way to multiply (e.g. oneDNN's, which birnn's GRU uses on CPUs
    where it is the faster) instead of `torch.matmul` (for fp32 on CPU: the BLAS, MKL)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    step = (lambda: matmul(a, b)) if matmul else (lambda: a @ b)
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
    """Whether the probe's multi-thread time shows a CPU shared with busy processes."""
    return probe["ms"] > CONTENTION_FACTOR * probe["ms_1_thread"] + 1.0
