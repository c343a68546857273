"""The robustness report: a model's scores on a split as it is and under each perturbation of
`birnn.data.augment` (`python evaluate.py ckpt=... robustness=true`).

Each perturbed copy of the split is made with a seed derived from the split's own text, so
the same split gets the same copies on every run and machine, whatever the model: two models'
reports compare like with like.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from birnn.data.augment import KINDS, perturb, sentence_rng

CLEAN = "as is"


def split_seed(tokens: Sequence[Sequence[str]]) -> int:
    """A seed that depends on the split's text alone (its tokens, in order)."""
    digest = hashlib.sha256("\n".join(" ".join(s) for s in tokens).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def perturbed_split(kind: str, tokens: Sequence[Sequence[str]], seed: int, rate: float,
                    ocr_rate: float) -> list[list[str]]:
    """Every sentence of a split under perturbation `kind`; sentence i draws from
    `sentence_rng(seed, kind, i)`."""
    return [perturb(kind, s, sentence_rng(seed, kind, i), rate, ocr_rate)
            for i, s in enumerate(tokens)]


def describe_noise(rate: float, ocr_rate: float) -> dict[str, str]:
    """What each perturbation did, for the table."""
    return {
        CLEAN: "the split as read",
        "lower": "every token lower-cased",
        "upper": "every token upper-cased",
        "title": "every token title-cased",
        "typo": f"{100 * rate:g}% of characters: insertions, deletions, swaps, substitutions",
        "keyboard": f"{100 * rate:g}% of letters and digits: a neighbouring QWERTY key",
        "ocr": f"{100 * ocr_rate:g}% of OCR-confusable places (rn/m, cl/d, l/1, O/0, ...)",
    }


def write_report(scores: dict[str, dict[str, float]], key: str, out: Path, title: str,
                 rate: float, ocr_rate: float) -> tuple[Path, Path]:
    """`robustness.md` (a table: the score `key` per perturbation and its change from the
    split as is) and `robustness.png` (a bar chart of it) in `out`. `scores`: perturbation
    (`CLEAN` and `KINDS`) -> that run's scores."""
    clean = 100 * scores[CLEAN][key]
    what = describe_noise(rate, ocr_rate)
    lines = [f"# Robustness: {title}", "",
             f"{key} (%) on the split as read and on perturbed copies of it, each made with a "
             "seed derived from the split's text.", "",
             f"| input | {key} | change | perturbation |", "|---|---:|---:|---|"]
    for kind, result in scores.items():
        value = 100 * result[key]
        change = "" if kind == CLEAN else f"{value - clean:+.2f}"
        lines.append(f"| {kind} | {value:.2f} | {change} | {what.get(kind, '')} |")
    table = out / "robustness.md"
    table.write_text("\n".join(lines) + "\n")
    return table, _chart(scores, key, out / "robustness.png", title)


def _chart(scores: dict, key: str, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    values = [100 * scores[n][key] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2), dpi=100)
    bars = ax.barh(names[::-1], values[::-1], color=["gray" if n == CLEAN else "tab:blue"
                                                     for n in names[::-1]])
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.set(xlim=(0, 105), xlabel=f"{key} (%)", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["CLEAN", "KINDS", "describe_noise", "perturbed_split", "split_seed", "write_report"]
