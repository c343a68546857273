"""What every birnn model shares: word embeddings, the BiRNN encoder, the optimiser, and the
vocabularies carried in checkpoints."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from birnn.encoder import BiRNN
from birnn.errors import ConfigError

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


class BiRNNModule(L.LightningModule):
    """Embeddings -> BiRNN; subclasses add the head, the loss and the metrics.

    Args:
        vocab_size: number of word ids (from the data module's vocabulary).
        labels: label names indexed by id, from the data module.
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
        optimizer = dict(optimizer or {"name": "adamw", "lr": 1e-3})
        if optimizer.get("name") not in OPTIMIZERS:
            raise ConfigError(
                f"model.optimizer.name: unknown {optimizer.get('name')!r} "
                f"(valid: {', '.join(OPTIMIZERS)})"
            )
        if not (isinstance(dropout, int | float) and 0.0 <= dropout < 1.0):
            raise ConfigError(f"model.dropout: must be in [0, 1), got {dropout!r}")
        self.optimizer_cfg = optimizer
        self.labels = list(labels)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.encoder = BiRNN(embedding_dim, **encoder)
        self.dropout = nn.Dropout(dropout)
        self.vocabularies: dict | None = None  # set by the recipe; saved in checkpoints

    def encode(self, words: Tensor, lengths: Tensor):
        """Word ids (B, T) -> the encoder's (outputs, final); see `BiRNN.forward`."""
        return self.encoder(self.dropout(self.embedding(words)), lengths)

    def on_before_optimizer_step(self, optimizer):
        # learning rate and gradient norm (before clipping), every `log_every_n_steps` steps
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:
            norms = [p.grad.detach().norm() for p in self.parameters() if p.grad is not None]
            if norms:
                self.log("train/grad_norm", torch.stack(norms).norm())
            self.log("train/lr", optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        cfg = dict(self.optimizer_cfg)
        cls = OPTIMIZERS[cfg.pop("name")]
        if cls is not torch.optim.SGD:
            cfg.pop("momentum", None)
        return cls(self.parameters(), **cfg)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["vocabularies"] = self.vocabularies

    def on_load_checkpoint(self, checkpoint):
        self.vocabularies = checkpoint.get("vocabularies")
