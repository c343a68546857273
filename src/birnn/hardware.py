"""What this machine's CPU can compute, asked once where a choice depends on it.

bf16 on CPU: PyTorch runs bf16 matmuls and its LSTM under bf16 autocast through oneDNN,
whose bf16 kernels need AVX-512 (BW, VL and DQ), AVX-512 BF16, AMX or AVX-NE-CONVERT. On a CPU
without them (an AVX2-only machine) those calls fail with "could not create a primitive
descriptor", so birnn checks first: the config check refuses bf16 on such a CPU, the GRU
recurrence keeps its bf16 matmuls off oneDNN, and the benchmark leaves bf16 out there.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (what bf16 autocast on CPU needs)."""
    is_supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and is_supported is not None
                and is_supported())


CPU_BF16_MISSING = ("this CPU has no bfloat16 kernels in oneDNN (they need AVX-512 or "
                    "AVX-NE-CONVERT), so PyTorch's LSTM fails under bf16 autocast here")
