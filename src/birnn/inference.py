"""Labelling new text with a trained checkpoint, as a library: `Predictor`.

Batches are built by the data module of the checkpoint's task, set to the checkpoint's
vocabularies (`SequenceDataModule.encode` and `collate`), so prediction reads text exactly
as training did, and the labels come from the module's own `predict_step`. Confidence scores
(`scores=True`) come from `birnn.decoding` on the emissions, as the ONNX runner's do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from birnn.checkpoint import load_model
from birnn.data import ClassificationDataModule, SequenceDataModule, TaggingDataModule
from birnn.decoding import Lattice, decode
from birnn.errors import ConfigError
from birnn.export.runtime import BATCH_SIZE
from birnn.models.base import BiRNNModule

DATA_MODULES: dict[str, type[SequenceDataModule]] = {"tagging": TaggingDataModule,
                                                     "classification": ClassificationDataModule}
DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> torch.device:
    """`cpu`, `cuda`, or `auto` (CUDA when available)."""
    if device not in DEVICES:
        raise ConfigError(f"device: unknown {device!r} (valid: {', '.join(DEVICES)})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available (use device=cpu)")
    return torch.device(device)


def data_module_for(vocabularies: dict) -> SequenceDataModule:
    """A data module of the vocabularies' task that encodes with them (no data files)."""
    datamodule = DATA_MODULES[vocabularies["task"]]()
    datamodule.use_vocabularies(vocabularies)
    return datamodule


class Predictor:
    """A checkpoint's model and vocabularies, ready to label tokenised sentences or text.

    >>> predictor = Predictor.from_checkpoint("outputs/DATE/TIME/checkpoints/best.ckpt")
    >>> predictor.predict([["EU", "rejects", "German", "call"]])   # tagger
    [['B-ORG', 'O', 'B-MISC', 'O']]
    >>> predictor.predict_text(["EU rejects German call"])         # whitespace tokens
    [['B-ORG', 'O', 'B-MISC', 'O']]

    A sentence classifier returns `(label, probability)` per sentence instead. An empty
    sentence gives `[]` (tagger) or `(None, None)` (classifier).

    Args:
        model: a birnn module (e.g. `birnn.checkpoint.load_model(path)[0]`).
        vocabularies: the vocabularies it was trained with (a checkpoint's `vocabularies`).
        device: `cpu`, `cuda` or `auto`.
    """

    def __init__(self, model: BiRNNModule, vocabularies: dict, device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.task = vocabularies["task"]
        self.datamodule = data_module_for(vocabularies)
        self.labels = list(self.datamodule.labels.itos)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Predictor:
        """Load a checkpoint file or a run folder (its `checkpoints/best.ckpt`)."""
        return cls(*load_model(path), device)

    def batches(self, sentences: Sequence[Sequence[str]],
                batch_size: int = BATCH_SIZE) -> Iterator[dict[str, torch.Tensor]]:
        """The non-empty sentences as the data module batches them, longest first; each
        batch's `index` holds the sentences' positions in `sentences`."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        kept = [i for i, s in enumerate(sentences) if len(s)]
        data = self.datamodule.encode([list(sentences[i]) for i in kept])
        order = sorted(range(len(kept)), key=lambda j: -data.lengths[j])
        for start in range(0, len(order), batch_size):
            batch = self.datamodule.collate(data, order[start:start + batch_size])
            batch["index"] = torch.tensor([kept[j] for j in batch["index"].tolist()])
            yield {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = BATCH_SIZE,
                scores: bool = False) -> list:
        """Labels for each sentence, in order: a tag list (tagger) or `(label, probability)`
        (sentence classifier). With `scores`, a tagger gives `{"tags", "scores", "spans"}`
        per sentence: each tag's marginal probability and each span's probability
        (`birnn.decoding.Decoded.named`)."""
        if scores and self.task == "tagging":
            return self._scored(sentences, batch_size)
        empty = [] if self.task == "tagging" else (None, None)
        results: list = [empty] * len(sentences)
        for batch in self.batches(sentences, batch_size):
            out = self.model.predict_step(batch)
            if self.task == "tagging":
                for i, tags in zip(out["index"], out["tags"], strict=True):
                    results[i] = [self.labels[j] for j in tags]
            else:
                for i, j, p in zip(out["index"], out["label"], out["probability"], strict=True):
                    results[i] = (self.labels[j], p)
        return results

    def _scored(self, sentences: Sequence[Sequence[str]], batch_size: int) -> list:
        lattice = Lattice.of_tagger(self.model)  # the CRF's (constraints included) or none
        results: list = [{"tags": [], "scores": [], "spans": []}] * len(sentences)
        for batch in self.batches(sentences, batch_size):
            emissions = self.model(batch["words"], batch["lengths"],
                                   **self.model.features(batch))  # (B, T, labels)
            decoded = decode(emissions.double().cpu().numpy(), batch["lengths"].cpu().numpy(),
                             lattice, self.labels)
            for i, sentence in zip(batch["index"].tolist(), decoded, strict=True):
                results[i] = sentence.named(self.labels)
        return results

    def predict_text(self, lines: Sequence[str], batch_size: int = BATCH_SIZE) -> list:
        """`predict` for lines of text, one sentence per line, split at whitespace."""
        return self.predict([line.split() for line in lines], batch_size)
