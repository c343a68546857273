"""Building and loading birnn's C kernel (`birnn.encoder.native`); its numbers are checked
against PyTorch's GRU in `test_gru.py`."""

from __future__ import annotations

import ast
import fnmatch
import functools
import logging
import os
import shutil

import pytest
from conftest import ROOT

from birnn.encoder import native

needs_compiler = pytest.mark.skipif(native._compiler() is None, reason="no C compiler")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """`gru_kernel()` uncached, building into an empty cache folder; the process's cached
    kernel is restored afterwards."""
    monkeypatch.setenv("BIRNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BIRNN_NATIVE", raising=False)
    native.gru_kernel.cache_clear()
    yield tmp_path / "cache"
    native.gru_kernel.cache_clear()


@needs_compiler
def test_builds_once_into_the_cache_and_loads_every_function(fresh):
    lib = native.gru_kernel()
    assert lib is not None
    for name in native.SIGNATURES:
        assert getattr(lib, name).argtypes == native.SIGNATURES[name]
    built = list(fresh.glob("gru_kernel-*.so"))
    assert len(built) == 1  # and no temporary file left behind
    mtime = built[0].stat().st_mtime_ns
    native.gru_kernel.cache_clear()
    assert native.gru_kernel() is not None
    assert [p.stat().st_mtime_ns for p in fresh.glob("*")] == [mtime]  # reused, not rebuilt


@needs_compiler
def test_the_cache_name_follows_the_source(fresh, monkeypatch, tmp_path):
    native.gru_kernel()
    changed = tmp_path / "gru_kernel.c"
    changed.write_text(native.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(native, "SOURCE", changed)
    native.gru_kernel.cache_clear()
    assert native.gru_kernel() is not None
    assert len(list(fresh.glob("gru_kernel-*.so"))) == 2


def test_turned_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("BIRNN_NATIVE", "0")
    assert native.gru_kernel() is None
    assert not fresh.exists()


def test_no_compiler_falls_back_with_a_warning(fresh, monkeypatch, caplog):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.gru_kernel() is None
    assert "no C compiler" in caplog.text


def test_a_failing_compiler_falls_back_with_its_error(fresh, monkeypatch, caplog, tmp_path):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(native, "_compiler", lambda: str(broken))
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.gru_kernel() is None
    assert "broken-cc: cannot compile" in caplog.text
    assert list(fresh.glob("*")) == []  # no partial file left in the cache


def test_the_compiler_comes_from_cc_first(monkeypatch):
    monkeypatch.setenv("CC", "sh")
    assert native._compiler() == shutil.which("sh")


@needs_compiler
def test_a_kernel_that_computes_something_else_is_not_used(fresh, monkeypatch, caplog, tmp_path):
    # a sigmoid off by 1% in the header both kernels include, beside copies of the sources
    # (a quoted #include looks beside the including file first)
    source = native.HEADER.read_text()
    assert "return 1.0f / (1.0f + exp_(-x));" in source
    (tmp_path / native.HEADER.name).write_text(source.replace(
        "return 1.0f / (1.0f + exp_(-x));", "return 1.0f / (1.0f + exp_(-1.01f * x));"))
    for name in ("SOURCE", "LSTM_SOURCE", "HEADER"):
        path = getattr(native, name)
        if name != "HEADER":
            (tmp_path / path.name).write_text(path.read_text())
        monkeypatch.setattr(native, name, tmp_path / path.name)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.gru_kernel() is None
    assert "self-check failed (f32, r z" in caplog.text


@needs_compiler
def test_a_home_that_cannot_be_written_falls_back_to_a_folder_of_ones_own(
        monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder's parent would be")
    monkeypatch.delenv("BIRNN_CACHE_DIR", raising=False)
    monkeypatch.delenv("BIRNN_NATIVE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    native.gru_kernel.cache_clear()
    try:
        assert native.gru_kernel() is not None
        own = tmp_path / "tmp" / f"birnn-{os.getuid()}"
        assert len(list(own.glob("gru_kernel-*.so"))) == 1
        assert own.stat().st_mode & 0o777 == 0o700
    finally:
        native.gru_kernel.cache_clear()


def test_a_temporary_folder_of_someone_else_is_not_used(monkeypatch, tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    monkeypatch.setattr(native.os, "getuid", lambda: folder.stat().st_uid + 1)
    assert native._writable(folder, own=False)
    assert not native._writable(folder, own=True) and not native._trusted(folder, own=True)


@needs_compiler
def test_no_trapping_math_changes_no_result(fresh, monkeypatch):
    """`-fno-trapping-math` lets the forward loop vectorise; built without it the kernel
    must give the same bits, extremes (inf, NaN, saturated gates) included."""
    import torch

    def outputs(flags):
        monkeypatch.setattr(native, "COMPILE_FLAGS", flags)
        native.gru_kernel.cache_clear()
        lib = native.gru_kernel()
        assert lib is not None
        gen = torch.Generator().manual_seed(3)
        rows, hidden = 7, 37  # odd sizes: vector loops and their scalar tails
        gi, gh = (torch.randn(rows, 3 * hidden, generator=gen) * 30 for _ in range(2))
        gi[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e-40])
        h_prev, grad, mm = (torch.randn(rows, hidden, generator=gen) for _ in range(3))
        got = []
        for suffix, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
            rz, n, h = torch.empty(rows, 2 * hidden), torch.empty(rows, hidden), \
                torch.empty(rows, hidden)
            h_mm = torch.empty(rows, hidden, dtype=torch.bfloat16)
            a, b, m = gi.to(dtype), gh.to(dtype), mm.to(dtype)
            getattr(lib, f"birnn_gru_forward_{suffix}")(
                rows, hidden, a.data_ptr(), b.data_ptr(), h_prev.data_ptr(), rz.data_ptr(),
                n.data_ptr(), h.data_ptr(), h_mm.data_ptr())
            carry = torch.ones(rows, hidden)
            d_hh, d_in = torch.empty(rows, 3 * hidden), torch.empty(rows, 3 * hidden)
            d_mm = torch.empty(rows, 3 * hidden, dtype=torch.bfloat16)
            getattr(lib, f"birnn_gru_backward_{suffix}")(
                rows, hidden, rz.data_ptr(), n.data_ptr(), b.data_ptr(), h_prev.data_ptr(),
                grad.data_ptr(), m.data_ptr(), carry.data_ptr(), d_hh.data_ptr(),
                d_in.data_ptr(), d_mm.data_ptr())
            got += [t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)
                    for t in (rz, n, h, h_mm, carry, d_hh, d_in, d_mm)]
        return got

    assert "-fno-trapping-math" in native.COMPILE_FLAGS
    vectorised = outputs(native.COMPILE_FLAGS)
    plain = outputs(tuple(f for f in native.COMPILE_FLAGS if f != "-fno-trapping-math"))
    for a, b in zip(vectorised, plain, strict=True):
        assert torch.equal(a, b)


@needs_compiler
def test_a_compiler_without_openmp_still_builds_the_loop(fresh, monkeypatch, tmp_path):
    """A compiler that rejects -fopenmp gets the build without it: the whole-loop functions
    then run the directions in turn, with nn.GRU's results."""
    import torch

    from birnn.encoder.gru import GRURecurrence

    real = native._compiler()
    picky = tmp_path / "no-openmp-cc"
    picky.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\n'
                     f'exec {real} "$@"\n')
    picky.chmod(0o755)
    monkeypatch.setattr(native, "_compiler", lambda: str(picky))
    native.blas.cache_clear()
    monkeypatch.setattr(native, "blas", functools.cache(native.blas.__wrapped__))
    assert native.gru_kernel() is not None
    if native.blas() is None:
        pytest.skip("no MKL sgemm_ in this PyTorch: the loop runs in Python")
    grus = [torch.nn.GRU(3, 4) for _ in range(2)]
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        gates = torch.stack([torch.nn.functional.linear(x, g.weight_ih_l0, g.bias_ih_l0)
                             for g in grus], 1)  # (T, 2, B, 3H)
        got = GRURecurrence.apply(gates, torch.stack([g.weight_hh_l0 for g in grus]),
                                  torch.stack([g.bias_hh_l0 for g in grus]), torch.float32)
        for k, g in enumerate(grus):
            torch.testing.assert_close(got[:, k], g(x)[0], atol=1e-5, rtol=0)


def test_every_file_the_build_reads_is_package_data():
    """An installed (non-editable) birnn compiles from its own package folder: every source
    and header the build reads must be shipped with it."""
    (line,) = [line for line in (ROOT / "pyproject.toml").read_text().splitlines()
               if line.startswith('"birnn.encoder" = ')]
    shipped = ast.literal_eval(line.split("=", 1)[1].strip())
    for path in (native.SOURCE, native.LSTM_SOURCE, native.HEADER):
        assert path.parent == ROOT / "src" / "birnn" / "encoder"
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in shipped), path.name
    # and the sources include nothing else of the package's
    included = {line.split('"')[1] for line in
                (native.SOURCE.read_text() + native.LSTM_SOURCE.read_text()).splitlines()
                if line.startswith('#include "')}
    assert included == {native.HEADER.name}
