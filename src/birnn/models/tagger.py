"""Token classification: word embeddings -> BiRNN -> linear head -> softmax or a CRF."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from birnn.metrics.spans import SpanF1
from birnn.models.base import BiRNNModule
from birnn.models.crf import CRF, iob2_constraints
from birnn.tags import IGNORE_INDEX

FEATURES = ("chars", "casing")  # batch keys passed on to the model when present


class TokenTagger(BiRNNModule):
    """A BiRNN sequence tagger scored with span-level P/R/F1.

    Args (besides `BiRNNModule`'s):
        head: `softmax` (independent per-token cross-entropy, argmax decoding) or `crf`
            (a linear-chain CRF: sentence negative log-likelihood, Viterbi decoding).
        constrained: with `crf` and IOB2 labels, forbid invalid transitions (O -> I-X,
            B-X/I-X -> I-Y with Y != X, I-X first), so decoded tags are always valid IOB2.
    """

    def __init__(self, vocab_size: int, labels: list[str], encoder: dict,
                 head: str = "softmax", constrained: bool = True, **kwargs):
        super().__init__(vocab_size, labels, encoder, **kwargs)
        self.save_hyperparameters()
        num_labels = len(self.labels)
        self.crf = CRF(num_labels, iob2_constraints(self.labels) if constrained else None) \
            if head == "crf" else None
        if self.encoder.merges[-1] == "none":
            # an unmerged pair: one projection per direction, summed (a linear map of [f; b])
            self.head = nn.ModuleList(
                [nn.Linear(self.encoder.output_size, num_labels) for _ in range(2)]
            )
        else:
            self.head = nn.Linear(self.encoder.output_size, num_labels)
        self.val_spans = SpanF1(self.labels)
        self.test_spans = SpanF1(self.labels)

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None,
                casing: Tensor | None = None) -> Tensor:
        """Tag scores (B, T, num_labels) for word ids (B, T) with `lengths` (B,); the CRF's
        emission scores with head `crf`. `chars` (B, T, W) and `casing` (B, T) feed the
        character and casing features when the model has them."""
        # (B, T, output_size), or a pair for `none`
        outputs, _ = self.encode(words, lengths, chars, casing)
        if isinstance(outputs, tuple):
            return sum(h(self.dropout(o)) for h, o in zip(self.head, outputs, strict=True))
        return self.head(self.dropout(outputs))

    def decode(self, words: Tensor, lengths: Tensor, **features) -> list[list[int]]:
        """Predicted tag ids per sentence, trimmed to its length: Viterbi with the CRF,
        per-token argmax with softmax."""
        return self.decode_scores(self(words, lengths, **features), lengths)

    def decode_scores(self, scores: Tensor, lengths: Tensor) -> list[list[int]]:
        """Tag ids per sentence from tag scores (B, T, num_labels), e.g. emissions computed
        elsewhere (an exported graph): Viterbi with the CRF, argmax with softmax."""
        if self.crf is not None:
            return self.crf.viterbi(scores, lengths)
        return [p[:n] for p, n in zip(scores.argmax(-1).tolist(), lengths.tolist(), strict=True)]

    def loss(self, logits: Tensor, tags: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.crf is not None:
            if lengths is None:
                lengths = (tags != IGNORE_INDEX).sum(1)
            return self.crf.nll(logits, tags, lengths)
        return F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE_INDEX)

    @staticmethod
    def features(batch: dict) -> dict:
        return {k: batch[k] for k in FEATURES if k in batch}

    def training_step(self, batch, batch_idx):
        logits = self(batch["words"], batch["lengths"], **self.features(batch))
        loss = self.loss(logits, batch["tags"], batch["lengths"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["lengths"]))
        return loss

    def _evaluate(self, batch, metric: SpanF1, prefix: str) -> list[list[int]]:
        logits = self(batch["words"], batch["lengths"], **self.features(batch))
        self.log(f"{prefix}/loss", self.loss(logits, batch["tags"], batch["lengths"]),
                 batch_size=len(batch["lengths"]),
                 sync_dist=True)  # the mean over every process's batches
        preds = self.decode_scores(logits, batch["lengths"])
        padded = torch.zeros_like(batch["tags"])
        for i, p in enumerate(preds):
            padded[i, : len(p)] = torch.tensor(p, dtype=padded.dtype)
        metric.update(padded, batch["tags"], batch["lengths"])
        return preds

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_spans, "val")

    def on_validation_epoch_end(self):
        self._log_spans(self.val_spans, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_spans, "test")

    def predict_step(self, batch, batch_idx=0, dataloader_idx=0) -> dict:
        """`index`: the batch's sentences' positions in their split; `tags`: their tag ids,
        trimmed to each sentence's length."""
        return {"index": batch["index"].tolist(),
                "tags": self.decode(batch["words"], batch["lengths"], **self.features(batch))}

    def on_test_epoch_end(self):
        self._log_spans(self.test_spans, "test")

    def _log_spans(self, metric: SpanF1, prefix: str) -> None:
        scores = metric.compute()
        self.log(f"{prefix}/f1", scores.pop("f1"), prog_bar=True)
        self.log_dict({f"{prefix}/{k}": v for k, v in scores.items()})
        metric.reset()
