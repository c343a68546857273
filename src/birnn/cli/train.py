"""The training recipe behind `python train.py`: seed, build, fit, test the best checkpoint,
write the run folder, return the metrics."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from birnn.callbacks import TrainingReport
from birnn.checkpoint import load_checkpoint, resumable
from birnn.cli.build import Run, build
from birnn.cli.loggers import log_charts, log_config, log_final, save_charts
from birnn.cli.report import predict_split, print_scores, write_predictions
from birnn.config import validate
from birnn.errors import ConfigError

log = logging.getLogger("birnn")

EXIT_SIGTERM = 143  # 128 + SIGTERM, what schedulers expect of a job stopped by SIGTERM


def resume_checkpoint(cfg: DictConfig, out: Path) -> tuple[str, dict] | None:
    """The checkpoint to continue from, and what it holds: `ckpt_path=PATH`, or the run
    folder's `last.ckpt` with `resume=true` (or `ckpt_path=last`); an unreadable `last.ckpt`
    gives way to the newest readable checkpoint beside it (`birnn.checkpoint.resumable`)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path: no such checkpoint {ckpt_path}")
        return str(ckpt_path), load_checkpoint(ckpt_path)
    if cfg.get("resume") or ckpt_path == "last":
        last = out / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(
                f"resume: no {last} to continue from (point hydra.run.dir at the run folder "
                "to resume, e.g. `python train.py resume=true hydra.run.dir=outputs/DATE/TIME`)")
        path, checkpoint = resumable(last, last.parent)
        return str(path), checkpoint
    return None


def check_vocabularies(ckpt: str, checkpoint: dict, datamodule) -> None:
    """A resumed run must read its data exactly as before: same words, same labels."""
    if checkpoint["vocabularies"] != datamodule.vocabularies():
        raise ConfigError(f"resume: the data's vocabularies differ from those in {ckpt}; "
                          "resume with the same data options it was trained with")


def train(cfg: DictConfig) -> dict:
    """Train, select the best checkpoint on validation, test it, and write the run folder.

    Returns the metrics summary also written to `metrics.json`.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    validate(cfg)
    resume = resume_checkpoint(cfg, out)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = time.time()
    L.seed_everything(cfg.seed, workers=True)

    run = build(cfg, out, resume=resume is not None)
    ckpt = None
    if resume:
        ckpt, checkpoint = resume
        check_vocabularies(ckpt, checkpoint, run.datamodule)
        del checkpoint, resume  # Lightning reads the file itself
    trainer, model, datamodule = run.trainer, run.model, run.datamodule
    log_config(run.loggers, cfg, {"parameters": run.parameters,
                                  "device": str(trainer.strategy.root_device)})
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException:
        log.error("stopped by SIGTERM; continue with `python train.py resume=true "
                  "hydra.run.dir=%s` (same overrides)", out)
        sys.exit(EXIT_SIGTERM)
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks
                 if isinstance(c, ModelCheckpoint)), "") or None
    val = trainer.validate(model, datamodule=datamodule, ckpt_path=best, weights_only=True,
                           verbose=False)[0]
    test = trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True,
                        verbose=False)[0]
    predictions = predict_split(trainer, model, datamodule, "test", best)

    metrics = summary(cfg, run, best, val, test, time.time() - started)
    if trainer.is_global_zero:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_predictions(out / "test_predictions", datamodule, predictions)
        log_final(run.loggers, metrics)
        log_charts(run.loggers, save_charts(out, metrics, datamodule, predictions))
        print_test_table(metrics, datamodule)
        log.info("run folder: %s", out)
    return metrics


def summary(cfg: DictConfig, run: Run, best: str | None, val: dict, test: dict,
            seconds: float) -> dict:
    """What `metrics.json` holds."""
    report = next((c for c in run.callbacks if isinstance(c, TrainingReport)), None)
    return {
        "monitor": cfg.monitor,
        "best_checkpoint": best,
        "epochs": run.trainer.current_epoch,
        "val": _floats(val, "val/"),
        "test": _floats(test, "test/"),
        "parameters": run.parameters,
        "train_tokens_per_s": report.tokens_per_s if report else None,
        "train_padded_fraction": run.datamodule.padded_fraction("train"),
        "wall_time_s": seconds,
        "device": str(run.trainer.strategy.root_device),
    }


def _floats(results: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): float(v) for k, v in results.items()}


def print_test_table(metrics: dict, datamodule) -> None:
    """The test score table, then one line: val and test score, size, speed, padding, time."""
    key = metrics["monitor"].removeprefix("val/")
    rate = metrics["train_tokens_per_s"]
    line = (
        f"val {key} {100 * metrics['val'][key]:.2f} | test {key} "
        f"{100 * metrics['test'][key]:.2f} | {metrics['parameters']:,} parameters | "
        + (f"{rate:,.0f} training tokens/s | " if rate else "")
        + f"padded {100 * metrics['train_padded_fraction']:.1f}% | "
        + f"{metrics['wall_time_s']:.0f} s"
    )
    print_scores(metrics["test"], datamodule, "test", line)
