"""What every birnn model shares: word embeddings (with optional character and casing features
and word dropout), the BiRNN encoder, the optimiser, and the vocabularies carried in
checkpoints."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from birnn.data.vocab import CASING
from birnn.encoder import BiRNN
from birnn.errors import ConfigError

UNK_ID = 1  # the word vocabulary's <unk> (PAD 0, UNK 1)
CHAR_KINDS = ("none", "cnn", "birnn")


class CharEncoder(nn.Module):
    """Character ids (B, T, W) -> one vector per word (B, T, output_size).

    `cnn`: a convolution over each word's characters, max-pooled (words cut to `max_length`
    characters); `birnn`: a BiLSTM over the characters, the two final states concatenated.
    The character table is sized by `set_num_chars` once the vocabulary is known.
    """

    def __init__(self, kind: str, dim: int = 30, filters: int = 50, kernel_size: int = 3,
                 hidden_size: int = 25, max_length: int = 20, num_chars: int | None = None):
        super().__init__()
        self.kind, self.dim, self.max_length = kind, dim, max_length
        self.embedding: nn.Embedding | None = None
        if kind == "cnn":
            self.conv = nn.Conv1d(dim, filters, kernel_size, padding=kernel_size // 2)
            self.output_size = filters
        else:
            self.rnn = nn.LSTM(dim, hidden_size, batch_first=True, bidirectional=True)
            self.output_size = 2 * hidden_size
        if num_chars is not None:
            self.set_num_chars(num_chars)

    def set_num_chars(self, num_chars: int) -> None:
        self.embedding = nn.Embedding(num_chars, self.dim, padding_idx=0)

    def forward(self, chars: Tensor) -> Tensor:
        if self.embedding is None:
            raise ConfigError("model.char: the character vocabulary is unknown (data.chars)")
        if self.kind == "cnn" and self.max_length:
            chars = chars[:, :, : self.max_length]
        batch, steps, width = chars.shape
        flat = chars.reshape(batch * steps, width)
        word_lengths = (flat > 0).sum(1)  # (N,)
        out = flat.new_zeros(batch * steps, self.output_size, dtype=torch.float)
        real = word_lengths > 0
        if not bool(real.any()):
            return out.view(batch, steps, -1).to(self.embedding.weight.dtype)
        x = self.embedding(flat[real])  # (n, W, dim)
        if self.kind == "cnn":
            h = self.conv(x.transpose(1, 2))  # (n, filters, W)
            pad = (flat[real] == 0).unsqueeze(1)
            pooled = h.masked_fill(pad, float("-inf")).max(-1).values
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, word_lengths[real].cpu(),
                                                       batch_first=True, enforce_sorted=False)
            _, (h, _) = self.rnn(packed)  # h: (2, n, hidden)
            pooled = torch.cat([h[0], h[1]], -1)
        out = out.to(pooled.dtype).index_put((real.nonzero().squeeze(1),), pooled)
        return out.view(batch, steps, -1)

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
        char: character features: `kind` (none, cnn, birnn), `dim` (character embedding
            width), `filters`, `kernel_size`, `max_length` (cnn: characters kept per word),
            `hidden_size` (birnn, per direction). Needs `chars` (B, T, W) in batches.
        casing: add an embedding (width `casing_dim`) of each word's shape (lower, upper,
            title, has digit, other); needs `casing` (B, T) in batches.
        word_dropout: in training only, replace each word id by <unk> with this probability.
        num_chars: size of the character vocabulary; set from the vocabularies (`char`).
    """

    def __init__(
        self,
        vocab_size: int,
        labels: list[str],
        encoder: dict,
        embedding_dim: int = 100,
        dropout: float = 0.5,
        optimizer: dict | None = None,
        char: dict | None = None,
        casing: bool = False,
        casing_dim: int = 8,
        word_dropout: float = 0.0,
        num_chars: int | None = None,
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
        if not (isinstance(word_dropout, int | float) and 0.0 <= word_dropout < 1.0):
            raise ConfigError(f"model.word_dropout: must be in [0, 1), got {word_dropout!r}")
        char = dict(char or {})
        kind = char.pop("kind", "none") or "none"
        if kind not in CHAR_KINDS:
            raise ConfigError(f"model.char.kind: unknown {kind!r} (valid: {', '.join(CHAR_KINDS)})")
        self.optimizer_cfg = optimizer
        self.labels = list(labels)
        self.word_dropout = float(word_dropout)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        width = embedding_dim
        self.char_encoder: CharEncoder | None = None
        if kind != "none":
            try:
                self.char_encoder = CharEncoder(kind, num_chars=num_chars, **char)
            except TypeError as e:
                raise ConfigError(f"model.char: {e}") from None
            width += self.char_encoder.output_size
        self.casing_embedding = nn.Embedding(len(CASING), casing_dim, padding_idx=0) \
            if casing else None
        width += casing_dim if casing else 0
        self.encoder = BiRNN(width, **encoder)
        self.dropout = nn.Dropout(dropout)
        self.vocabularies: dict | None = None  # set by the recipe; saved in checkpoints

    @property
    def vocabularies(self) -> dict | None:
        return self._vocabularies

    @vocabularies.setter
    def vocabularies(self, value: dict | None) -> None:
        # the recipe sets the data's vocabularies before training: size the character table
        # from them, and keep its size in the hyper-parameters so checkpoints rebuild it
        self._vocabularies = value
        enc = getattr(self, "char_encoder", None)
        if enc is None or value is None or enc.embedding is not None:
            return
        if not value.get("chars"):
            raise ConfigError("model.char.kind needs character ids: set data.chars=true")
        enc.set_num_chars(len(value["chars"]["itos"]))
        if hasattr(self, "_hparams"):
            self.hparams["num_chars"] = len(value["chars"]["itos"])

    def embed(self, words: Tensor, chars: Tensor | None = None,
              casing: Tensor | None = None) -> Tensor:
        """Word ids (B, T) (and the features the model uses) -> input vectors (B, T, width)."""
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(words.shape, device=words.device) < self.word_dropout) \
                & (words != 0)
            words = words.masked_fill(drop, UNK_ID)
        parts = [self.embedding(words)]
        if self.char_encoder is not None:
            if chars is None:
                raise ConfigError("model.char.kind needs `chars` in batches (data.chars=true)")
            parts.append(self.char_encoder(chars.to(words.device)).to(parts[0].dtype))
        if self.casing_embedding is not None:
            if casing is None:
                raise ConfigError("model.casing needs `casing` in batches (tagging data)")
            parts.append(self.casing_embedding(casing.to(words.device)))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def encode(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None,
               casing: Tensor | None = None):
        """Word ids (B, T) -> the encoder's (outputs, final); see `BiRNN.forward`."""
        return self.encoder(self.dropout(self.embed(words, chars, casing)), lengths)

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
