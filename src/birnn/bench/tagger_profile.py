"""`--profile`: where the time of one end-to-end tagger training step goes, per phase."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from birnn import BiRNN
from birnn.bench.grid import Config, layer_cells, make_batch
from birnn.bench.timing import autocast, sync

PHASES = ("embedding", "encoder forward", "head + loss", "backward", "optimizer step")


class Tagger(nn.Module):
    """Embedding -> BiRNN -> Linear: the end-to-end model the profile times."""

    def __init__(self, vocab: int, cfg: Config, input_size: int, tags: int):
        super().__init__()
        cells = layer_cells(cfg.cell, cfg.layers)
        self.embed = nn.Embedding(vocab, input_size, padding_idx=0)
        self.encoder = BiRNN(input_size, cfg.hidden, cells, cfg.layers, cfg.merge)
        self.head = nn.Linear(self.encoder.output_size, tags)


def profile_step(cfg: Config, args) -> dict[str, float]:
    """Median milliseconds per phase of one tagger training step (manual timers + sync)."""
    device = torch.device(cfg.device)
    torch.manual_seed(args.seed)
    model = Tagger(args.vocab, cfg, args.input, args.tags).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(1, args.vocab, (args.batch, args.seq), generator=gen)
    gold = torch.randint(0, args.tags, (args.batch, args.seq), generator=gen)
    _, lengths = make_batch(cfg, args, device)
    pad = torch.arange(args.seq)[None] >= lengths[:, None]  # (B, T)
    ids, gold = ids.masked_fill(pad, 0).to(device), gold.masked_fill(pad, -100).to(device)
    samples: dict[str, list[float]] = {p: [] for p in PHASES}

    for step in range(args.warmup + args.steps):
        marks = _tagger_step(model, opt, ids, gold, lengths, cfg.precision)
        if step >= args.warmup:
            for phase, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True):
                samples[phase].append((end - start) * 1e3)
    return {p: statistics.median(v) for p, v in samples.items()}


def _tagger_step(model: Tagger, opt, ids, gold, lengths, precision: str) -> list[float]:
    """One training step; the perf_counter time at its start and after each phase."""
    device = ids.device
    marks = [time.perf_counter()]

    def mark() -> None:
        sync(device)
        marks.append(time.perf_counter())

    opt.zero_grad(set_to_none=True)
    with autocast(device, precision):
        emb = model.embed(ids)
        mark()
        out, _ = model.encoder(emb, lengths)
        mark()
        logits = model.head(out)
        loss = F.cross_entropy(logits.float().flatten(0, 1), gold.flatten())
        mark()
    loss.backward()
    mark()
    opt.step()
    mark()
    return marks


def profile_records(cfgs: list[Config], args) -> list[dict]:
    """One tagger profile per (device, precision, cell), at the first merge/layers/hidden."""
    seen, records = set(), []
    for cfg in cfgs:
        key = (cfg.device, cfg.precision, cfg.cell)
        if key in seen:
            continue
        seen.add(key)
        ms = profile_step(cfg, args)
        records.append({"kind": "profile", **asdict(cfg), "phases_ms": ms})
    return records


def profile_markdown(records: list[dict]) -> str:
    """One table per profile: milliseconds and share of the step per phase."""
    lines = []
    for rec in records:
        total = sum(rec["phases_ms"].values())
        cfg = Config(**{k: rec[k] for k in Config.__dataclass_fields__})
        lines += [f"Tagger training step, {cfg.label()} (median ms per phase):", ""]
        lines += ["| phase | ms | % of step |", "|---|---:|---:|"]
        for phase, ms in rec["phases_ms"].items():
            lines.append(f"| {phase} | {ms:.2f} | {100 * ms / total:.1f}% |")
        lines += [f"| **total** | {total:.2f} | 100% |", ""]
    return "\n".join(lines)
