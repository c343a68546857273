"""What every birnn model shares: word embeddings (with optional character and casing features
and word dropout), the BiRNN encoder, the optimiser, and the vocabularies carried in
checkpoints."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from birnn.config.optim import build_optimizer, build_scheduler
from birnn.encoder import BiRNN
from birnn.encoder.dropout import SequenceDropout
from birnn.errors import ConfigError
from birnn.models.pretrained import init_embedding
from birnn.tags import CASING

UNK_ID = 1  # the word vocabulary's <unk> (PAD 0, UNK 1)


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


class BiRNNModule(L.LightningModule):
    """Embeddings -> BiRNN; subclasses add the head, the loss and the metrics.

    Args:
        vocab_size: number of word ids (from the data module's vocabulary).
        labels: label names indexed by id, from the data module.
        encoder: keyword arguments of `birnn.BiRNN` (cell, hidden_size, num_layers, merge,
            dropout, impl); `input_size` is the embedding width.
        embedding_dim: word embedding width.
        dropout: dropout on the embeddings and on the encoder output before the head.
        optimizer: a `_partial_` config of a `torch.optim` class (``{_target_:
            torch.optim.AdamW, _partial_: true, lr: 1e-3}``), completed with the parameters
            by `configure_optimizers`; `fused` defaults to true where the class has it. The
            name-based form of older checkpoints (``{name: adamw, lr: ...}``) still loads.
        char: character features: `kind` (none, cnn, birnn), `dim` (character embedding
            width), `filters`, `kernel_size`, `max_length` (cnn: characters kept per word),
            `hidden_size` (birnn, per direction). Needs `chars` (B, T, W) in batches.
        casing: add an embedding (width `casing_dim`) of each word's shape (lower, upper,
            title, has digit, other); needs `casing` (B, T) in batches.
        word_dropout: in training only, replace each word id by <unk> with this probability.
        rare_word_dropout: in training only, replace each word seen only once in the training
            data by <unk> with this probability instead (Lample et al. 2016 use 0.5), so that
            <unk>, which stands for every word unseen in training, is learnt in the contexts
            of rare words (names, mostly). Needs the vocabulary's counts (set by training).
        num_chars: size of the character vocabulary; set from the vocabularies (`char`).
        dropout_kind: `standard` or `locked` (one mask per sequence for all its time steps)
            for `dropout` on the embeddings and on the encoder output.
        embedding_dropout: in training only, drop whole word types: every occurrence in the
            batch of a dropped word gets a zero vector (Gal & Ghahramani; AWD-LSTM).
        embeddings: `pretrained` (a GloVe/word2vec text file, see `birnn.models.pretrained`;
            read by `init_pretrained`, which training calls) and `freeze` (do not train the
            word table).
        scheduler: None (a constant rate) or a `_partial_` config of a learning-rate
            scheduler, completed with the optimiser (`birnn.config.optim.build_scheduler`:
            ReduceLROnPlateau is stepped on `monitor` per epoch, others per step; the
            warm-up schedules are `birnn.config.optim.warmup_decay`). The name-based form
            of older checkpoints (``{name: plateau, ...}``) still loads.
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
        rare_word_dropout: float = 0.0,
        num_chars: int | None = None,
        dropout_kind: str = "standard",
        embedding_dropout: float = 0.0,
        embeddings: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__()
        # the values were checked by `birnn.config` (`model` group) before any work started
        self.optimizer_cfg = dict(optimizer or {"_target_": "torch.optim.AdamW",
                                                "_partial_": True, "lr": 1e-3})
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        self.embeddings_cfg = dict(embeddings or {})
        self.embedding_dropout = float(embedding_dropout)
        char = dict(char or {})
        kind = char.pop("kind", "none") or "none"
        self.labels = list(labels)
        self.word_dropout = float(word_dropout)
        self.rare_word_dropout = float(rare_word_dropout)
        self.rare_from: int | None = None  # first word id seen once in training (ids sort by count)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        # frozen from the start, so a resumed run's optimizer has the same parameter groups
        self.embedding.weight.requires_grad_(not self.embeddings_cfg.get("freeze", False))
        width = embedding_dim
        self.char_encoder: CharEncoder | None = None
        if kind != "none":
            self.char_encoder = CharEncoder(kind, num_chars=num_chars, **char)
            width += self.char_encoder.output_size
        self.casing_embedding = nn.Embedding(len(CASING), casing_dim, padding_idx=0) \
            if casing else None
        width += casing_dim if casing else 0
        self.encoder = BiRNN(width, **encoder)
        self.dropout = SequenceDropout(dropout, dropout_kind)
        self.vocabularies: dict | None = None  # set by the recipe; saved in checkpoints

    @property
    def vocabularies(self) -> dict | None:
        return self._vocabularies

    @vocabularies.setter
    def vocabularies(self, value: dict | None) -> None:
        # the recipe sets the data's vocabularies before training: size the character table
        # from them, and keep its size in the hyper-parameters so checkpoints rebuild it
        self._vocabularies = value
        if value is not None and getattr(self, "rare_word_dropout", 0.0) > 0:
            counts = value["words"].get("counts")
            if counts is None:
                raise ConfigError("model.rare_word_dropout needs the word counts, which this "
                                  "vocabulary (from an older checkpoint) does not have")
            # words are sorted by count, most frequent first, after the specials (count 0)
            self.rare_from = next((i for i, c in enumerate(counts) if c == 1), len(counts))
        enc = getattr(self, "char_encoder", None)
        if enc is None or value is None or enc.embedding is not None:
            return
        if not value.get("chars"):
            raise ConfigError("model.char.kind needs character ids: set data.chars=true")
        enc.set_num_chars(len(value["chars"]["itos"]))
        if hasattr(self, "_hparams"):
            self.hparams["num_chars"] = len(value["chars"]["itos"])

    def init_pretrained(self) -> int | None:
        """Initialise the word table from `embeddings.pretrained` (when set) for the words of
        the vocabularies; returns the number of words found. Training calls this once before
        fitting (not when resuming: the checkpoint holds the trained table)."""
        path = self.embeddings_cfg.get("pretrained")
        if not path:
            return None
        if self.vocabularies is None:
            raise ConfigError("model.embeddings.pretrained: the vocabulary is unknown")
        return init_embedding(self.embedding, self.vocabularies["words"]["itos"], path)

    def embed(self, words: Tensor, chars: Tensor | None = None,
              casing: Tensor | None = None) -> Tensor:
        """Word ids (B, T) (and the features the model uses) -> input vectors (B, T, width)."""
        if self.training and (self.word_dropout > 0 or self.rare_word_dropout > 0):
            p = self.word_dropout
            if self.rare_word_dropout > 0:
                if self.rare_from is None:
                    raise ConfigError("model.rare_word_dropout needs the vocabularies (with "
                                      "counts) set on the model before training")
                p = torch.where(words >= self.rare_from, self.rare_word_dropout, p)
            drop = (torch.rand(words.shape, device=words.device) < p) & (words != 0)
            words = words.masked_fill(drop, UNK_ID)
        weight = self.embedding.weight
        if self.training and self.embedding_dropout > 0:
            keep = weight.new_empty(weight.size(0), 1).bernoulli_(1 - self.embedding_dropout)
            weight = weight * keep / (1 - self.embedding_dropout)
        parts = [F.embedding(words, weight, padding_idx=0)]
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
        # the `_partial_` configs completed here (birnn.config.optim), so the hyper-parameters
        # stay plain dicts; fp16 loss scaling with clipping rules out the fused update
        fp16_clipping = self._loss_scaling() and bool(self.trainer.gradient_clip_val)
        optimizer = build_optimizer(self.optimizer_cfg,
                                    [p for p in self.parameters() if p.requires_grad],
                                    fp16_clipping=fp16_clipping)
        scheduler = self.lr_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _loss_scaling(self) -> bool:
        """Whether the trainer scales the loss (fp16 mixed precision)."""
        plugin = getattr(self._trainer, "precision_plugin", None)
        return getattr(plugin, "scaler", None) is not None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        # Without loss scaling (fp32, bf16) the gradients are final here, so clip them
        # directly: Lightning's mixed-precision plugin refuses to clip for every fused
        # optimizer, a rule that only fp16's scaled gradients need.
        if self._loss_scaling() or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                       gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def lr_scheduler(self, optimizer) -> dict | None:
        """The Lightning scheduler config for `scheduler` (None for no schedule)."""
        return build_scheduler(self.scheduler_cfg, optimizer,
                               lambda: self.trainer.estimated_stepping_batches)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["vocabularies"] = self.vocabularies

    def on_load_checkpoint(self, checkpoint):
        self.vocabularies = checkpoint.get("vocabularies")
