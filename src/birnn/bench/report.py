"""The outputs: results.json (header + records), results.md (tables) and results.png (chart)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from birnn.bench.keras_peer import keras_markdown
from birnn.bench.tagger_profile import profile_markdown


def _probe_text(probe: dict) -> str:
    return f"{probe['threads']} threads {probe['ms']:.2f} vs 1 thread {probe['ms_1_thread']:.2f}"


def _ratio(value) -> str:
    return "" if value is None else f"{value:.2f}x"


def impl_label(rec: dict) -> str:
    """The implementation's name, marked when it is the one `impl="auto"` runs."""
    return rec["impl"] + (" (auto)" if rec.get("auto") else "")


def markdown_table(header: dict, results: list[dict]) -> str:
    """One row per configuration and implementation, under a line describing the run."""
    matmul = header["matmul_gflops"]
    onednn = header.get("onednn_matmul_gflops", {})
    peaks = ", ".join(
        f"{d} {p} {g:,.0f}" + (f" (oneDNN {onednn[p]:,.0f})" if d == "cpu" and p in onednn else "")
        for d, by in matmul.items() for p, g in by.items())
    lines = [
        f"B={header['batch']} T={header['seq']} E={header['input']}, "
        f"threads: {header['threads']}, torch {header['torch']}, {header['date']}. "
        f"Matmul {header['matmul_size']}^3 GFLOP/s: {peaks}. "
        f"Ratios are birnn's tokens/s over the baseline's (>1 = birnn faster), training "
        f"(inference). Load average before/after: {header['loadavg_before']} / "
        f"{header['loadavg_after']}. Contention probe (small LSTM forward, ms): before "
        f"{_probe_text(header['probe_before'])}, after {_probe_text(header['probe_after'])}. "
        f"birnn's GRU recurrence on CPU ran its matmuls through "
        f"{header.get('gru_matmul', 'oneDNN')} and its element-wise steps as "
        f"{header.get('gru_steps', 'PyTorch ops')}; its LSTM recurrence as "
        f"{header.get('lstm_loop', 'none (PyTorch LSTM runs)')}.",
        "",
        "| cell | merge | L | H | device | prec | lengths | impl | train tok/s | infer tok/s "
        "| train GFLOP/s | % matmul | peak MB | vs layered loop | vs fused |",
        "|---|---|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        loop = _ratio(r.get("vs_layered_loop"))
        fused = _ratio(r.get("vs_fused"))
        if loop:
            loop += f" ({_ratio(r['vs_layered_loop_infer'])})"
        if fused:
            fused += f" ({_ratio(r['vs_fused_infer'])})"
        frac = r["train_frac_matmul"]
        mem = "" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        lines.append(
            f"| {r['cell']} | {r['merge']} | {r['layers']} | {r['hidden']} | {r['device']} "
            f"| {r['precision']} | {r['lengths']} | {impl_label(r)} | {r['train_tok_s']:,.0f} "
            f"| {r['infer_tok_s']:,.0f} | {r['train_gflops']:.1f} "
            f"| {'' if frac is None else f'{100 * frac:.1f}%'} | {mem} | {loop} | {fused} |"
        )
    return "\n".join(lines) + "\n"


def _geomean_tok_s(rows: list[dict], cell: str, keep: Callable[[dict], bool]) -> float:
    """Geometric mean of the training tok/s of `rows` of `cell` that `keep` selects."""
    values = [r["train_tok_s"] for r in rows if r["cell"] == cell and keep(r)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def plot(results: list[dict], path: Path) -> None:
    """Grouped bars of training tok/s (impl=auto) per merge, one group per cell; one panel per
    device (and precision). A black tick marks the layered-loop baseline of the same bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r["impl"] != "keras"]
    devices = list(dict.fromkeys(r["device"] for r in results))
    precs = list(dict.fromkeys(r["precision"] for r in results))
    cells = list(dict.fromkeys(r["cell"] for r in results))
    merges = list(dict.fromkeys(r["merge"] for r in results))
    fig, axes = plt.subplots(
        len(devices),
        len(precs),
        figsize=(4.5 * len(precs) + 1, 3.6 * len(devices)),
        squeeze=False,
    )
    width = 0.8 / len(merges)
    for (i, device), (j, prec) in ((a, b) for a in enumerate(devices) for b in enumerate(precs)):
        ax = axes[i][j]
        for m, merge in enumerate(merges):
            xs = [c + (m - (len(merges) - 1) / 2) * width for c in range(len(cells))]
            rows = [
                r
                for r in results
                if (r["device"], r["precision"], r["merge"]) == (device, prec, merge)
            ]
            ours = [_geomean_tok_s(rows, c, lambda r: bool(r.get("auto"))) for c in cells]
            loops = [_geomean_tok_s(rows, c, lambda r: r["impl"] == "layered-loop") for c in cells]
            ax.bar(xs, ours, width, label=merge)
            label = "layered loop" if m == 0 else None
            ax.scatter(xs, loops, marker="_", s=200, color="black", zorder=3, label=label)
        ax.set_xticks(range(len(cells)), cells)
        ax.set_title(f"{device} {prec}")
        ax.set_ylabel("training tokens/s")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize="small")
    fig.suptitle(
        "birnn (impl=auto) training throughput\n"
        "geometric mean over the layers, hidden sizes and lengths measured"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, header: dict, results: list[dict], profiles: list[dict]) -> str:
    """Write results.{json,md,png} into `out`; return the main table (for stdout)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([header, *results, *profiles], indent=1) + "\n")
    table = markdown_table(header, results)
    text = "# Encoder benchmark\n\n" + table
    peer = keras_markdown(results)
    if peer:
        text += ("\n## Against Keras\n\nTraining tokens/s of birnn (what impl=auto runs, and "
                 "with `directions=concurrent` on CPU) over Keras `Bidirectional` stacks "
                 "(fp32), same shapes, full-length batches, same run.\n\n" + peer)
    if profiles:
        text += "\n## Tagger training step breakdown\n\n" + profile_markdown(profiles)
    (out / "results.md").write_text(text)
    plot(results, out / "results.png")
    return table
