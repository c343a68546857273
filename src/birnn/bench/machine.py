"""The run's header: the machine, its load, the software and the settings measured under."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import sys
from pathlib import Path

import torch

from birnn.bench.memory import cpu_memory_method
from birnn.bench.timing import contended, contention_probe


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_header(args, peaks: dict, load_before: str) -> dict:
    """The header record of results.json (the run's settings, machine and references)."""
    names = {"cpu": cpu_name()}
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
        "cores": cores(),
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


def choose_threads(requested: int | None) -> tuple[int, dict]:
    """The thread count to use, and the contention probe's result for it."""
    threads = requested or cores()
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


def warn_if_loaded(header: dict) -> None:
    """Say so when the load average exceeds the cores: absolute numbers will be low."""
    if os.getloadavg()[0] > cores():
        print(
            f"warning: load average {header['loadavg_before']} exceeds {cores()} cores: "
            "other processes compete for the CPU, absolute numbers will be low and noisy"
        )
