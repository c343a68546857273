"""Peak memory of a block of work, on CUDA from the allocator and on CPU from the process.

On CUDA: `torch.cuda.max_memory_allocated()` minus what was allocated before. On CPU: the
growth of the process's peak resident set (Linux + glibc: free heap memory is returned with
malloc_trim, VmHWM is reset through /proc/self/clear_refs, and the peak is compared with VmRSS
before the block; elsewhere the `resource.getrusage` max-RSS delta, which only moves on a new
process-wide peak). The CPU figure is an estimate (gradients + activations + workspaces,
rounded to pages), not an allocator count.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
from collections.abc import Iterator
from pathlib import Path

import torch


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
    """How CPU peak memory is measured on this machine, in words (for the header)."""
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
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    if _reset_peak_rss() and (base := _proc_status_kb("VmRSS")) is not None:
        yield result
        result["mb"] = max(0, (_proc_status_kb("VmHWM") or base) - base) / 1024
        return
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    yield result
    result["mb"] = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
