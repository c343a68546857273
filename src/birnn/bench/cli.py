"""The benchmark's command line: `python -m birnn.bench` or `python scripts/benchmark.py`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import birnn.bench
from birnn.bench import keras_model, machine, paths, predict_speed
from birnn.bench.cases import run_config
from birnn.bench.grid import (
    FULL_GRID,
    GRID_CELLS,
    GRID_MERGES,
    PRECISIONS,
    QUICK_GRID,
    Config,
    grid,
    runs_here,
    sort_key,
)
from birnn.bench.keras_peer import add_keras_ratios, keras_records
from birnn.bench.report import impl_label, write_outputs
from birnn.bench.tagger_profile import profile_markdown, profile_records
from birnn.bench.timing import contended, contention_probe, matmul_gflops
from birnn.hardware import CPU_BF16_MISSING


@dataclass(frozen=True)
class Mode:
    """A benchmark mode besides the encoder grid, run instead of it when its option is given.

    Attributes:
        add_arguments: adds the mode's options to the parser.
        wanted: whether the parsed command line asks for this mode.
        run: runs it with the parsed options; returns the exit status.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    wanted: Callable[[argparse.Namespace], bool]
    run: Callable[[argparse.Namespace], int]


# Extra modes, each in its own module of this package, register here (one `Mode` each); the
# first whose `wanted` is true runs, else the encoder grid does.
MODES: tuple[Mode, ...] = (
    Mode(keras_model.add_arguments, keras_model.wanted, keras_model.run),
    Mode(predict_speed.add_arguments, predict_speed.wanted, predict_speed.run),
)


def _csv(value: str, cast=str) -> list:
    return [cast(v.strip()) for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The grid's options, then each extra mode's."""
    prog = "python -m birnn.bench" if Path(sys.argv[0]).name == "__main__.py" else None
    p = argparse.ArgumentParser(prog=prog, description=birnn.bench.__doc__.split("\n\n")[0])
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
    p.add_argument("--out", type=Path, default=Path("docs") / "benchmarks",
                   help="output folder (default: docs/benchmarks under the current folder)")
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
    for mode in MODES:
        mode.add_arguments(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the options; presets (--quick or the full grid) fill what is not given."""
    p = build_parser()
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
    if "cpu" in args.devices and not runs_here("cpu", "bf16") and "bf16" in args.precisions:
        if not any(runs_here(d, prec) for d in args.devices for prec in args.precisions):
            p.error(f"--precisions bf16 on cpu: {CPU_BF16_MISSING}")
        print(f"bf16 on cpu left out: {CPU_BF16_MISSING}")
    return args


def run_grid(args: argparse.Namespace) -> int:
    """Measure every configuration of the grid; write and print the results."""
    started, load_before = time.perf_counter(), machine.loadavg()
    args.threads, probe = machine.choose_threads(args.threads)
    torch.set_num_threads(args.threads)
    peaks = {
        dev: {
            prec: matmul_gflops(torch.device(dev), prec, args.matmul_size, args.steps)
            for prec in args.precisions
            if runs_here(dev, prec)
        }
        for dev in args.devices
    }
    header = machine.make_header(args, peaks, load_before)
    onednn = paths.onednn_matmul()
    header["onednn_matmul_gflops"] = {
        prec: matmul_gflops(torch.device("cpu"), prec, args.matmul_size, args.steps, onednn)
        for prec in args.precisions
        if runs_here("cpu", prec)
    } if "cpu" in args.devices and onednn else {}
    header.update(paths.gru_runtime())
    header.update(paths.lstm_runtime())
    header["probe_before"] = probe
    machine.warn_if_loaded(header)
    cfgs = grid(args)
    results = measure(cfgs, args, peaks)
    if args.peer == "keras":
        results += keras_records(cfgs, args)
        add_keras_ratios(results)
    profiles = profile_records(cfgs, args) if args.profile else []
    header["loadavg_after"] = machine.loadavg()
    header["probe_after"] = contention_probe(args.threads)
    if contended(header["probe_after"]):
        print(f"warning: the CPU was contended by the end of the run ({header['probe_after']})")
    header["seconds"] = round(time.perf_counter() - started, 1)
    results.sort(key=sort_key)
    table = write_outputs(args.out, header, results, profiles)
    print()
    print(table)
    if profiles:
        print(profile_markdown(profiles))
    print(f"wrote {args.out}/results.{{json,md,png}} in {header['seconds']}s")
    return 0


def measure(cfgs: list[Config], args, peaks: dict) -> list[dict]:
    """Every configuration's records, with one progress line each."""
    results: list[dict] = []
    for n, cfg in enumerate(cfgs, 1):
        t0 = time.perf_counter()
        records = run_config(cfg, args, peaks)
        results += records
        summary = ", ".join(f"{impl_label(r)} {r['train_tok_s']:,.0f}" for r in records)
        print(
            f"[{n}/{len(cfgs)}] {cfg.label()}: train tok/s {summary} "
            f"({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the mode the command line asks for (the encoder grid by default)."""
    args = parse_args(argv)
    for mode in MODES:
        if mode.wanted(args):
            return mode.run(args)
    return run_grid(args)


if __name__ == "__main__":
    sys.exit(main())
