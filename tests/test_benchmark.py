"""Smoke tests for `birnn.bench` on tiny sizes: outputs well formed, no timing asserts.

The benchmark runs once (module-scoped fixture) in a subprocess through its thin entry point
scripts/benchmark.py, with one thread, as a user would run it, over a grid that covers every
code path: uniform and mixed cells, concat (fused baselines apply) and sum (they do not), 1 and
2 layers, fp32 and bf16, full and ragged lengths, and the tagger profile.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from birnn.bench import cli
from birnn.bench import grid as grid_module
from birnn.bench.cases import candidates
from birnn.bench.grid import Config, make_batch
from birnn.bench.keras_peer import add_keras_ratios, keras_markdown
from birnn.hardware import cpu_supports_bf16

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"
ARGS = (
    "--cells lstm,mixed --merges concat,sum --layers 1,2 --hidden 8 --batch 2 --seq 5 "
    "--input 6 --steps 2 --warmup 1 --matmul-size 64 --precisions fp32,bf16 --ragged "
    "--profile --threads 1 --vocab 20 --tags 3"
).split()
AXES = ("cell", "merge", "layers", "hidden", "device", "precision", "lengths")
NUMBERS = (
    "tokens", "train_ms", "infer_ms", "train_tok_s", "infer_tok_s", "train_gflops",
    "infer_gflops", "train_frac_matmul", "infer_frac_matmul",
)  # fmt: skip
RATIOS = ("vs_layered_loop", "vs_layered_loop_infer", "vs_fused", "vs_fused_infer")
# bf16 on CPU runs where oneDNN has bf16 kernels; elsewhere the run leaves it out
PRECS = {"fp32", "bf16"} if cpu_supports_bf16() else {"fp32"}
CONFIGS = 2 * 2 * 2 * len(PRECS) * 2  # cells x merges x layers x precisions x lengths


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, json.loads((out / "results.json").read_text())


def test_files_and_stdout(run):
    out, stdout, _ = run
    assert (out / "results.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "| train tok/s |" in md and "vs layered loop" in md
    # one progress line per configuration
    assert "[1/" in stdout and f"[{CONFIGS}/{CONFIGS}]" in stdout
    assert "| cell | merge |" in stdout  # the table is printed at the end
    assert "Tagger training step" in stdout


def test_bf16_is_left_out_on_a_cpu_without_its_kernels(monkeypatch, capsys):
    monkeypatch.setattr(grid_module, "cpu_supports_bf16", lambda: False)
    args = cli.parse_args(["--quick", "--devices", "cpu", "--precisions", "fp32,bf16"])
    assert {c.precision for c in grid_module.grid(args)} == {"fp32"}
    assert "bf16 on cpu left out" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # nothing would be left to measure
        cli.parse_args(["--quick", "--devices", "cpu", "--precisions", "bf16"])
    monkeypatch.setattr(grid_module, "cpu_supports_bf16", lambda: True)
    args = cli.parse_args(["--quick", "--devices", "cpu", "--precisions", "fp32,bf16"])
    assert {c.precision for c in grid_module.grid(args)} == {"fp32", "bf16"}


def test_header(run):
    header = run[2][0]
    assert header["kind"] == "header"
    for key in ("torch", "date", "device_names", "threads", "matmul_gflops", "memory"):
        assert header[key], key
    assert header["threads"] == 1
    for probe in (header["probe_before"], header["probe_after"]):
        assert probe["ms"] > 0 and probe["ms_1_thread"] > 0
    assert set(header["matmul_gflops"]["cpu"]) == PRECS
    assert all(v > 0 for v in header["matmul_gflops"]["cpu"].values())


def test_result_records(run):
    results = [r for r in run[2] if r["kind"] == "result"]
    configs = {tuple(r[a] for a in AXES) for r in results}
    assert len(configs) == CONFIGS
    for rec in results:
        for key in NUMBERS:
            assert isinstance(rec[key], int | float) and rec[key] > 0, (key, rec)
        assert rec["peak_mem_mb"] is None or rec["peak_mem_mb"] >= 0
        if rec["lengths"] == "full":
            assert rec["tokens"] == 2 * 5
        else:  # real tokens only: the longest sequence is full, the other has 4..5
            assert 5 + math.ceil(0.8 * 5) <= rec["tokens"] <= 10


def test_impls_and_ratios(run):
    results = [r for r in run[2] if r["kind"] == "result"]
    (header,) = [r for r in run[2] if r["kind"] == "header"]
    by_config: dict[tuple, dict[str, dict]] = {}
    for rec in results:
        by_config.setdefault(tuple(rec[a] for a in AXES), {})[rec["impl"]] = rec
    for (cell, merge, layers, *_), impls in by_config.items():
        # mixed with one layer is a single GRU layer: one cell type, so fusable
        uniform = cell != "mixed" or layers == 1
        fused_applies = uniform and merge == "concat"
        expected = {"birnn-layered", "layered-loop"}
        if impls["birnn-layered"]["lengths"] == "ragged":
            expected.add("birnn-packed")
        if cell != "lstm":  # a GRU layer: also the stack with the GRU recurrence auto did not take
            device = impls["birnn-layered"]["device"]
            auto_takes_birnn = device == "cpu" and (header["gru_matmul"] == "oneDNN"
                                                    or header["gru_steps"] == "C kernel")
            expected.add("birnn-torch-gru" if auto_takes_birnn else "birnn-own-gru")
        if fused_applies:
            expected |= {"birnn-fused", "torch-fused"}
        if impls["birnn-layered"]["device"] == "cpu":
            expected.add("birnn-concurrent")
            # an LSTM layer where birnn's LSTM loop runs: also the stack with PyTorch's LSTM
            if (cell == "lstm" or layers > 1) and header["lstm_loop"].startswith("C loop"):
                expected.add("birnn-torch-lstm")
        assert set(impls) == expected
        assert sum(r["auto"] for name, r in impls.items() if name.startswith("birnn-")) == 1
        for name, rec in impls.items():
            if not name.startswith("birnn-"):
                assert "vs_layered_loop" not in rec
                continue
            assert rec["vs_layered_loop"] > 0 and rec["vs_layered_loop_infer"] > 0
            if fused_applies:
                assert rec["vs_fused"] > 0 and rec["vs_fused_infer"] > 0
            else:
                assert rec["vs_fused"] is None and rec["vs_fused_infer"] is None


def test_profile_records(run):
    profiles = [r for r in run[2] if r["kind"] == "profile"]
    assert len(profiles) == len(PRECS) * 2  # one per (device, precision, cell)
    for rec in profiles:
        assert list(rec["phases_ms"]) == [
            "embedding", "encoder forward", "head + loss", "backward", "optimizer step",
        ]  # fmt: skip
        assert all(ms > 0 for ms in rec["phases_ms"].values())


def test_python_dash_m_runs_the_same_command_line():
    proc = subprocess.run([sys.executable, "-m", "birnn.bench", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--quick" in proc.stdout and "--ragged" in proc.stdout
    assert proc.stdout.startswith("usage: python -m birnn.bench")


def test_an_extra_mode_runs_instead_of_the_grid(monkeypatch):
    ran = []

    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--fake-model", help="time a model file")

    def run(args: argparse.Namespace) -> int:
        ran.append((args.fake_model, args.batch))
        return 3

    mode = cli.Mode(add_arguments=add, wanted=lambda a: a.fake_model is not None, run=run)
    monkeypatch.setattr(cli, "MODES", (mode,))
    monkeypatch.setattr(cli, "run_grid", lambda args: pytest.fail("the grid ran"))
    assert cli.main(["--fake-model", "m.keras", "--batch", "4"]) == 3
    assert ran == [("m.keras", 4)]  # the grid's own options still parse alongside
    with pytest.raises(SystemExit):
        cli.parse_args(["--fake-model"])  # the mode's option is checked by the one parser


def test_cli_rejects_bad_axis():
    with pytest.raises(SystemExit):
        cli.parse_args(["--merges", "concat,max"])
    args = cli.parse_args(["--quick"])
    assert args.cells == ["lstm", "gru"] and args.layers == [2] and args.hidden == [256]
    assert cli.parse_args(["--quick", "--hidden", "64"]).hidden == [64]  # flags beat presets
    with pytest.raises(SystemExit):
        cli.parse_args(["--keras-threads", "2"])
    assert cli.parse_args(["--keras-threads", "1,2"]).keras_threads == (1, 2)
    assert cli.parse_args(["--keras-jit", "false"]).keras_jit is False


def test_keras_ratios_pair_each_stack_with_its_keras_row():
    def row(impl, precision, tok_s, merge="sum", lengths="full", auto=None):
        rec = {"impl": impl, "cell": "lstm", "merge": merge, "layers": 2, "hidden": 8,
               "device": "cpu" if impl != "keras" else "keras:tensorflow",
               "precision": precision, "lengths": lengths, "train_tok_s": tok_s}
        if auto is not None:
            rec["auto"] = auto
        return rec

    results = [
        row("birnn-layered", "fp32", 300.0, auto=True),
        row("birnn-layered", "bf16", 600.0, auto=True),
        row("birnn-fused", "fp32", 900.0, auto=False),  # not what auto runs: no ratio
        row("birnn-layered", "fp32", 250.0, lengths="ragged", auto=True),  # Keras: full only
        row("birnn-layered", "fp32", 100.0, merge="mul", auto=True),  # no Keras row for mul
        row("birnn-concurrent", "fp32", 500.0, auto=False),  # the concurrent option: a ratio
        row("keras", "fp32", 200.0),
    ]
    add_keras_ratios(results)
    assert [r.get("vs_keras") for r in results] == [1.5, 3.0, None, None, None, 2.5, None]
    table = keras_markdown(results)
    assert "| auto | 300 | 200 | 1.50x |" in table and "| auto | 600 | 200 | 3.00x |" in table
    assert "| directions=concurrent | 500 | 200 | 2.50x |" in table
    assert len(table.strip().splitlines()) == 2 + 3


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "mixed"])
def test_implementations_compute_the_same_stack(cell, merge):
    """Every implementation timed for a configuration is built from the same seed into the
    same weights, so on a full-length batch they must give the same outputs (the ratios
    compare equal work); on a ragged batch birnn's two strategies agree at real tokens."""
    args = cli.parse_args(["--batch", "3", "--seq", "6", "--input", "5"])
    for lengths in ("full", "ragged"):
        cfg = Config(cell, merge, 2, 4, "cpu", "fp32", lengths)
        x, lens = make_batch(cfg, args, torch.device("cpu"))
        outputs = {}
        with torch.no_grad():
            for name, build in candidates(cfg, args.input, seed=7, steps=args.seq).items():
                outputs[name] = build().eval()(x, lens)
        if lengths == "full":
            assert {"birnn-layered", "layered-loop"} <= set(outputs)
            for name, out in outputs.items():
                torch.testing.assert_close(out, outputs["layered-loop"], msg=name)
        else:
            torch.testing.assert_close(outputs["birnn-layered"], outputs["birnn-packed"])


def test_predict_mode_times_each_backend_on_the_whole_input(tmp_path, monkeypatch):
    """`--predict ckpt=PATH`: every backend labels every sentence and token of the input, and
    each start-up figure comes from a predict.py process that succeeded."""
    from birnn.bench import predict_speed
    from birnn.data import read_column_file

    monkeypatch.setattr(predict_speed, "ROUNDS", 1)
    monkeypatch.setattr(predict_speed, "STARTS", 1)
    source = ROOT / "data" / "sample_ner" / "test.txt"
    ckpt = ROOT / "tests" / "fixtures" / "checkpoints" / "tagger.ckpt"
    assert cli.main(["--predict", f"ckpt={ckpt}", "--predict-input", str(source),
                     "--predict-batch", "8,32", "--out", str(tmp_path), "--threads", "1"]) == 0
    header, *rows = json.loads((tmp_path / "predict.json").read_text())
    sentences = list(read_column_file(source))
    backends = {"torch-fp32", "onnxruntime"} | ({"torch-bf16"} if cpu_supports_bf16() else set())
    assert {(r["backend"], r["batch_size"]) for r in rows} == {
        (b, n) for b in backends for n in (8, 32)}
    assert header["threads"] == 1
    for row in rows:
        assert row["sentences"] == len(sentences)
        assert row["tokens"] == sum(len(s["tokens"]) for s in sentences)
        assert row["tokens_s"] == pytest.approx(row["tokens"] / row["seconds"])
        assert row["backend"] == "torch-bf16" or row["start_up_s"] > 0
    assert "| onnxruntime |" in (tmp_path / "predict.md").read_text()
