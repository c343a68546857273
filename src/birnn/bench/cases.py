"""The implementations measured for each configuration, their records and their ratios.

Per configuration:

- ``birnn-layered`` and ``birnn-fused`` (when the stack is fusable: one cell type, ``concat``);
  ``impl="auto"`` only dispatches to one of these, so it is not timed again: the one it picks
  is marked ``auto``. With ragged lengths ``birnn-layered`` takes ``ragged="auto"`` and
  ``birnn-packed`` is the same stack with ``ragged="pack"`` (PyTorch's ``PackedSequence``), to
  show what the choice is worth. Stacks with GRU layers add the GRU recurrence ``gru="auto"``
  does not take: ``birnn-torch-gru`` (``gru="torch"``, PyTorch's recurrence) where auto takes
  birnn's (`birnn.encoder.gru`), else ``birnn-own-gru`` (``gru="birnn"``); stacks with LSTM
  layers, where ``lstm="auto"`` takes birnn's LSTM recurrence (`birnn.encoder.lstm`),
  ``birnn-torch-lstm`` (``lstm="torch"``, PyTorch's, oneDNN's kernel). ``birnn-layered``
  keeps the default ``directions="auto"``; on CPU, ``birnn-concurrent`` is the layer-by-layer
  stack with ``directions="concurrent"`` (every layer's two directions on two threads; its
  inference runs serial, as the others').
- ``layered-loop`` and ``torch-fused``: the baselines of `birnn.bench.baselines`, the latter
  only where it computes the same stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from birnn import BiRNN
from birnn.bench import paths
from birnn.bench.baselines import BiRNNOutputs, LayeredLoop, TorchFused
from birnn.bench.grid import Config, forward_flops_per_token, fusable, layer_cells, make_batch
from birnn.bench.timing import time_models

# the extra row of a stack with GRU layers, by the recurrence `gru="auto"` did not choose
OTHER_GRU = {"birnn": "birnn-torch-gru", "torch": "birnn-own-gru"}
GRU_OPTION = {"birnn-torch-gru": "torch", "birnn-own-gru": "birnn"}


def candidates(cfg: Config, input_size: int, seed: int,
               steps: int) -> dict[str, Callable[[], nn.Module]]:
    """Builders of every implementation that applies to `cfg` on batches of `steps` time
    steps, by name (seeded weights)."""
    cells = layer_cells(cfg.cell, cfg.layers)

    def seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            torch.manual_seed(seed)
            return build()

        return make

    def birnn(impl: str, ragged: str = "auto", gru: str = "auto", lstm: str = "auto",
              directions: str = "auto") -> Callable[[], nn.Module]:
        return seeded(
            lambda: BiRNNOutputs(
                BiRNN(input_size, cfg.hidden, cells, cfg.layers, cfg.merge, impl=impl,
                      ragged=ragged, gru=gru, lstm=lstm, directions=directions)
            )
        )

    builders = {"birnn-layered": birnn("layered")}
    if cfg.lengths == "ragged":
        builders["birnn-packed"] = birnn("layered", ragged="pack")
    if "gru" in cells:  # the GRU recurrence `gru="auto"` does not take here, for comparison
        other = other_gru(cfg, input_size, steps)
        builders[other] = birnn("layered", gru=GRU_OPTION[other])
    if "lstm" in cells and paths.auto_recurrence("lstm", input_size, cfg.hidden, cells,
                                                 cfg.merge, torch.device(cfg.device), steps,
                                                 cfg.lengths == "ragged") == "birnn":
        builders["birnn-torch-lstm"] = birnn("layered", lstm="torch")  # what birnn's is worth
    if cfg.device == "cpu":
        builders["birnn-concurrent"] = birnn("layered", directions="concurrent")
    if fusable(cells, cfg.merge):
        builders["birnn-fused"] = birnn("fused")
    builders["layered-loop"] = seeded(lambda: LayeredLoop(input_size, cfg.hidden, cells, cfg.merge))
    if fusable(cells, cfg.merge):
        builders["torch-fused"] = seeded(
            lambda: TorchFused(input_size, cfg.hidden, cells[0], cfg.layers)
        )
    return builders


def other_gru(cfg: Config, input_size: int, steps: int) -> str:
    """`birnn-torch-gru` where `gru="auto"` runs birnn's GRU recurrence for `cfg` (on CPU, where
    its C kernel could be built or oneDNN's matmul is the faster), else `birnn-own-gru`."""
    cells = layer_cells(cfg.cell, cfg.layers)
    return OTHER_GRU[paths.auto_recurrence("gru", input_size, cfg.hidden, cells, cfg.merge,
                                           torch.device(cfg.device), steps,
                                           cfg.lengths == "ragged")]


def auto_choice(cfg: Config, input_size: int, steps: int) -> str:
    """The implementation `impl="auto"` runs for `cfg` (as BiRNN itself decides)."""
    cells = layer_cells(cfg.cell, cfg.layers)
    impl = paths.auto_impl(input_size, cfg.hidden, cells, cfg.merge, torch.device(cfg.device),
                           steps, cfg.lengths == "ragged")
    return f"birnn-{impl}"


def make_record(cfg: Config, impl: str, timing: dict, tokens: int, flops: int, peak) -> dict:
    """One result row: axes, impl, tokens/s, GFLOP/s and their fraction of the matmul peak."""
    train_gflops = 3 * flops / timing["train_s"] / 1e9
    infer_gflops = flops / timing["infer_s"] / 1e9
    return {
        "kind": "result",
        **asdict(cfg),
        "impl": impl,
        "tokens": tokens,
        "train_ms": timing["train_s"] * 1e3,
        "infer_ms": timing["infer_s"] * 1e3,
        "train_tok_s": tokens / timing["train_s"],
        "infer_tok_s": tokens / timing["infer_s"],
        "train_gflops": train_gflops,
        "infer_gflops": infer_gflops,
        "train_frac_matmul": train_gflops / peak if peak else None,
        "infer_frac_matmul": infer_gflops / peak if peak else None,
        "peak_mem_mb": timing["peak_mem_mb"],
    }


def add_ratios(records: list[dict], auto_impl: str) -> None:
    """Set birnn rows' speed ratios (>1 = birnn faster) to the baselines of the same config."""
    by_impl = {r["impl"]: r for r in records}
    for rec in records:
        if not rec["impl"].startswith("birnn-"):
            continue
        rec["auto"] = rec["impl"] == auto_impl
        for key, base in (("vs_layered_loop", "layered-loop"), ("vs_fused", "torch-fused")):
            ref = by_impl.get(base)
            rec[key] = rec["train_tok_s"] / ref["train_tok_s"] if ref else None
            rec[key + "_infer"] = rec["infer_tok_s"] / ref["infer_tok_s"] if ref else None


def run_config(cfg: Config, args, peaks: dict) -> list[dict]:
    """Measure every implementation that applies to `cfg`; return one record per impl."""
    device = torch.device(cfg.device)
    x, lengths = make_batch(cfg, args, device)
    tokens = int(lengths.sum())
    flops = tokens * forward_flops_per_token(
        layer_cells(cfg.cell, cfg.layers), cfg.merge, args.input, cfg.hidden
    )
    builders = candidates(cfg, args.input, args.seed, args.seq)
    models = {n: build().to(device) for n, build in builders.items()}
    timings = time_models(models, x, lengths, cfg.precision, args)
    peak = peaks[cfg.device][cfg.precision]
    records = [make_record(cfg, n, t, tokens, flops, peak) for n, t in timings.items()]
    add_ratios(records, auto_choice(cfg, args.input, args.seq))
    return records
