"""Calibration: does a confidence of 0.8 mean right 80% of the time?

Expected calibration error (Guo et al. 2017) over equal-width confidence bins, the reliability
chart that shows it, and the confidences of a model on a data split: per token for taggers
(the marginal of the predicted label, `birnn.decoding`), per sentence for classifiers (the
softmax probability of the predicted class).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BINS = 10


@dataclass
class Reliability:
    """Per bin (equal width over [0, 1]): how many predictions, their mean confidence and
    their accuracy (NaN for an empty bin); `ece` their weighted gap."""

    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (bins,)
    confidence: np.ndarray  # (bins,)
    accuracy: np.ndarray  # (bins,)
    ece: float


def reliability(confidences, correct, bins: int = BINS) -> Reliability:
    """Bin predictions by confidence and compare each bin's accuracy with its confidence.

    Args:
        confidences: (N,) the probability each prediction was given, in [0, 1].
        correct: (N,) whether each prediction was right.
        bins: number of equal-width bins; bin k holds confidences in (k/bins, (k+1)/bins]
            (the first also holds 0).

    Returns:
        The per-bin statistics and the expected calibration error
        sum_k (n_k / N) |accuracy_k - confidence_k| (0 for no predictions).
    """
    confidences = np.asarray(confidences, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if confidences.shape != correct.shape:
        raise ValueError(f"confidences and correct differ in size: {confidences.size} "
                         f"and {correct.size}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # (k/bins, (k+1)/bins] -> k; a confidence of 0 goes to the first bin
    which = np.clip(np.ceil(confidences * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, confidences, minlength=bins) / counts
        accuracy = np.bincount(which, correct, minlength=bins) / counts
    total = counts.sum()
    gaps = np.where(counts > 0, np.abs(accuracy - confidence), 0.0)
    ece = float((counts * gaps).sum() / total) if total else 0.0
    return Reliability(edges, counts, confidence, accuracy, ece)


def reliability_chart(stats: Reliability, path: str | Path, title: str = "") -> Path:
    """Write a reliability diagram (accuracy per confidence bin against the diagonal) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    width = np.diff(stats.edges)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    filled = stats.counts > 0
    ax.bar(stats.edges[:-1][filled], stats.accuracy[filled], width=width[filled],
           align="edge", edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"{title} ECE {100 * stats.ece:.2f}%".strip())
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def model_confidences(model, batches: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Confidences and correctness of a model's predictions on labelled batches (as the data
    modules collate them): per token for a `TokenTagger`, per sentence for a classifier.

    Returns:
        (N,) confidences and (N,) booleans, right or not.
    """
    import torch

    from birnn.decoding import Lattice, decode

    confidences, correct = [], []
    tagger = hasattr(model, "crf")
    lattice = Lattice.of_tagger(model) if tagger else None
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches:
            lengths = batch["lengths"]
            words = batch["words"].to(device)
            if not tagger:
                probs = model(words, lengths).float().softmax(-1).cpu()  # (B, classes)
                best, predicted = probs.max(-1)
                confidences.append(best.numpy())
                correct.append((predicted == batch["label"]).numpy())
                continue
            features = {k: v.to(device) for k, v in model.features(batch).items()}
            emissions = model(words, lengths, **features).double().cpu().numpy()
            gold = batch["tags"].tolist()
            for sentence, tags in zip(decode(emissions, lengths.numpy(), lattice,
                                             model.labels), gold, strict=True):
                confidences.append(np.asarray(sentence.token_scores))
                correct.append(np.asarray(sentence.tags) == np.asarray(tags[:len(sentence.tags)]))
    if not confidences:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate(confidences), np.concatenate(correct)


def calibration(model, batches: Iterable[dict], chart: str | Path | None = None,
                bins: int = BINS) -> float:
    """The expected calibration error of `model` on `batches` (`model_confidences`), with a
    reliability chart written to `chart` when given."""
    stats = reliability(*model_confidences(model, batches), bins=bins)
    if chart is not None:
        reliability_chart(stats, chart)
    return stats.ece
