"""`--predict ckpt=PATH`: how fast `predict.py` labels a file with each backend.

Throughput is measured in process, from reading the text to the written output
(`birnn.cli.predict.label_stream`, what `predict.py` runs), after the model is loaded: PyTorch
eager in fp32, PyTorch under bf16 autocast (where the CPU has bf16 kernels,
`birnn.hardware`), and ONNX Runtime on the model `export.py` writes (exported here into a
temporary folder). The backends take turns, round after round, so a change of machine load
hits them alike; each one's median round counts. Start-up is measured apart: the wall time of
`python predict.py` on a one-sentence input, in a fresh process (interpreter, imports, model
load and that sentence), median of a few runs.

The input is `--predict-input`, by default the test split of the checkpoint's own run
(`data.dir` and `data.files.test` of its `config.yaml`). Writes predict.{json,md} into `--out`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from birnn.bench import machine
from birnn.bench.grid import runs_here
from birnn.export.runtime import BATCH_SIZE
from birnn.hardware import CPU_BF16_MISSING

ROUNDS = 3  # timed passes over the input per backend (median)
STARTS = 3  # fresh `predict.py` processes per start-up figure (median)
ROOT = Path(__file__).resolve().parents[3]  # the checkout, where predict.py lives


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predict", metavar="ckpt=PATH",
                   help="time predict.py's backends on a checkpoint or run folder (instead of "
                        "the encoder grid)")
    p.add_argument("--predict-input", type=Path, metavar="FILE",
                   help="--predict: the text to label (default: the run's test split)")
    p.add_argument("--predict-batch", type=batch_sizes, default=[BATCH_SIZE], metavar="N[,N...]",
                   help=f"--predict: sentences per batch, one or a comma list (predict.py's "
                        f"batch_size, default {BATCH_SIZE})")


def batch_sizes(text: str) -> list[int]:
    """`--predict-batch`'s comma list; argparse reports a bad one in one line."""
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"integers >= 1, e.g. 32,256 (got {text!r})")
    return sizes


def wanted(args: argparse.Namespace) -> bool:
    return args.predict is not None


def run(args: argparse.Namespace) -> int:
    from birnn.checkpoint import checkpoint_path

    ckpt = checkpoint_path(args.predict.removeprefix("ckpt="))
    source = args.predict_input or test_split(ckpt)
    torch.set_num_threads(args.threads or machine.cores())
    with tempfile.TemporaryDirectory() as tmp:
        backends = load_backends(ckpt, Path(tmp))
        rows = throughput(backends, source, Path(tmp) / "out.txt", args.predict_batch)
        starts = start_up(ckpt, backends, source, Path(tmp))
    header = {"kind": "header", "checkpoint": str(ckpt), "input": str(source),
              "cpu": machine.cpu_name(), "threads": torch.get_num_threads(),
              "cores": machine.cores(), "torch": torch.__version__,
              "rounds": ROUNDS}
    for row in rows:
        row["start_up_s"] = starts.get(row["backend"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predict.json").write_text(json.dumps([header, *rows], indent=2) + "\n")
    table = markdown(header, rows)
    (args.out / "predict.md").write_text(table)
    print(table)
    print(f"wrote {args.out}/predict.{{json,md}}")
    return 0


def test_split(ckpt: Path) -> Path:
    """The test file of the checkpoint's run (its `config.yaml`, beside `checkpoints/`)."""
    from omegaconf import OmegaConf

    from birnn.errors import ConfigError

    config = ckpt.resolve().parent.parent / "config.yaml"
    data = OmegaConf.load(config).get("data", {}) if config.is_file() else {}
    if not data.get("dir"):
        raise ConfigError(f"--predict-input: no data.dir in {config} to take the test split "
                          "from; name the file to label")
    return Path(data["dir"]) / (data.get("files") or {}).get("test", "test.txt")


def load_backends(ckpt: Path, tmp: Path) -> dict:
    """Each backend's ready predictor and the context it runs under."""
    from birnn.export.runtime import OnnxRunner
    from birnn.inference import Predictor

    predictor = Predictor.from_checkpoint(ckpt)
    backends = {"torch-fp32": (predictor, contextlib.nullcontext)}
    if runs_here("cpu", "bf16"):
        backends["torch-bf16"] = (predictor, lambda: torch.autocast("cpu", torch.bfloat16))
    else:
        print(f"torch-bf16 left out: {CPU_BF16_MISSING}")
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        from birnn.checkpoint import load_model
        from birnn.export.onnx import export_onnx

        path = export_onnx(*load_model(ckpt), tmp / "export")
        backends["onnxruntime"] = (OnnxRunner.from_path(path), contextlib.nullcontext)
    else:
        print("onnxruntime left out: pip install -e '.[onnx]'")
    return backends


def throughput(backends: dict, source: Path, out: Path, batches: list[int]) -> list[dict]:
    """Sentences/s and tokens/s of each backend at each batch size, reading `source` and
    writing `out`."""
    from birnn.cli.predict import label_stream, output_format, read_sentences

    cases = [(name, batch) for name in backends for batch in batches]
    seconds: dict[tuple, list[float]] = {case: [] for case in cases}
    counts = {}
    for round_ in range(ROUNDS + 1):  # round 0 warms up (caches, lazy initialisation)
        for name, batch in cases:
            predictor, context = backends[name]
            start = time.perf_counter()
            sentences, _ = read_sentences(str(source))
            with out.open("w", encoding="utf-8") as f, context():
                counts[name, batch] = label_stream(
                    predictor, sentences, f, output_format("auto", predictor.task), batch)
            if round_:
                seconds[name, batch].append(time.perf_counter() - start)
        print(f"round {round_}/{ROUNDS}: " + ", ".join(
            f"{n} (batch {b}) {counts[n, b][1] / s[-1]:,.0f} tokens/s"
            for (n, b), s in seconds.items() if s))
    rows = []
    for (name, batch), times in seconds.items():
        median = statistics.median(times)
        sentences, tokens = counts[name, batch]
        rows.append({"kind": "result", "backend": name, "batch_size": batch,
                     "sentences": sentences, "tokens": tokens, "seconds": median,
                     "sentences_s": sentences / median, "tokens_s": tokens / median})
    return rows


def start_up(ckpt: Path, backends: dict, source: Path, tmp: Path) -> dict[str, float]:
    """Wall seconds of `python predict.py` on one sentence, per backend (fp32 for torch;
    the batch size does not matter for one sentence)."""
    from birnn.cli.predict import read_sentences

    one = tmp / "one.txt"
    one.write_text(" ".join(next(read_sentences(str(source))[0])) + "\n", encoding="utf-8")
    models = {"torch-fp32": ckpt.resolve()}
    if "onnxruntime" in backends:
        models["onnxruntime"] = tmp / "export" / "model.onnx"
    result = {}
    for name, model in models.items():
        times = []
        for _ in range(STARTS):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), f"ckpt={model}",
                                   f"input={one}", f"output={tmp / 'one.out'}",
                                   "progress=false"], capture_output=True, text=True, cwd=tmp)
            times.append(time.perf_counter() - start)
            if proc.returncode:
                raise RuntimeError(f"predict.py failed: {proc.stderr.strip()[-500:]}")
        result[name] = statistics.median(times)
    return result


def markdown(header: dict, rows: list[dict]) -> str:
    fastest = max(r["tokens_s"] for r in rows)
    lines = [
        f"Prediction speed: {Path(header['checkpoint']).name} on {header['input']}, "
        f"{header['cpu']}, {header['threads']} threads, median of {header['rounds']} rounds; "
        "start-up: predict.py on one sentence in a fresh process",
        "",
        "| backend | batch | sentences/s | tokens/s | vs fastest | start-up s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        start = f"{r['start_up_s']:.2f}" if r["start_up_s"] is not None else "n/a"
        lines.append(f"| {r['backend']} | {r['batch_size']} | {r['sentences_s']:,.0f} | "
                     f"{r['tokens_s']:,.0f} | {r['tokens_s'] / fastest:.2f} | {start} |")
    return "\n".join(lines) + "\n"
