"""Score a trained checkpoint on a data split: `python evaluate.py ckpt=PATH [split=test]`.

The model, its hyper-parameters and its vocabularies come from the checkpoint. The data
settings come from the training run's own `config.yaml` (beside `checkpoints/`), or from a data
config named on the command line (`data=conll data.dir=PATH`); `data.dir=PATH` alone reads
another folder with the run's settings. The data is encoded with the checkpoint's
vocabularies, never with vocabularies rebuilt from the data, so ids and labels mean what they
meant in training and the scores on the run's own test split equal the ones it reported.

With `robustness=true` the split is also scored under each perturbation of
`birnn.data.augment` (`birnn.metrics.robustness`): `robustness.md`, `robustness.png` and the
scores under `robustness` in `metrics.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from birnn.checkpoint import checkpoint_path, load_model
from birnn.cli.console import quiet_third_parties
from birnn.cli.report import predict_split, print_scores, write_predictions
from birnn.config.base import check
from birnn.config.data import NoiseSchema
from birnn.config.train import validate_data
from birnn.data.datamodule import SPLITS, SequenceDataModule
from birnn.errors import ConfigError, DataError
from birnn.metrics.calibration import BINS, calibration
from birnn.metrics.robustness import CLEAN, KINDS, perturbed_split, split_seed, write_report

log = logging.getLogger("birnn")


# ------------------------------------------------------------ data with given vocabularies


def datamodule_with_vocabularies(data_cfg: DictConfig, vocabularies: dict) -> SequenceDataModule:
    """Instantiate the data module `data_cfg` describes, set to encode with `vocabularies`
    (a checkpoint's `vocabularies`, whose task it must share)."""
    target = data_cfg.get("_target_")
    try:
        cls = get_class(target)
    except Exception:
        raise ConfigError(f"data._target_: cannot import {target!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, SequenceDataModule)):
        raise ConfigError(f"data._target_: {target} is not a birnn data module")
    kwargs = OmegaConf.to_container(data_cfg, resolve=True, throw_on_missing=True)
    validate_data(kwargs)  # a bad value fails here, naming its key, before any file is read
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


# ---------------------------------------------------------------------------- robustness


def robustness(trainer: L.Trainer, model, datamodule: SequenceDataModule, split: str,
               clean: dict, noise: NoiseSchema, out: Path) -> dict:
    """Score `split` under each perturbation (`birnn.metrics.robustness`), beside its
    `clean` scores; write the table and chart into `out`. Returns what `metrics.json` keeps:
    the split's seed, the noise rates, the headline score per perturbation, all scores."""
    data = datamodule.splits[split]
    seed = split_seed(data.tokens)
    key = "f1" if datamodule.task == "tagging" else "acc"
    scores, seconds = {CLEAN: clean}, {}
    for kind in KINDS:
        start = time.perf_counter()
        name = f"{split}:{kind}"  # a split of its own while it is scored
        datamodule.splits[name] = datamodule.encode(
            perturbed_split(kind, data.tokens, seed, noise.rate, noise.ocr_rate), data.gold)
        try:
            results = trainer.test(model, dataloaders=datamodule.eval_dataloader(name),
                                   verbose=False)[0]
        finally:
            del datamodule.splits[name]
        scores[kind] = {k.removeprefix("test/"): float(v) for k, v in results.items()}
        seconds[kind] = round(time.perf_counter() - start, 2)
        log.info("robustness: %s %s %.2f", kind, key, 100 * scores[kind][key])
    if trainer.is_global_zero:
        write_report(scores, key, out, f"{datamodule.source} {split}", noise.rate,
                     noise.ocr_rate)
    return {"seed": seed, "rate": noise.rate, "ocr_rate": noise.ocr_rate, "key": key,
            key: {kind: result[key] for kind, result in scores.items()},
            "scores": scores, "seconds": seconds,
            "table": "robustness.md", "chart": "robustness.png"}


# -------------------------------------------------------------------------------- command


def evaluate(cfg: DictConfig) -> dict:
    """Score `cfg.ckpt` on `cfg.split`; write `metrics.json` (and, with `cfg.predictions`,
    `<split>_predictions.conll|tsv`) to `cfg.paths.output_dir`, print the scores.

    Returns `{"checkpoint", "data", "split", <split>: {scores}}`, as written.
    """
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"split: unknown {split!r} (valid: {', '.join(SPLITS)})")
    noise = check(NoiseSchema, OmegaConf.to_container(cfg.get("noise") or {}), "noise")
    if not isinstance(cfg.get("robustness", False), bool):
        raise ConfigError(f"robustness: must be true or false, got {cfg.robustness!r}")
    out = Path(cfg.paths.output_dir)
    ckpt = checkpoint_path(cfg.ckpt)
    model, vocabularies = load_model(ckpt)

    data_cfg = data_config(cfg, ckpt)
    log.info("data: %s", data_cfg._target_)
    datamodule = datamodule_with_vocabularies(data_cfg, vocabularies)
    datamodule.setup("test")

    out.mkdir(parents=True, exist_ok=True)
    quiet_third_parties()
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[],
                                     enable_checkpointing=False)
    # test, whatever the split: the test hooks score it
    results = trainer.test(model, dataloaders=datamodule.eval_dataloader(split),
                           verbose=False)[0]
    scores = {k.removeprefix("test/"): float(v) for k, v in results.items()}
    metrics = {"checkpoint": str(ckpt), "data": datamodule.source, "split": split,
               split: scores}
    if trainer.is_global_zero:  # the confidence scores' calibration, and its chart
        chart = out / f"{split}_calibration.png"
        ece = calibration(model, datamodule.eval_dataloader(split), chart)
        metrics["calibration"] = {"ece": ece, "bins": BINS, "chart": chart.name}
    if cfg.get("robustness", False):
        metrics["robustness"] = robustness(trainer, model, datamodule, split, scores, noise, out)
    # every process predicts (a collective call under DDP); the first one writes
    predictions = predict_split(trainer, model, datamodule, split) \
        if cfg.get("predictions", True) else None
    if trainer.is_global_zero:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if predictions is not None:
            write_predictions(out / f"{split}_predictions", datamodule, predictions, split)
        key = "f1" if datamodule.task == "tagging" else "acc"
        print_scores(scores, datamodule, split,
                     f"{split} {key} {100 * scores[key]:.2f} | {len(datamodule.splits[split])} "
                     "sentences")
        log.info("scores written to %s", out / "metrics.json")
    return metrics


