"""The parts of a training run, built from its config with a log line each: data module,
model, callbacks, loggers and trainer. `train.py` and `scripts/overhead.py` build them here,
so the run a benchmark measures is the run training does."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from birnn.callbacks import AtomicCheckpointIO, RunSafety
from birnn.cli.console import quiet_third_parties
from birnn.cli.loggers import create_loggers
from birnn.config.model import EmbeddingsSchema
from birnn.data.datamodule import SequenceDataModule
from birnn.models.base import BiRNNModule
from birnn.models.vectors import extension_words

log = logging.getLogger("birnn")


@dataclass
class Run:
    """What `build` returns."""

    datamodule: SequenceDataModule
    model: BiRNNModule
    callbacks: list[L.Callback]
    loggers: list
    trainer: L.Trainer

    @property
    def parameters(self) -> int:
        """Trainable parameters of the model."""
        return trainable_parameters(self.model)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_datamodule(cfg: DictConfig) -> SequenceDataModule:
    """`cfg.data`, set up for fitting (splits read, vocabularies built on train, the word
    vocabulary extended with the words of `model.embeddings.pretrained`, when set)."""
    log.info("data: %s", cfg.data._target_)
    # the words reach the constructor as they are, not through OmegaConf (which would read
    # GloVe's "???" as a missing value)
    datamodule = instantiate(cfg.data, _partial_=True)(**vector_words(cfg))
    datamodule.setup("fit")
    return datamodule


def vector_words(cfg: DictConfig) -> dict:
    """The data module's `extra_words`: the first `model.embeddings.max_words` words of the
    pretrained vectors (read here, so a missing source stops the run before the data)."""
    embeddings = EmbeddingsSchema(**(cfg.model.get("embeddings") or {}))  # checked already
    if not embeddings.pretrained or embeddings.max_words == 0:
        return {}
    return {"extra_words": extension_words(embeddings.pretrained, cfg.model.embedding_dim,
                                           embeddings.max_words)}


def make_model(cfg: DictConfig, datamodule: SequenceDataModule,
               pretrained: bool = True) -> BiRNNModule:
    """`cfg.model` sized by the data (vocabulary, labels) around `cfg.encoder`, carrying the
    data's vocabularies; `pretrained`: initialise the word table from
    `model.embeddings.pretrained` (not on a resume: the checkpoint holds the trained table)."""
    log.info("model: %s", cfg.model._target_)
    model = instantiate(
        cfg.model,
        vocab_size=len(datamodule.words),
        fixed_words=datamodule.words.extra,  # the vocabulary's extension: fixed vectors
        labels=datamodule.labels.itos,
        encoder=OmegaConf.to_container(cfg.encoder, resolve=True),
        _convert_="all",
    )
    model.vocabularies = datamodule.vocabularies()  # also sizes the character table
    if pretrained:
        model.init_pretrained()
    log.info("encoder: %s | %s trainable parameters", model.encoder.extra_repr(),
             f"{trainable_parameters(model):,}")
    return model


def make_callbacks(cfg: DictConfig, out: Path) -> list[L.Callback]:
    """`cfg.callbacks`' entries (null ones left out), and `RunSafety` on the run folder's
    `checkpoints/last.ckpt` when they hold none: a NaN stop and a SIGTERM save, always."""
    entries = {name: c for name, c in (cfg.get("callbacks") or {}).items() if c}
    callbacks = [instantiate(c) for c in entries.values()]
    if not any(isinstance(c, RunSafety) for c in callbacks):
        callbacks.append(RunSafety(str(out / "checkpoints" / "last.ckpt")))
    # Lightning runs checkpoint callbacks last, in list order: RunSafety after the best
    # checkpoint's, so last.ckpt holds this epoch's best score (and early stopping's count)
    callbacks.sort(key=lambda c: isinstance(c, RunSafety))
    log.info("callbacks: %s", ", ".join(type(c).__name__ for c in callbacks))
    return callbacks


def make_trainer(cfg: DictConfig, callbacks: list, loggers: list, **overrides) -> L.Trainer:
    """`cfg.trainer` with these callbacks and loggers, writing checkpoints atomically;
    `overrides` replace trainer arguments."""
    quiet_third_parties()
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     plugins=[AtomicCheckpointIO()], **overrides)
    log.info("trainer: %s x%d, precision %s, at most %s epochs",
             trainer.strategy.root_device, trainer.world_size, trainer.precision,
             trainer.max_epochs)
    return trainer


def build(cfg: DictConfig, out: Path, resume: bool = False) -> Run:
    """Every part of a training run of `cfg` writing into the run folder `out`; `resume`:
    the run continues from a checkpoint (its W&B run too)."""
    datamodule = make_datamodule(cfg)
    model = make_model(cfg, datamodule, pretrained=not resume)
    callbacks = make_callbacks(cfg, out)
    loggers = create_loggers(cfg, out, resume=resume)
    trainer = make_trainer(cfg, callbacks, loggers)
    return Run(datamodule, model, callbacks, loggers, trainer)
