"""What every birnn model shares: the token embeddings (`birnn.models.embeddings`), the BiRNN
encoder, the optimiser, and the vocabularies carried in checkpoints."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from birnn.config.optim import build_optimizer, build_scheduler
from birnn.encoder import BiRNN
from birnn.encoder.dropout import SequenceDropout
from birnn.models.embeddings import TokenEmbeddings


class BiRNNModule(TokenEmbeddings, L.LightningModule):
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
        embeddings: `pretrained` (a named source such as `glove-6b-50d`, or a GloVe/word2vec
            text file, see `birnn.models.vectors`; read by `init_pretrained`, which training
            calls), `freeze` (do not train the word table) and `max_words` (how many of the
            vectors' most frequent words extend the vocabulary; training reads it).
        scheduler: None (a constant rate) or a `_partial_` config of a learning-rate
            scheduler, completed with the optimiser (`birnn.config.optim.build_scheduler`:
            ReduceLROnPlateau is stepped on `monitor` per epoch, others per step; the
            warm-up schedules are `birnn.config.optim.warmup_decay`). The name-based form
            of older checkpoints (``{name: plateau, ...}``) still loads.
        fixed_words: how many of the `vocab_size` word ids, the last ones, are words that
            only the pretrained vectors know (the vocabulary's extension): their vectors sit
            in a fixed table, never trained. Set from the vocabulary by training.
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
        fixed_words: int = 0,
    ):
        super().__init__()
        # the values were checked by `birnn.config` (`model` group) before any work started
        self.optimizer_cfg = dict(optimizer or {"_target_": "torch.optim.AdamW",
                                                "_partial_": True, "lr": 1e-3})
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        self.labels = list(labels)
        width = self.init_embeddings(vocab_size, embedding_dim, char, casing, casing_dim,
                                     word_dropout, rare_word_dropout, num_chars,
                                     embedding_dropout, embeddings, fixed_words)
        self.encoder = BiRNN(width, **encoder)
        self.dropout = SequenceDropout(dropout, dropout_kind)
        self.vocabularies: dict | None = None  # set by the recipe; saved in checkpoints


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
