"""birnn's C kernel, compiled on first use and loaded with ctypes: the GRU recurrence's
element-wise steps and fp32 loops (`gru_kernel.c`) and the LSTM recurrence's fp32 loops
(`lstm_kernel.c`), in one library (`gru_kernel()`).

The kernel is plain C (no Python or PyTorch headers), so it compiles in under a second with
the system's C compiler (`$CC`, else `cc`, `gcc` or `clang`), for the CPU it runs on
(`-march=native`). The shared library is cached in `$BIRNN_CACHE_DIR`, else
`$XDG_CACHE_HOME/birnn` or `~/.cache/birnn`, under a name made from the source, the flags,
the compiler and the CPU, so a changed source or another machine sharing the cache gets its
own build. Where that folder cannot be created, a folder of the user's own in the temporary
directory takes its place. Several processes starting at once (DDP) each write their own file
and rename it into place. Once loaded, one forward and one backward step are checked against
the same equations computed by PyTorch (`_self_check`); a build that fails is not used.

Without a compiler, or with `BIRNN_NATIVE=0`, `gru_kernel()` returns None: the GRU recurrence
runs its steps as PyTorch ops (`birnn.encoder.gru`) and LSTM layers PyTorch's LSTM, with the
same results, more slowly; the reason is logged once. `blas()` finds MKL's matmul in
PyTorch's own library for the kernel's whole-loop functions.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("gru_kernel.c")
# compiled into the same library: the LSTM's loops, and what both kernels share
LSTM_SOURCE = Path(__file__).with_name("lstm_kernel.c")
HEADER = Path(__file__).with_name("kernel.h")
# -march=native: the vector width of this CPU. -fno-trapping-math: without it GCC 12 keeps the
# forward step's loop scalar (the clamps in exp_ may not be turned into vector selects), 7x
# slower; it changes no result (the library's outputs are bit for bit the same) and, unlike
# -ffast-math, sets no floating-point mode: linked into a shared library -ffast-math turns on
# flush-to-zero for the whole process. Clang assumes it by default.
# -fopenmp: the whole-loop functions run a direction per OpenMP thread (gru_kernel.c).
COMPILE_FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fopenmp", "-fPIC", "-std=c99")
COMPILE_TIMEOUT_S = 120

_pointer, _long = ctypes.c_void_p, ctypes.c_long
# argument types per function (see gru_kernel.c); every array argument is a data pointer
SIGNATURES = {
    "birnn_gru_forward_f32": [_long, _long] + [_pointer] * 7,
    "birnn_gru_forward_bf16": [_long, _long] + [_pointer] * 7,
    "birnn_gru_backward_f32": [_long, _long] + [_pointer] * 10,
    "birnn_gru_backward_bf16": [_long, _long] + [_pointer] * 10,
    "birnn_gru_forward_loop_f32": [_long] * 5 + [_pointer] * 10 + [_long] * 2,
    "birnn_gru_backward_loop_f32": [_long] * 4 + [_pointer] * 13 + [_long] * 2,
    "birnn_lstm_forward_loop_f32": [_long] * 4 + [_pointer] * 7 + [_long] * 2,
    "birnn_lstm_backward_loop_f32": [_long] * 4 + [_pointer] * 10 + [_long] * 2,
}


def cache_dir() -> Path:
    if os.environ.get("BIRNN_CACHE_DIR"):
        return Path(os.environ["BIRNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "birnn"


def _cache_dirs() -> list[tuple[Path, bool]]:
    """Where the library may be built, and whether the folder must be this user's own:
    `cache_dir()`, then (unless `$BIRNN_CACHE_DIR` names the place) a folder under the
    temporary directory, for a home that cannot be written to. A shared temporary directory
    must not hand us a library someone else put there, so that one must be ours."""
    dirs = [(cache_dir(), False)]
    if not os.environ.get("BIRNN_CACHE_DIR") and hasattr(os, "getuid"):
        dirs.append((Path(tempfile.gettempdir()) / f"birnn-{os.getuid()}", True))
    return dirs


def _trusted(folder: Path, own: bool) -> bool:
    """Whether `folder` is a folder, and with `own`, this user's."""
    try:
        return folder.is_dir() and (not own or folder.stat().st_uid == os.getuid())
    except OSError:
        return False


def _writable(folder: Path, own: bool) -> bool:
    """Whether a library can be built into `folder`, created if missing (only its owner may
    write a new one)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return False
    return _trusted(folder, own) and os.access(folder, os.W_OK)


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu() -> str:
    """What identifies this CPU's instruction set: the model and flags from /proc/cpuinfo
    where there is one."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.startswith(wanted)}))


def _build(compiler: str, target: Path, flags: tuple[str, ...]) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, f"-I{HEADER.parent}", "-shared", str(SOURCE),
                        str(LSTM_SOURCE), "-o", tmp],
                       check=True, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        os.replace(tmp, target)  # atomic: another process sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _self_check(lib: ctypes.CDLL) -> str | None:
    """One forward and one backward step of the loaded kernel against the same equations in
    PyTorch (fp32 and bf16 inputs, a few microseconds): what went wrong, or None. A build
    that computes something else (a compiler's bug, a stale file) is not used."""
    import torch

    gen = torch.Generator().manual_seed(0)
    rows, hidden = 3, 5

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    gi, gh, h_prev = rand(rows, 3 * hidden), rand(rows, 3 * hidden), rand(rows, hidden)
    grad, carry, mm = rand(rows, hidden), rand(rows, hidden), rand(rows, hidden)
    for suffix, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = gi.to(dtype), gh.to(dtype)
        mm_in = mm.to(dtype)
        x, y = a.float(), b.float()
        r = torch.sigmoid(x[:, :hidden] + y[:, :hidden])
        z = torch.sigmoid(x[:, hidden:2 * hidden] + y[:, hidden:2 * hidden])
        n = torch.tanh(x[:, 2 * hidden:] + r * y[:, 2 * hidden:])
        h = n + z * (h_prev - n)
        g = carry + grad + mm_in.float()
        dn = g * (1 - z) * (1 - n * n)
        dz = g * (h_prev - n) * z * (1 - z)
        dr = dn * y[:, 2 * hidden:] * r * (1 - r)
        want = [torch.cat([r, z], 1), n, h, torch.cat([dr, dz, dn * r], 1),
                torch.cat([dr, dz, dn], 1), g * z]
        rz, n_out, h_out = torch.empty(rows, 2 * hidden), torch.empty(rows, hidden), \
            torch.empty(rows, hidden)
        d_hh, d_in = torch.empty(rows, 3 * hidden), torch.empty(rows, 3 * hidden)
        carry_out = carry.clone()
        getattr(lib, f"birnn_gru_forward_{suffix}")(
            rows, hidden, a.data_ptr(), b.data_ptr(), h_prev.data_ptr(), rz.data_ptr(),
            n_out.data_ptr(), h_out.data_ptr(), None)
        getattr(lib, f"birnn_gru_backward_{suffix}")(
            rows, hidden, rz.data_ptr(), n_out.data_ptr(), b.data_ptr(), h_prev.data_ptr(),
            grad.data_ptr(), mm_in.data_ptr(), carry_out.data_ptr(), d_hh.data_ptr(),
            d_in.data_ptr(), None)
        got = [rz, n_out, h_out, d_hh, d_in, carry_out]
        for name, x_got, x_want in zip(("r z", "n", "h", "d_hh", "d_in", "carry"), got, want,
                                      strict=True):
            if not torch.allclose(x_got, x_want, atol=1e-5, rtol=1e-5):
                err = (x_got - x_want).abs().max().item()
                return f"self-check failed ({suffix}, {name}: off by {err:.3g})"
    return None


@functools.cache
def gru_kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (logged) where it cannot be built or is turned off."""
    if os.environ.get("BIRNN_NATIVE", "1") == "0":
        log.info("BIRNN_NATIVE=0: the GRU recurrence runs its steps as PyTorch ops")
        return None
    import torch  # noqa: F401  first: the library must find PyTorch's libgomp loaded

    compiler = _compiler()
    if compiler is None:
        log.warning("no C compiler found ($CC, cc, gcc, clang): birnn's GRU recurrence runs "
                    "its steps as PyTorch ops, which is slower")
        return None
    errors = []
    identity = [SOURCE.read_text(), LSTM_SOURCE.read_text(), HEADER.read_text(), compiler,
                platform.machine(), _cpu()]
    candidates = _cache_dirs()
    # fallbacks: a compiler without OpenMP (the whole-loop functions then run the directions
    # in turn), one that does not know the CPU, one with neither
    variants = [tuple(f for f in COMPILE_FLAGS if f not in drop) for drop in
                ((), ("-fopenmp",), ("-march=native",), ("-fopenmp", "-march=native"))]
    for flags in variants:
        key = hashlib.sha256("\n".join([*identity, " ".join(flags)]).encode()).hexdigest()[:16]
        name = f"gru_kernel-{key}.so"
        built = [d / name for d, own in candidates if (d / name).exists() and _trusted(d, own)]
        folders = [] if built else [d for d, own in candidates if _writable(d, own)]
        if not built and not folders:
            tried = ", ".join(str(d) for d, _ in candidates)
            errors.append(f"no cache folder could be written ({tried})")
            break
        target = built[0] if built else folders[0] / name
        try:
            if not built:
                _build(compiler, target, flags)
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", None) or err
            errors.append(f"{' '.join(flags)}: {str(detail).strip()[:500]}")
            continue
        for function, argtypes in SIGNATURES.items():
            fn = getattr(lib, function)
            fn.argtypes, fn.restype = argtypes, None
        problem = _self_check(lib)
        if problem:
            errors.append(f"{' '.join(flags)}: {problem}")
            continue
        return lib
    log.warning("could not build birnn's GRU kernel (%s); the GRU recurrence runs its steps "
                "as PyTorch ops, which is slower", "; ".join(errors))
    return None


@functools.cache
def blas() -> tuple[int, int] | None:
    """The addresses of MKL's Fortran `sgemm_` and `MKL_SET_NUM_THREADS_LOCAL` in PyTorch's
    own library, for the kernel's whole-loop functions (`gru_kernel.c`), or None: a PyTorch
    build without MKL (ARM, macOS), or one whose sgemm_ fails a small product checked against
    PyTorch's. Then the recurrence loops in Python (`birnn.encoder.gru`)."""
    import torch

    if gru_kernel() is None:
        return None
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        gemm, local_threads = lib.sgemm_, lib.MKL_SET_NUM_THREADS_LOCAL
    except (OSError, AttributeError) as err:
        log.info("no MKL sgemm_ in PyTorch's library (%s): the GRU recurrence loops in Python",
                 err)
        return None
    c_int, c_float, ref = ctypes.c_int, ctypes.c_float, ctypes.byref
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen), torch.randn(4, 3, generator=gen)
    got = torch.zeros(4, 5)  # b @ a^T, read column-major: a (3, 5)^T' b^T
    m, n, k = c_int(5), c_int(4), c_int(3)
    gemm(b"T", b"N", ref(m), ref(n), ref(k), ref(c_float(1.0)), ctypes.c_void_p(a.data_ptr()),
         ref(k), ctypes.c_void_p(b.data_ptr()), ref(k), ref(c_float(0.0)),
         ctypes.c_void_p(got.data_ptr()), ref(m))
    if not torch.allclose(got, b @ a.t(), atol=1e-5):
        log.warning("MKL's sgemm_ failed a check: the GRU recurrence loops in Python")
        return None
    address = ctypes.c_void_p
    return ctypes.cast(gemm, address).value, ctypes.cast(local_threads, address).value


def loop_threads(dirs: int) -> tuple[int, int]:
    """For the kernel's whole-loop functions: directions at once, and MKL threads for each: a
    direction per intra-op thread, the rest shared. A forked child runs them one after
    another (`birnn.encoder.concurrent`)."""
    import torch

    from birnn.encoder import concurrent

    total = torch.get_num_threads()
    at_once = 1 if concurrent.forked() else max(1, min(dirs, total))
    return at_once, max(1, total // at_once)
