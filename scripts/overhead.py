"""What the training application costs on top of the model: `train.py`'s Lightning loop
against a raw PyTorch loop over the same batches with the same model, in one run.

    python scripts/overhead.py                                # the embedded sample
    python scripts/overhead.py data=conll data.dir=../shared/data/conll2003 --epochs 1

Both loops do forward, loss, backward, gradient clipping and an optimiser step on the same
length-bucketed batches; the Lightning side also runs the callbacks and logging a real run
uses (progress bar off, no experiment logger, no validation). The ratio of their training
tokens/s is what Lightning, metrics and logging cost (1.0 = nothing). Runs alternate
(raw, Lightning, raw, Lightning, ...) so a change in machine load hits both alike; the median
of the repeats is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BIRNN_ROOT", str(ROOT))


def build(overrides: list[str], out: Path):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out}", "logger=none",
                                          "callbacks.progress_bar=null", *overrides])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return cfg, datamodule


def new_model(cfg, datamodule):
    L.seed_everything(cfg.seed, verbose=False)
    return instantiate(cfg.model, vocab_size=len(datamodule.words),
                       labels=datamodule.labels.itos,
                       encoder=OmegaConf.to_container(cfg.encoder, resolve=True),
                       _convert_="all")


def tokens_in(datamodule) -> int:
    return sum(datamodule.splits["train"].lengths)


def raw_loop(cfg, datamodule, epochs: int) -> float:
    """Training tokens/s of a plain PyTorch loop."""
    model = new_model(cfg, datamodule)
    model.train()
    optimizer = model.configure_optimizers()
    loader = datamodule.train_dataloader()
    clip = cfg.trainer.gradient_clip_val
    start = time.perf_counter()
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            loss = _loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
    return epochs * tokens_in(datamodule) / (time.perf_counter() - start)


def _loss(model, batch):
    # the same computation as the module's training_step, without Lightning's logging
    if "tags" in batch:
        return model.loss(model(batch["words"], batch["lengths"]), batch["tags"])
    return torch.nn.functional.cross_entropy(model(batch["words"], batch["lengths"]),
                                             batch["label"])


def lightning_loop(cfg, datamodule, epochs: int, out: Path) -> float:
    """Training tokens/s of `train.py`'s trainer and callbacks, validation off."""
    model = new_model(cfg, datamodule)
    callbacks = [instantiate(c) for name, c in cfg.callbacks.items()
                 if c and name not in ("best", "early_stopping")]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False, max_epochs=epochs,
                          limit_val_batches=0, enable_checkpointing=False,
                          enable_progress_bar=False, default_root_dir=str(out))
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    return epochs * tokens_in(datamodule) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop")
    args = parser.parse_args(argv)
    out = Path("/tmp") / f"birnn-overhead-{os.getpid()}"
    cfg, datamodule = build(args.overrides, out)
    raw, lit = [], []
    for _ in range(args.repeats):
        raw.append(raw_loop(cfg, datamodule, args.epochs))
        lit.append(lightning_loop(cfg, datamodule, args.epochs, out))
    r, l_ = statistics.median(raw), statistics.median(lit)
    print(f"data {datamodule.source}: {tokens_in(datamodule):,} training tokens per epoch, "
          f"{torch.get_num_threads()} threads")
    for name, value, runs in (("raw PyTorch loop", r, raw), ("train.py Lightning", l_, lit)):
        listed = ", ".join(f"{x:,.0f}" for x in runs)
        print(f"{name:<18} {value:10,.0f} tokens/s   (runs: {listed})")
    print(f"ratio Lightning / raw: {l_ / r:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
