"""Token classification: word embeddings -> BiRNN -> linear head (softmax)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from birnn.metrics.spans import SpanF1
from birnn.models.base import BiRNNModule

IGNORE_INDEX = -100


class TokenTagger(BiRNNModule):
    """A BiRNN sequence tagger scored with span-level P/R/F1 (see `BiRNNModule` for args)."""

    def __init__(self, vocab_size: int, labels: list[str], encoder: dict, **kwargs):
        super().__init__(vocab_size, labels, encoder, **kwargs)
        self.save_hyperparameters()
        num_labels = len(self.labels)
        if self.encoder.merges[-1] == "none":
            # an unmerged pair: one projection per direction, summed (a linear map of [f; b])
            self.head = nn.ModuleList(
                [nn.Linear(self.encoder.output_size, num_labels) for _ in range(2)]
            )
        else:
            self.head = nn.Linear(self.encoder.output_size, num_labels)
        self.val_spans = SpanF1(self.labels)
        self.test_spans = SpanF1(self.labels)
        self.test_predictions: dict[int, list[int]] = {}

    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        """Tag scores (B, T, num_labels) for word ids (B, T) with `lengths` (B,)."""
        outputs, _ = self.encode(words, lengths)  # (B, T, output_size), or a pair for `none`
        if isinstance(outputs, tuple):
            return sum(h(self.dropout(o)) for h, o in zip(self.head, outputs, strict=True))
        return self.head(self.dropout(outputs))

    def loss(self, logits: Tensor, tags: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE_INDEX)

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["words"], batch["lengths"]), batch["tags"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["lengths"]))
        return loss

    def _evaluate(self, batch, metric: SpanF1, prefix: str) -> Tensor:
        logits = self(batch["words"], batch["lengths"])
        self.log(f"{prefix}/loss", self.loss(logits, batch["tags"]),
                 batch_size=len(batch["lengths"]))
        preds = logits.argmax(-1)
        metric.update(preds, batch["tags"], batch["lengths"])
        return preds

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_spans, "val")

    def on_validation_epoch_end(self):
        self._log_spans(self.val_spans, "val")

    def on_test_epoch_start(self):
        self.test_predictions = {}

    def test_step(self, batch, batch_idx):
        preds = self._evaluate(batch, self.test_spans, "test")
        for i, n, p in zip(batch["index"].tolist(), batch["lengths"].tolist(), preds.tolist(),
                           strict=True):
            self.test_predictions[i] = p[:n]

    def on_test_epoch_end(self):
        self._log_spans(self.test_spans, "test")

    def _log_spans(self, metric: SpanF1, prefix: str) -> None:
        scores = metric.compute()
        self.log(f"{prefix}/f1", scores.pop("f1"), prog_bar=True)
        self.log_dict({f"{prefix}/{k}": v for k, v in scores.items()})
        metric.reset()
