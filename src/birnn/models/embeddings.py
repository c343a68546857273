"""The token embeddings every birnn model starts with: a word table (trainable, optionally
initialised from pretrained vectors, `birnn.models.vectors`), a fixed table for the words
only the vectors know, character features (a CNN or a BiLSTM over each word's characters),
casing features (`birnn.tags.word_shape`), and the dropouts on words and word types.

`TokenEmbeddings` is a mixin of `BiRNNModule`: its tables are attributes of the model itself
(`embedding`, `fixed_embedding`, `char_encoder`, `casing_embedding`), which keeps the
state-dict keys of older checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from birnn.errors import ConfigError
from birnn.models.vectors import init_embedding
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


class TokenEmbeddings:
    """Word ids (B, T) and token features -> input vectors (B, T, width); see `BiRNNModule`
    for the arguments of `init_embeddings`."""

    def init_embeddings(self, vocab_size: int, embedding_dim: int, char: dict | None,
                        casing: bool, casing_dim: int, word_dropout: float,
                        rare_word_dropout: float, num_chars: int | None,
                        embedding_dropout: float, embeddings: dict | None,
                        fixed_words: int = 0) -> int:
        """Create the tables; returns the width of the vectors `embed` gives."""
        self.embeddings_cfg = dict(embeddings or {})
        self.embedding_dropout = float(embedding_dropout)
        char = dict(char or {})
        kind = char.pop("kind", "none") or "none"
        self.word_dropout = float(word_dropout)
        self.rare_word_dropout = float(rare_word_dropout)
        self.rare_from: int | None = None  # first word id seen once in training (ids sort by count)
        self.embedding = nn.Embedding(vocab_size - fixed_words, embedding_dim, padding_idx=0)
        # frozen from the start, so a resumed run's optimizer has the same parameter groups
        self.embedding.weight.requires_grad_(not self.embeddings_cfg.get("freeze", False))
        # The last `fixed_words` word ids, words only the pretrained vectors know: a buffer,
        # not a parameter, so that no optimizer moves them (not even by weight decay), and
        # saved in checkpoints (predicting needs no vectors). Older checkpoints have none.
        self.register_buffer("fixed_embedding", torch.zeros(fixed_words, embedding_dim)
                             if fixed_words else None)  # (fixed_words, embedding_dim)
        width = embedding_dim
        self.char_encoder: CharEncoder | None = None
        if kind != "none":
            self.char_encoder = CharEncoder(kind, num_chars=num_chars, **char)
            width += self.char_encoder.output_size
        self.casing_embedding = nn.Embedding(len(CASING), casing_dim, padding_idx=0) \
            if casing else None
        return width + (casing_dim if casing else 0)

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
        """Initialise the word tables from `embeddings.pretrained` (when set) for the words of
        the vocabularies: the training words' rows, and the fixed rows of the words the
        vocabulary was extended with; returns the number of training words found. Training
        calls this once before fitting (not when resuming: the checkpoint holds the tables)."""
        source = self.embeddings_cfg.get("pretrained")
        if not source:
            return None
        if self.vocabularies is None:
            raise ConfigError("model.embeddings.pretrained: the vocabulary is unknown")
        return init_embedding(self.embedding, self.vocabularies["words"]["itos"], source,
                              fixed=self.fixed_embedding)

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
        parts = [self._word_vectors(words, weight)]
        if self.char_encoder is not None:
            if chars is None:
                raise ConfigError("model.char.kind needs `chars` in batches (data.chars=true)")
            parts.append(self.char_encoder(chars.to(words.device)).to(parts[0].dtype))
        if self.casing_embedding is not None:
            if casing is None:
                raise ConfigError("model.casing needs `casing` in batches (tagging data)")
            parts.append(self.casing_embedding(casing.to(words.device)))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def _word_vectors(self, words: Tensor, weight: Tensor) -> Tensor:
        """Word ids (B, T) -> vectors (B, T, dim): ids below the trained table's size from
        `weight`, the others from the fixed table."""
        if self.fixed_embedding is None:
            return F.embedding(words, weight, padding_idx=0)
        trained = weight.size(0)
        fixed = (words >= trained).unsqueeze(-1)  # (B, T, 1)
        out = F.embedding(words.masked_fill(fixed.squeeze(-1), 0), weight, padding_idx=0)
        extra = F.embedding((words - trained).clamp(min=0), self.fixed_embedding)
        return torch.where(fixed, extra.to(out.dtype), out)
