"""Experiment loggers (W&B, CSV, TensorBoard; several at once) and the charts they receive.

`wandb` is imported only when the W&B logger is chosen, so a machine without it runs any other
logger.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

log = logging.getLogger("birnn")

WANDB_ID_FILE = "wandb_id.txt"  # the run id, so a resumed run continues the same W&B run


def wandb_has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def sweep_group() -> str | None:
    """The sweep folder's name during a Hydra multirun (W&B groups the jobs by it)."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    return "/".join(Path(hydra.sweep.dir).parts[-2:])


def create_loggers(cfg: DictConfig, out: Path, resume: bool) -> list:
    """Instantiate `cfg.logger`'s entries. W&B runs offline without credentials (and says how
    to upload later); a resumed run continues its W&B run."""
    loggers = []
    for name, entry in (cfg.get("logger") or {}).items():
        if not entry:
            continue
        if str(entry.get("_target_", "")).endswith("WandbLogger"):
            logger = _wandb_logger(entry, out, resume)
            if logger is None:
                continue
        else:
            logger = instantiate(entry)
            if resume and str(entry.get("_target_", "")).endswith("CSVLogger"):
                _continue_csv(logger)
        log.info("logger: %s", name)
        loggers.append(logger)
    return loggers


def _wandb_logger(entry: DictConfig, out: Path, resume: bool):
    try:
        import wandb  # noqa: F401
    except ImportError:
        log.warning("logger: wandb is not installed; W&B logging is off")
        return None
    kwargs = {}
    id_file = out / WANDB_ID_FILE
    if resume and id_file.is_file():
        kwargs.update(id=id_file.read_text().strip(), resume="allow")
    if (group := sweep_group()) and not entry.get("group"):
        kwargs["group"] = group
    offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_has_credentials()
    if offline and not entry.get("offline"):
        kwargs["offline"] = True
    logger = instantiate(entry, **kwargs)
    # Lightning passes `anonymous` to `wandb.init` always, which W&B deprecates
    logger._wandb_init.pop("anonymous", None)
    run = logger.experiment  # starts the run now, so its id and folder are known
    id_file.write_text(run.id + "\n")
    if offline:
        log.warning("W&B: no API key configured, logging offline; upload this run later with "
                    "`wandb sync %s`", Path(run.dir).parent)
    return logger


def _continue_csv(logger) -> None:
    """Keep the rows a resumed run's metrics.csv already holds: Lightning's CSV writer deletes
    the file when it starts, so the earlier epochs would be lost."""
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    saved = path.read_bytes()
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    writer = logger.experiment  # deletes metrics.csv (rank zero; a no-op stand-in elsewhere)
    if hasattr(writer, "metrics_keys"):
        path.write_bytes(saved)
        # the writer appends rows under this header, and rewrites the file when keys are new
        writer.metrics_keys = header


def log_config(loggers: list, cfg: DictConfig, extra: dict) -> None:
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("hydra", None)
    for logger in loggers:
        logger.log_hyperparams({**params, **extra})


def log_final(loggers: list, metrics: dict) -> None:
    """The best validation score and the test scores, once, at the end."""
    key = metrics["monitor"].removeprefix("val/")
    values = {f"best/{metrics['monitor']}": metrics["val"][key]}
    values.update({f"final/test/{k}": v for k, v in metrics["test"].items()})
    for logger in loggers:
        logger.log_metrics(values)


def save_charts(out: Path, metrics: dict, datamodule, predictions: dict[int, dict]
                ) -> dict[str, Path]:
    """A per-type F1 bar chart (tagging) or a confusion matrix (classification, from the
    test `predictions` of `birnn.cli.report.predict_split`) as PNG."""
    labels = datamodule.labels.itos
    if datamodule.task == "tagging":
        test = metrics["test"]
        types = sorted(k.removeprefix("f1/") for k in test if k.startswith("f1/"))
        fig, ax = plt.subplots(figsize=(1.2 * len(types) + 2, 3.5))
        ax.bar(types + ["micro"], [100 * test[f"f1/{t}"] for t in types] + [100 * test["f1"]],
               color=["tab:blue"] * len(types) + ["tab:gray"])
        ax.set_ylabel("test span F1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title("test F1 per entity type")
        name = "test_f1_per_type"
    else:
        gold = datamodule.splits["test"].targets.tolist()
        counts = [[0] * len(labels) for _ in labels]
        for i, g in enumerate(gold):
            if i in predictions:
                counts[g][predictions[i]["label"]] += 1
        fig, ax = plt.subplots(figsize=(1.0 * len(labels) + 2.5, 1.0 * len(labels) + 2))
        ax.imshow(counts, cmap="Blues")
        for g, row in enumerate(counts):
            for p, c in enumerate(row):
                ax.text(p, g, str(c), ha="center", va="center")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title("test confusion matrix")
        name = "test_confusion_matrix"
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {name: path}


def log_charts(loggers: list, charts: dict[str, Path]) -> None:
    for logger in loggers:
        for name, path in charts.items():
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(key=f"test/{name}", images=[str(path)])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                image = plt.imread(path)[..., :3]
                logger.experiment.add_image(f"test/{name}", image, dataformats="HWC")


def finish_wandb() -> None:
    """Close the W&B run (also after a crash), so the next job of a sweep starts its own."""
    wandb = sys.modules.get("wandb")  # not imported: no W&B logger, nothing to close
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
