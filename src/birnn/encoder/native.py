"""birnn's C kernel for the GRU recurrence's element-wise step (`gru_kernel.c`), compiled on
first use and loaded with ctypes.

The kernel is plain C (no Python or PyTorch headers), so it compiles in under a second with
the system's C compiler (`$CC`, else `cc`, `gcc` or `clang`), for the CPU it runs on
(`-march=native`). The shared library is cached in `$BIRNN_CACHE_DIR`, else
`$XDG_CACHE_HOME/birnn` or `~/.cache/birnn`, under a name made from the source, the flags,
the compiler and the CPU, so a changed source or another machine sharing the cache gets its
own build; several processes starting at once (DDP) each write their own file and rename it
into place.

Without a compiler, or with `BIRNN_NATIVE=0`, `gru_kernel()` returns None and the recurrence
runs its steps as PyTorch ops (`birnn.encoder.gru`), with the same results, more slowly; the
reason is logged once.
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
# -march=native: the vector width of this CPU. No -ffast-math: linked into a shared library
# it sets flush-to-zero for the whole process; the kernel vectorises without it.
COMPILE_FLAGS = ("-O3", "-march=native", "-fPIC", "-std=c99")
COMPILE_TIMEOUT_S = 120

_pointer, _long = ctypes.c_void_p, ctypes.c_long
# argument types per function (see gru_kernel.c); every array argument is a data pointer
SIGNATURES = {
    "birnn_gru_forward_f32": [_long, _long] + [_pointer] * 7,
    "birnn_gru_forward_bf16": [_long, _long] + [_pointer] * 7,
    "birnn_gru_backward_f32": [_long, _long] + [_pointer] * 10,
    "birnn_gru_backward_bf16": [_long, _long] + [_pointer] * 10,
}


def cache_dir() -> Path:
    if os.environ.get("BIRNN_CACHE_DIR"):
        return Path(os.environ["BIRNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "birnn"


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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, "-shared", str(SOURCE), "-o", tmp],
                       check=True, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        os.replace(tmp, target)  # atomic: another process sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def gru_kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (logged) where it cannot be built or is turned off."""
    if os.environ.get("BIRNN_NATIVE", "1") == "0":
        log.info("BIRNN_NATIVE=0: the GRU recurrence runs its steps as PyTorch ops")
        return None
    compiler = _compiler()
    if compiler is None:
        log.warning("no C compiler found ($CC, cc, gcc, clang): birnn's GRU recurrence runs "
                    "its steps as PyTorch ops, which is slower")
        return None
    errors = []
    for flags in (COMPILE_FLAGS, tuple(f for f in COMPILE_FLAGS if f != "-march=native")):
        key = hashlib.sha256("\n".join(
            [SOURCE.read_text(), " ".join(flags), compiler, platform.machine(), _cpu()]
        ).encode()).hexdigest()[:16]
        target = cache_dir() / f"gru_kernel-{key}.so"
        try:
            if not target.exists():
                _build(compiler, target, flags)
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", None) or err
            errors.append(f"{' '.join(flags)}: {str(detail).strip()[:500]}")
            continue
        for name, argtypes in SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, None
        return lib
    log.warning("could not build birnn's GRU kernel (%s); the GRU recurrence runs its steps "
                "as PyTorch ops, which is slower", "; ".join(errors))
    return None
