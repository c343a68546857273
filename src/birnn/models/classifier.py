"""Sentence classification: word embeddings -> BiRNN -> pooling -> linear head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from birnn.models.base import BiRNNModule


class SentenceClassifier(BiRNNModule):
    """A BiRNN sentence classifier scored with accuracy and macro-F1.

    Args (besides `BiRNNModule`'s):
        pooling: how the token outputs become one vector: `final` (the encoder's merged final
            states: forward at the last real token, backward at the first), `mean` or `max`
            over real tokens, or `attention` (a learned query, softmax over real tokens).
            With merge `none`, the forward and backward outputs are concatenated first.
    """

    def __init__(self, vocab_size: int, labels: list[str], encoder: dict,
                 pooling: str = "final", **kwargs):
        super().__init__(vocab_size, labels, encoder, **kwargs)
        self.save_hyperparameters()
        self.pooling = pooling
        width = self.encoder.output_size * (2 if self.encoder.merges[-1] == "none" else 1)
        if pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(width, width), nn.Tanh(),
                                           nn.Linear(width, 1, bias=False))
        self.head = nn.Linear(width, len(self.labels))
        num_classes = len(self.labels)
        metrics = MetricCollection({
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
        })
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def pool(self, outputs: Tensor, final: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, W) outputs -> (B, W)."""
        if self.pooling == "final":
            return final
        mask = torch.arange(outputs.size(1), device=outputs.device)[None, :] \
            < lengths.to(outputs.device)[:, None]  # (B, T), True at real tokens
        if self.pooling == "mean":
            total = (outputs * mask.unsqueeze(-1)).sum(1)
            return total / lengths.to(outputs.device, outputs.dtype).unsqueeze(-1)
        if self.pooling == "max":
            return outputs.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
        scores = self.attention(outputs).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        return torch.einsum("bt,btw->bw", scores.softmax(-1), outputs)

    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        """Class scores (B, num_labels) for word ids (B, T) with `lengths` (B,)."""
        outputs, final = self.encode(words, lengths)
        if isinstance(outputs, tuple):  # merge `none`: use both directions side by side
            outputs, final = torch.cat(outputs, -1), torch.cat(final, -1)
        return self.head(self.dropout(self.pool(outputs, final, lengths)))

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch["words"], batch["lengths"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["lengths"]))
        return loss

    def _evaluate(self, batch, metrics: MetricCollection, prefix: str) -> None:
        logits = self(batch["words"], batch["lengths"])
        self.log(f"{prefix}/loss", F.cross_entropy(logits, batch["label"]),
                 batch_size=len(batch["lengths"]),
                 sync_dist=True)  # the mean over every process's batches
        metrics.update(logits, batch["label"])

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self):
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics, "test")

    def predict_step(self, batch, batch_idx=0, dataloader_idx=0) -> dict:
        """`index`: the batch's sentences' positions in their split; `label`: the most
        probable label id of each; `probability`: its softmax probability."""
        scores = self(batch["words"], batch["lengths"]).float()  # (B, labels)
        probability, label = scores.softmax(-1).max(-1)  # (B,), (B,)
        return {"index": batch["index"].tolist(), "label": label.tolist(),
                "probability": probability.tolist()}

    def on_test_epoch_end(self):
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
