"""The training recipe behind `python train.py`: data, model, trainer, fit, test, report."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from birnn.callbacks import AtomicCheckpointIO, RunSafety, TrainingReport
from birnn.cli.loggers import create_loggers, log_charts, log_config, log_final, save_charts
from birnn.cli.report import print_scores, write_predictions
from birnn.cli.validate import validate_config
from birnn.errors import ConfigError

log = logging.getLogger("birnn")

EXIT_SIGTERM = 143  # 128 + SIGTERM, what schedulers expect of a job stopped by SIGTERM


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint to continue from: `ckpt_path=PATH`, or the run folder's `last.ckpt`
    with `resume=true` (or `ckpt_path=last`)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path: no such checkpoint {ckpt_path}")
        return str(ckpt_path)
    if cfg.get("resume") or ckpt_path == "last":
        last = out / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(
                f"resume: no {last} to continue from (point hydra.run.dir at the run folder "
                "to resume, e.g. `python train.py resume=true hydra.run.dir=outputs/DATE/TIME`)")
        return str(last)
    return None


def check_vocabularies(ckpt: str, datamodule) -> None:
    """A resumed run must read its data exactly as before: same words, same labels."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True).get("vocabularies")
    if saved is not None and saved != datamodule.vocabularies():
        raise ConfigError(f"resume: the data's vocabularies differ from those in {ckpt}; "
                          "resume with the same data options it was trained with")


def train(cfg: DictConfig) -> dict:
    """Train, select the best checkpoint on validation, test it, and write the run folder.

    Returns the metrics summary also written to `metrics.json`.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    validate_config(cfg)
    encoder_cfg = OmegaConf.to_container(cfg.encoder, resolve=True)
    ckpt = resume_checkpoint(cfg, out)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = time.time()
    L.seed_everything(cfg.seed, workers=True)

    log.info("data: %s", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    if ckpt:
        check_vocabularies(ckpt, datamodule)

    log.info("model: %s", cfg.model._target_)
    model = instantiate(
        cfg.model,
        vocab_size=len(datamodule.words),
        labels=datamodule.labels.itos,
        encoder=encoder_cfg,
        _convert_="all",
    )
    model.vocabularies = datamodule.vocabularies()
    if not ckpt:
        model.init_pretrained()  # a resumed run takes its trained table from the checkpoint
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("encoder: %s | %s trainable parameters", model.encoder.extra_repr(), f"{params:,}")

    last = out / "checkpoints" / "last.ckpt"
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not any(isinstance(c, RunSafety) for c in callbacks):
        callbacks.append(RunSafety(str(last)))  # a NaN stop and a SIGTERM save, always
    loggers = create_loggers(cfg, out, resume=ckpt is not None)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     plugins=[AtomicCheckpointIO()])
    log_config(loggers, cfg, {"parameters": params, "device": str(trainer.strategy.root_device)})

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt)
    except SIGTERMException:
        log.error("stopped by SIGTERM; continue with `python train.py resume=true "
                  "hydra.run.dir=%s` (same overrides)", out)
        sys.exit(EXIT_SIGTERM)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    best = best or None
    val = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
    test = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]

    report = next((c for c in callbacks if isinstance(c, TrainingReport)), None)
    metrics = {
        "monitor": cfg.monitor,
        "best_checkpoint": best,
        "epochs": trainer.current_epoch,
        "val": _floats(val, "val/"),
        "test": _floats(test, "test/"),
        "parameters": params,
        "train_tokens_per_s": report.tokens_per_s if report else None,
        "train_padded_fraction": datamodule.padded_fraction("train"),
        "wall_time_s": time.time() - started,
        "device": str(trainer.strategy.root_device),
    }
    if trainer.is_global_zero:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_predictions(out / "test_predictions", datamodule, model)
        log_final(loggers, metrics)
        log_charts(loggers, save_charts(out, metrics, datamodule, model))
        print_test_table(metrics, datamodule)
        log.info("run folder: %s", out)
    return metrics


def _floats(results: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): float(v) for k, v in results.items()}


def print_test_table(metrics: dict, datamodule) -> None:
    """The test score table, then one line: val and test score, size, speed, padding, time."""
    key = metrics["monitor"].removeprefix("val/")
    rate = metrics["train_tokens_per_s"]
    summary = (
        f"val {key} {100 * metrics['val'][key]:.2f} | test {key} "
        f"{100 * metrics['test'][key]:.2f} | {metrics['parameters']:,} parameters | "
        + (f"{rate:,.0f} training tokens/s | " if rate else "")
        + f"padded {100 * metrics['train_padded_fraction']:.1f}% | "
        + f"{metrics['wall_time_s']:.0f} s"
    )
    print_scores(metrics["test"], datamodule, "test", summary)
