"""The grid of configurations, its presets, the input batch and the FLOP count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from birnn.hardware import cpu_supports_bf16

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
GRID_CELLS = ("lstm", "gru", "mixed")
GRID_MERGES = ("concat", "sum", "mul", "ave")
PRECISIONS = ("fp32", "bf16")
FULL_GRID = {
    "cells": "lstm,gru,mixed",
    "merges": "concat,sum,mul,ave",
    "layers": "1,2,3",
    "hidden": "128,256,512",
    "precisions": "fp32,bf16",
    "steps": 10,
    "warmup": 3,
}
QUICK_GRID = {
    "cells": "lstm,gru",
    "merges": "concat,sum,mul,ave",
    "layers": "2",
    "hidden": "256",
    "precisions": "fp32,bf16",
    "steps": 7,
    "warmup": 2,
}
# the order of a configuration's rows in the tables
IMPL_ORDER = ("birnn-layered", "birnn-packed", "birnn-torch-gru", "birnn-own-gru",
              "birnn-torch-lstm", "birnn-concurrent", "birnn-fused", "layered-loop",
              "torch-fused", "keras")
RAGGED_MIN = 0.8  # ragged batches: lengths uniform in [RAGGED_MIN * T, T]


@dataclass(frozen=True)
class Config:
    """One point of the grid."""

    cell: str
    merge: str
    layers: int
    hidden: int
    device: str
    precision: str
    lengths: str  # "full" or "ragged"

    def label(self) -> str:
        return (
            f"{self.cell} {self.merge} L={self.layers} H={self.hidden} {self.device} "
            f"{self.precision} {self.lengths}"
        )


def layer_cells(cell: str, layers: int) -> list[str]:
    """The per-layer cell list: `mixed` alternates gru, lstm, gru, ... ."""
    if cell == "mixed":
        return ["gru" if k % 2 == 0 else "lstm" for k in range(layers)]
    return [cell] * layers


def fusable(cells: list[str], merge: str) -> bool:
    """Whether one multi-layer `nn.LSTM/GRU` computes the stack (one cell type, concat)."""
    return len(set(cells)) == 1 and merge == "concat"


def forward_flops_per_token(cells: list[str], merge: str, input_size: int, hidden: int) -> int:
    """Matmul FLOPs of one forward pass per token: sum over layers and both directions."""
    total, width = 0, input_size
    for cell in cells:
        total += 2 * (2 * GATES[cell] * hidden * (width + hidden))
        width = 2 * hidden if merge == "concat" else hidden
    return total


def runs_here(device: str, precision: str) -> bool:
    """Whether `precision` runs on `device` on this machine: bf16 on CPU needs oneDNN's bf16
    kernels (`birnn.hardware`)."""
    return not (device == "cpu" and precision == "bf16" and not cpu_supports_bf16())


def grid(args) -> list[Config]:
    """Every configuration the options select, in the order they are measured."""
    lengths = ["full", "ragged"] if args.ragged else ["full"]
    return [
        Config(cell, merge, layers, hidden, device, prec, lens)
        for device in args.devices
        for prec in args.precisions
        if runs_here(device, prec)
        for cell in args.cells
        for layers in args.layers
        for hidden in args.hidden
        for merge in args.merges
        for lens in lengths
    ]


def sort_key(record: dict) -> tuple:
    """Table order: device, precision, cell, layers, hidden, merge, lengths, implementation."""
    return (
        record["device"],
        PRECISIONS.index(record["precision"]),
        GRID_CELLS.index(record["cell"]),
        record["layers"],
        record["hidden"],
        GRID_MERGES.index(record["merge"]),
        record["lengths"],
        IMPL_ORDER.index(record["impl"]),
    )


def make_batch(cfg: Config, args, device: torch.device) -> tuple[Tensor, Tensor]:
    """The seeded input batch and its lengths (all T; for ragged, random in [0.8 T, T], as in
    a batch of length-bucketed sentences)."""
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, args.seq, args.input, generator=gen).to(device)  # (B, T, E)
    if cfg.lengths == "ragged":
        shortest = max(1, math.ceil(RAGGED_MIN * args.seq))
        lengths = torch.randint(shortest, args.seq + 1, (args.batch,), generator=gen)
        lengths[0] = args.seq  # the longest sequence fills the padded width
    else:
        lengths = torch.full((args.batch,), args.seq, dtype=torch.int64)
    return x, lengths
