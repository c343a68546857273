"""The training recipe behind `python train.py`: data, model, trainer, fit, test, report."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from birnn.callbacks import TrainingReport
from birnn.encoder import BiRNN
from birnn.errors import ConfigError
from birnn.metrics.spans import get_spans

log = logging.getLogger("birnn")


def check_encoder(encoder: dict, input_size: int) -> None:
    """Build the encoder once on its own so that a bad option fails before any data is read."""
    try:
        BiRNN(input_size, **encoder)
    except ConfigError as e:
        raise ConfigError(f"encoder.{e}") from None
    except TypeError as e:
        raise ConfigError(f"encoder: {e}") from None


def train(cfg: DictConfig) -> dict:
    """Train, select the best checkpoint on validation, test it, and write the run folder.

    Returns the metrics summary also written to `metrics.json`.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder_cfg = OmegaConf.to_container(cfg.encoder, resolve=True)
    check_encoder(encoder_cfg, cfg.model.embedding_dim)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = time.time()
    L.seed_everything(cfg.seed, workers=True)

    log.info("data: %s", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")

    log.info("model: %s", cfg.model._target_)
    model = instantiate(
        cfg.model,
        vocab_size=len(datamodule.words),
        labels=datamodule.labels.itos,
        encoder=encoder_cfg,
        _convert_="all",
    )
    model.vocabularies = datamodule.vocabularies()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("encoder: %s | %s trainable parameters", model.encoder.extra_repr(), f"{params:,}")

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(model, datamodule=datamodule)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt = best or None
    val = trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
    test = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]

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
        "device": str(model.device),
    }
    if trainer.is_global_zero:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_predictions(out / "test_predictions", datamodule, model)
        print_test_table(metrics, datamodule)
        log.info("run folder: %s", out)
    return metrics


def _floats(results: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): float(v) for k, v in results.items()}


def write_predictions(path: Path, datamodule, model) -> Path:
    """Test predictions: for tagging a column file (token, gold tag, predicted tag); for
    classification a TSV (gold label, predicted label, text). Returns the path written."""
    split = datamodule.splits["test"]
    labels = datamodule.labels.itos
    predictions = model.test_predictions
    if datamodule.task == "tagging":
        path = path.with_suffix(".conll")
        with path.open("w", encoding="utf-8") as f:
            for i, (tokens, gold) in enumerate(zip(split.tokens, split.gold, strict=True)):
                if i not in predictions:  # not scored (e.g. trainer.limit_test_batches)
                    continue
                pred = [labels[j] for j in predictions[i]]
                for row in zip(tokens, gold, pred, strict=True):
                    f.write(" ".join(row) + "\n")
                f.write("\n")
    else:
        path = path.with_suffix(".tsv")
        with path.open("w", encoding="utf-8") as f:
            f.write("label\tpredicted\tsentence\n")
            for i, (tokens, gold) in enumerate(zip(split.tokens, split.gold, strict=True)):
                if i in predictions:
                    f.write(f"{gold}\t{labels[predictions[i]]}\t{' '.join(tokens)}\n")
    return path


def print_test_table(metrics: dict, datamodule) -> None:
    """Test scores: per-type and micro span P/R/F1 for tagging, accuracy and macro-F1 for
    classification; then one summary line."""
    test = metrics["test"]
    table = Table(title=f"test ({datamodule.source})")
    if datamodule.task == "tagging":
        support: dict[str, int] = {}
        for tags in datamodule.splits["test"].gold:
            for kind, _, _ in get_spans(tags):
                support[kind] = support.get(kind, 0) + 1
        for column in ("type", "precision", "recall", "f1", "support"):
            table.add_column(column, justify="left" if column == "type" else "right")
        for kind in sorted(support):
            table.add_row(kind, *(f"{100 * test.get(f'{m}/{kind}', 0.0):.2f}"
                                  for m in ("precision", "recall", "f1")), str(support[kind]))
        table.add_row("micro", *(f"{100 * test[m]:.2f}" for m in ("precision", "recall", "f1")),
                      str(sum(support.values())), style="bold")
    else:
        for column in ("accuracy", "macro f1", "sentences"):
            table.add_column(column, justify="right")
        table.add_row(f"{100 * test['acc']:.2f}", f"{100 * test['macro_f1']:.2f}",
                      str(len(datamodule.splits["test"])))
    console = Console()
    console.print(table)
    key = metrics["monitor"].removeprefix("val/")
    rate = metrics["train_tokens_per_s"]
    console.print(
        f"val {key} {100 * metrics['val'][key]:.2f} | test {key} {100 * test[key]:.2f} | "
        f"{metrics['parameters']:,} parameters | "
        + (f"{rate:,.0f} training tokens/s | " if rate else "")
        + f"padded {100 * metrics['train_padded_fraction']:.1f}% | "
        + f"{metrics['wall_time_s']:.0f} s"
    )
