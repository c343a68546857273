"""Token classification: word embeddings -> BiRNN -> linear head (softmax)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from birnn.encoder import BiRNN
from birnn.errors import ConfigError
from birnn.metrics.spans import SpanF1

IGNORE_INDEX = -100

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


class TokenTagger(L.LightningModule):
    """A BiRNN sequence tagger scored with span-level P/R/F1.

    Args:
        vocab_size: number of word ids (from the data module's vocabulary).
        labels: tag names indexed by id (IOB2), from the data module.
        encoder: keyword arguments of `birnn.BiRNN` (cell, hidden_size, num_layers, merge,
            dropout, impl); `input_size` is the embedding width.
        embedding_dim: word embedding width.
        dropout: dropout on the embeddings and on the encoder output before the head.
        optimizer: `name` (adam, adamw, sgd), `lr`, `weight_decay`, and `momentum` for sgd.
    """

    def __init__(
        self,
        vocab_size: int,
        labels: list[str],
        encoder: dict,
        embedding_dim: int = 100,
        dropout: float = 0.5,
        optimizer: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        optimizer = dict(optimizer or {"name": "adamw", "lr": 1e-3})
        if optimizer.get("name") not in OPTIMIZERS:
            raise ConfigError(
                f"model.optimizer.name: unknown {optimizer.get('name')!r} "
                f"(valid: {', '.join(OPTIMIZERS)})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {dropout!r}")
        self.optimizer_cfg = optimizer
        self.labels = list(labels)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.encoder = BiRNN(embedding_dim, **encoder)
        self.dropout = nn.Dropout(dropout)
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
        self.vocabularies: dict | None = None  # set by the recipe; saved in checkpoints
        self.test_predictions: dict[int, list[int]] = {}

    # ------------------------------------------------------------------------------ forward

    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        """Tag scores (B, T, num_labels) for word ids (B, T) with `lengths` (B,)."""
        x = self.dropout(self.embedding(words))  # (B, T, E)
        outputs, _ = self.encoder(x, lengths)  # (B, T, output_size), or a pair for `none`
        if isinstance(outputs, tuple):
            return sum(h(self.dropout(o)) for h, o in zip(self.head, outputs, strict=True))
        return self.head(self.dropout(outputs))

    def loss(self, logits: Tensor, tags: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE_INDEX)

    # ----------------------------------------------------------------------------- training

    def training_step(self, batch, batch_idx):
        logits = self(batch["words"], batch["lengths"])
        loss = self.loss(logits, batch["tags"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["lengths"]))
        return loss

    # --------------------------------------------------------------------------- evaluation

    def _evaluate(self, batch, metric: SpanF1, prefix: str) -> Tensor:
        logits = self(batch["words"], batch["lengths"])
        loss = self.loss(logits, batch["tags"])
        preds = logits.argmax(-1)
        metric.update(preds, batch["tags"], batch["lengths"])
        self.log(f"{prefix}/loss", loss, batch_size=len(batch["lengths"]))
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

    # ----------------------------------------------------------------------------- optimiser

    def configure_optimizers(self):
        cfg = dict(self.optimizer_cfg)
        cls = OPTIMIZERS[cfg.pop("name")]
        if cls is not torch.optim.SGD:
            cfg.pop("momentum", None)
        return cls(self.parameters(), **cfg)

    # ---------------------------------------------------------------------------- checkpoint

    def on_save_checkpoint(self, checkpoint):
        checkpoint["vocabularies"] = self.vocabularies

    def on_load_checkpoint(self, checkpoint):
        self.vocabularies = checkpoint.get("vocabularies")
