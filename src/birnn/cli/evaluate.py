"""Score a trained checkpoint on a data split: `python evaluate.py ckpt=PATH [split=test]`.

The model, its hyper-parameters and its vocabularies come from the checkpoint. The data
settings come from the training run's own `config.yaml` (beside `checkpoints/`), or from a data
config named on the command line (`data=conll data.dir=PATH`); `data.dir=PATH` alone reads
another folder with the run's settings. The data is encoded with the checkpoint's
vocabularies, never with vocabularies rebuilt from the data, so ids and labels mean what they
meant in training and the scores on the run's own test split equal the ones it reported.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from birnn.cli.predict import build_model, checkpoint_path, load_checkpoint
from birnn.data.datamodule import SPLITS, SequenceDataModule
from birnn.data.vocab import Vocab
from birnn.errors import ConfigError, DataError
from birnn.metrics.spans import get_spans

log = logging.getLogger("birnn")


# ------------------------------------------------------------ data with given vocabularies


class CheckpointVocabularies:
    """Mixin for a data module: `setup` encodes with the vocabularies set by
    `use_vocabularies` instead of building them on the training split (it still reads every
    split; the words it counts on train are dropped)."""

    _given_words: Vocab
    _given_labels: Vocab

    def use_vocabularies(self, state: dict) -> None:
        self._given_words = Vocab.from_state_dict(state["words"])
        labels = Vocab.from_state_dict(state["labels"])
        # labels are text; older checkpoints of numeric labels (0/1 in a TSV) hold ints
        self._given_labels = Vocab([str(label) for label in labels.itos], unk=None)

    @property
    def words(self) -> Vocab | None:
        return getattr(self, "_given_words", None)

    @words.setter
    def words(self, value) -> None:  # setup's own vocabulary: ignored
        pass

    def build_labels(self, gold):
        return self._given_labels  # so that check_labels / encode_targets use these labels


def datamodule_with_vocabularies(data_cfg: DictConfig, vocabularies: dict) -> SequenceDataModule:
    """Instantiate the data module `data_cfg` describes, set to encode with `vocabularies`
    (a checkpoint's `vocabularies`). Checks that its task is the checkpoint's."""
    target = data_cfg.get("_target_")
    try:
        base = get_class(target)
    except Exception:
        raise ConfigError(f"data._target_: cannot import {target!r}") from None
    if not (isinstance(base, type) and issubclass(base, SequenceDataModule)):
        raise ConfigError(f"data._target_: {target} is not a birnn data module")
    if base.task != vocabularies["task"]:
        raise ConfigError(f"the checkpoint is a {vocabularies['task']} model but data "
                          f"({target}) is {base.task} data: pick data=... for its task")
    cls = type(base.__name__, (CheckpointVocabularies, base), {"__module__": __name__})
    kwargs = OmegaConf.to_container(data_cfg, resolve=True, throw_on_missing=True)
    kwargs.pop("_target_")
    datamodule = cls(**kwargs)
    datamodule.use_vocabularies(vocabularies)
    return datamodule


def data_config(cfg: DictConfig, ckpt: Path) -> DictConfig:
    """The data section to evaluate on: a data config chosen on the command line, or the
    training run's (`ckpt/../../config.yaml`) with any `data.*` values given on top."""
    given = cfg.get("data") or {}
    if given.get("_target_"):
        return given
    run_config = ckpt.resolve().parent.parent / "config.yaml"
    if not run_config.is_file():
        raise ConfigError(f"no training config at {run_config} to take the data settings "
                          "from: name the data, e.g. data=conll data.dir=PATH")
    try:
        data = OmegaConf.load(run_config).get("data")
    except Exception as e:
        raise DataError(f"cannot read the run config ({type(e).__name__})", run_config) from None
    if not data or not data.get("_target_"):
        raise DataError("the run config has no data section with a _target_", run_config)
    extra = {k: v for k, v in given.items() if v is not None}
    return OmegaConf.merge(data, extra) if extra else data


# -------------------------------------------------------------------------------- command


def evaluate(cfg: DictConfig) -> dict:
    """Score `cfg.ckpt` on `cfg.split`; write `metrics.json` (and, with `cfg.predictions`,
    `<split>_predictions.conll|tsv`) to `cfg.paths.output_dir`, print the scores.

    Returns `{"checkpoint", "data", "split", <split>: {scores}}`, as written.
    """
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"split: unknown {split!r} (valid: {', '.join(SPLITS)})")
    out = Path(cfg.paths.output_dir)
    ckpt = checkpoint_path(cfg.ckpt)
    checkpoint = load_checkpoint(ckpt)
    model = build_model(checkpoint, ckpt)
    vocabularies = checkpoint["vocabularies"]
    del checkpoint

    data_cfg = data_config(cfg, ckpt)
    log.info("data: %s", data_cfg._target_)
    datamodule = datamodule_with_vocabularies(data_cfg, vocabularies)
    datamodule.setup("test")

    out.mkdir(parents=True, exist_ok=True)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[],
                                     enable_checkpointing=False)
    # test, whatever the split: the test hooks score and keep the predictions
    loader = datamodule._loader(split, train=False)
    results = trainer.test(model, dataloaders=loader, verbose=False)[0]
    scores = {k.removeprefix("test/"): float(v) for k, v in results.items()}
    metrics = {"checkpoint": str(ckpt), "data": datamodule.source, "split": split,
               split: scores}
    if trainer.is_global_zero:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if cfg.get("predictions", True):
            _write_split_predictions(out / f"{split}_predictions", datamodule, split, model)
        print_scores(scores, datamodule, split)
        log.info("scores written to %s", out / "metrics.json")
    return metrics


def _write_split_predictions(path: Path, datamodule, split: str, model) -> Path:
    """`birnn.cli.train.write_predictions` (which writes the test split) for any split."""
    from birnn.cli.train import write_predictions

    view = SimpleNamespace(splits={"test": datamodule.splits[split]},
                           labels=datamodule.labels, task=datamodule.task)
    return write_predictions(path, view, model)


def print_scores(scores: dict, datamodule, split: str) -> None:
    """Span P/R/F1 per type and micro (tagging), or accuracy and macro-F1 (classification)."""
    table = Table(title=f"{split} ({datamodule.source})")
    data = datamodule.splits[split]
    if datamodule.task == "tagging":
        support: dict[str, int] = {}
        for tags in data.gold:
            for kind, _, _ in get_spans(tags):
                support[kind] = support.get(kind, 0) + 1
        for column in ("type", "precision", "recall", "f1", "support"):
            table.add_column(column, justify="left" if column == "type" else "right")
        for kind in sorted(support):
            table.add_row(kind, *(f"{100 * scores.get(f'{m}/{kind}', 0.0):.2f}"
                                  for m in ("precision", "recall", "f1")), str(support[kind]))
        table.add_row("micro", *(f"{100 * scores[m]:.2f}" for m in ("precision", "recall", "f1")),
                      str(sum(support.values())), style="bold")
        summary = f"{split} f1 {100 * scores['f1']:.2f}"
    else:
        for column in ("accuracy", "macro f1", "sentences"):
            table.add_column(column, justify="right")
        table.add_row(f"{100 * scores['acc']:.2f}", f"{100 * scores['macro_f1']:.2f}",
                      str(len(data)))
        summary = f"{split} acc {100 * scores['acc']:.2f}"
    console = Console()
    console.print(table)
    console.print(f"{summary} | {len(data)} sentences")
