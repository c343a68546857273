"""The `model` group: the tagger's and the classifier's options, and the optimiser and
learning-rate schedule they complete (`_partial_` configs; see `birnn.config.optim`)."""

from __future__ import annotations

from typing import ClassVar

import torch

from birnn.config.base import Schema
from birnn.config.calls import PartialSchema, TargetSchema
from birnn.config.encoder import DROPOUT_KINDS
from birnn.config.optim import LIGHTNING_KEYS, SHAPES
from birnn.config.types import Bool, Choice, Int, Number, OptionalText, Probability

CHAR_KINDS = ("none", "cnn", "birnn")
HEADS = ("softmax", "crf")
POOLINGS = ("final", "mean", "max", "attention")


class OptimizerSchema(PartialSchema):
    """`model.optimizer`: a `torch.optim.Optimizer` class, completed with the parameters."""

    kind: ClassVar[str] = "torch.optim.Optimizer"
    example: ClassVar[str] = "torch.optim.AdamW"
    supplied: ClassVar[tuple[str, ...]] = ("params",)

    # typed where given; an absent key takes the target's own default, not these
    lr: Number(0, open_low=True) = 1e-3
    weight_decay: Number(0) = 0.0
    momentum: Number(0) = 0.0
    fused: Bool = True

    def check_target(self, target):
        self.subclass_of(target, torch.optim.Optimizer)


class SchedulerSchema(PartialSchema):
    """`model.scheduler`: a learning-rate scheduler (class or function), completed with the
    optimiser; `monitor` and `interval` are Lightning's."""

    kind: ClassVar[str] = "learning-rate scheduler"
    example: ClassVar[str] = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    supplied: ClassVar[tuple[str, ...]] = ("optimizer", "total_steps")
    ours: ClassVar[tuple[str, ...]] = LIGHTNING_KEYS

    # typed where given; an absent key takes the target's own default, not these
    monitor: OptionalText = None
    interval: Choice("step", "epoch", optional=True) = None
    shape: Choice(*SHAPES) = "cosine"
    warmup_steps: Int(0) = 0
    min_lr: Number(0) = 0.0
    factor: Number(0, 1, open_low=True) = 0.5
    patience: Int(0) = 2
    mode: Choice("min", "max") = "max"


class CharSchema(Schema):
    kind: Choice(*CHAR_KINDS) = "none"
    dim: Int(1) = 30
    filters: Int(1) = 50
    kernel_size: Int(1) = 3
    max_length: Int(1, optional=True) = 20
    hidden_size: Int(1) = 25


class EmbeddingsSchema(Schema):
    """`model.embeddings`: pretrained word vectors (`birnn.models.vectors`). `pretrained` is a
    named source or a file path; whether it exists is checked when it is read, before the
    data (a checkpoint's copy of these options must load where the vectors are absent)."""

    pretrained: OptionalText = None
    freeze: Bool = False
    # the vectors' most frequent words that extend the vocabulary (null: all, 0: none)
    max_words: Int(0, optional=True) = 100_000


class ModelSchema(TargetSchema):
    """What every model shares (`BiRNNModule`)."""

    task: ClassVar[str] = ""
    embedding_dim: Int(1) = 100
    dropout: Probability = 0.5
    optimizer: OptimizerSchema | None = None
    char: CharSchema = CharSchema()
    casing: Bool = False
    casing_dim: Int(1) = 8
    word_dropout: Probability = 0.0
    rare_word_dropout: Probability = 0.0
    dropout_kind: Choice(*DROPOUT_KINDS) = "standard"
    embedding_dropout: Probability = 0.0
    embeddings: EmbeddingsSchema = EmbeddingsSchema()
    scheduler: SchedulerSchema | None = None


class TaggerSchema(ModelSchema):
    """`birnn.models.TokenTagger`."""

    task: ClassVar[str] = "tagging"
    head: Choice(*HEADS) = "softmax"
    constrained: Bool = True


class ClassifierSchema(ModelSchema):
    """`birnn.models.SentenceClassifier`."""

    task: ClassVar[str] = "classification"
    pooling: Choice(*POOLINGS) = "final"
