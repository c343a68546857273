"""What the training application costs on top of the model, and where a training step's time
goes: `train.py`'s Lightning loop against a raw PyTorch loop over the same batches with the
same model, in one run; with `--profile`, a phase-by-phase breakdown of the raw loop's steps.

    python scripts/overhead.py                                # the embedded sample
    python scripts/overhead.py experiment=conll2003 data.dir=../shared/data/conll2003
    python scripts/overhead.py experiment=conll2003 data.dir=../shared/data/conll2003 \\
        --profile --steps 200 trainer.precision=bf16-mixed

Both loops do forward, loss, backward, gradient clipping and the optimiser step the model
configures (`model.optimizer`), under the trainer's precision (`trainer.precision`), on the
same length-bucketed batches; the Lightning side also runs the callbacks and logging a real
run uses (progress bar off, no experiment logger, no validation). The ratio of their training
tokens/s is what Lightning, metrics and logging cost (1.0 = nothing). Runs alternate
(raw, Lightning, raw, Lightning, ...) so a change in machine load hits both alike; the median
of the repeats is reported.

`--profile` times the phases of `--steps` raw training steps (after `--warmup`): data loading,
input features (word embeddings with word dropout, character and casing features), encoder
forward, head and loss (the CRF's likelihood for `head=crf`), backward, and gradient clipping
with the optimiser step; then it lists the operators that took the most time
(`torch.profiler`, self CPU time) over `--op-steps` further steps. Lightning's own share is
the ratio above.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BIRNN_ROOT", str(ROOT))

from birnn.cli.build import make_callbacks, make_datamodule, make_model, make_trainer  # noqa: E402
from birnn.config.optim import PLATEAU, scheduler_config  # noqa: E402

PHASES = ("data", "features", "encoder forward", "head + loss", "backward",
          "clip + optimizer step")  # features: embeddings, word dropout, chars, casing


def build(overrides: list[str], out: Path):
    """The config and the data module, as `train.py` builds them (`birnn.cli.build`)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out}", "logger=none",
                                          "callbacks.progress_bar=null", *overrides])
    return cfg, make_datamodule(cfg)


def new_model(cfg, datamodule):
    L.seed_everything(cfg.seed, verbose=False)
    return make_model(cfg, datamodule)


def tokens_in(datamodule) -> int:
    return sum(datamodule.splits["train"].lengths)


def autocast(cfg):
    """The trainer's mixed precision as an autocast context (CPU; bf16 only)."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision.startswith("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision not in ("32", "32-true"):
        raise SystemExit(f"trainer.precision={precision}: this script runs fp32 or bf16 on CPU")
    return contextlib.nullcontext()


def optimizer_of(model):
    configured = model.configure_optimizers()
    return configured["optimizer"] if isinstance(configured, dict) else configured


def raw_step(model, optimizer, batch, cfg, mark=None) -> None:
    """One training step as the module's `training_step` plus Lightning's clipping and
    optimizer step compute it. `mark()`, when given, is called after the loss, the backward
    pass and the optimizer step (the encoder's hooks mark its start and end)."""
    mark = mark or (lambda: None)
    with autocast(cfg):
        if "tags" in batch:
            scores = model(batch["words"], batch["lengths"], **model.features(batch))
            loss = model.loss(scores.float(), batch["tags"], batch["lengths"])
        else:
            logits = model(batch["words"], batch["lengths"])
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"])
    mark()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    mark()
    clip = cfg.trainer.gradient_clip_val
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    mark()


def raw_loop(cfg, datamodule, epochs: int) -> float:
    """Training tokens/s of a plain PyTorch loop."""
    model = new_model(cfg, datamodule)
    model.train()
    optimizer = optimizer_of(model)
    loader = datamodule.train_dataloader()
    start = time.perf_counter()
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            raw_step(model, optimizer, batch, cfg)
    return epochs * tokens_in(datamodule) / (time.perf_counter() - start)


def lightning_loop(cfg, datamodule, epochs: int, out: Path) -> float:
    """Training tokens/s of `train.py`'s trainer and callbacks, validation off."""
    model = new_model(cfg, datamodule)
    callbacks = [c for c in make_callbacks(cfg, out)
                 if not isinstance(c, (ModelCheckpoint, EarlyStopping))]  # they need validation
    # RunSafety stays (it writes last.ckpt each epoch, as in training): as a Checkpoint it
    # also keeps Lightning from adding a ModelCheckpoint of its own
    trainer = make_trainer(cfg, callbacks, [], max_epochs=epochs, limit_val_batches=0,
                           enable_progress_bar=False,
                           default_root_dir=str(out))
    if (scheduler_config(model.scheduler_cfg) or {}).get("_target_") == PLATEAU:
        model.scheduler_cfg = None  # it steps on a validation score
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    return epochs * tokens_in(datamodule) / (time.perf_counter() - start)


def _batches(datamodule):
    """Training batches without end: epoch after epoch."""
    loader = datamodule.train_dataloader()
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def profile(cfg, datamodule, steps: int, warmup: int, op_steps: int) -> dict:
    """Median and mean milliseconds per phase of raw training steps, and the top operators.

    Phase ends are taken with `time.perf_counter()`: after the batch is drawn, by hooks on
    the encoder (its input is ready: features done; its output returned), and in `raw_step`.
    """
    model = new_model(cfg, datamodule)
    model.train()
    optimizer = optimizer_of(model)
    batches = _batches(datamodule)
    marks: list[float] = []

    def mark(*_) -> None:
        marks.append(time.perf_counter())

    hooks = [model.encoder.register_forward_pre_hook(mark),
             model.encoder.register_forward_hook(mark)]
    samples = {p: [] for p in PHASES}
    for step in range(warmup + steps):
        marks.clear()
        mark()
        batch = next(batches)
        mark()
        raw_step(model, optimizer, batch, cfg, mark)
        if step >= warmup:
            for phase, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True):
                samples[phase].append((end - start) * 1e3)
    for hook in hooks:
        hook.remove()
    ops = ""
    if op_steps:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(op_steps):
                raw_step(model, optimizer, next(batches), cfg)
        ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return {
        "median_ms": {p: statistics.median(v) for p, v in samples.items()},
        "mean_ms": {p: statistics.fmean(v) for p, v in samples.items()},
        "steps": steps,
        "ops": ops,
    }


def print_profile(result: dict) -> None:
    total = sum(result["mean_ms"].values())
    print(f"training step phases over {result['steps']} steps (mean and median ms; "
          "% of the mean step):")
    for phase in PHASES:
        mean, median = result["mean_ms"][phase], result["median_ms"][phase]
        print(f"  {phase:<22} {mean:8.2f} {median:8.2f}  {100 * mean / total:5.1f}%")
    print(f"  {'step':<22} {total:8.2f}")
    if result["ops"]:
        print("operators by self CPU time:")
        print(result["ops"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop")
    parser.add_argument("--profile", action="store_true",
                        help="break raw training steps down by phase instead")
    parser.add_argument("--steps", type=int, default=200, help="--profile: steps timed")
    parser.add_argument("--warmup", type=int, default=20, help="--profile: untimed steps first")
    parser.add_argument("--op-steps", type=int, default=30,
                        help="--profile: steps under torch.profiler for the operator table")
    args = parser.parse_intermixed_args(argv)  # overrides before and after options
    out = Path("/tmp") / f"birnn-overhead-{os.getpid()}"
    cfg, datamodule = build(args.overrides, out)
    print(f"data {datamodule.source}: {tokens_in(datamodule):,} training tokens per epoch, "
          f"{torch.get_num_threads()} threads, precision {cfg.trainer.precision}")
    if args.profile:
        print_profile(profile(cfg, datamodule, args.steps, args.warmup, args.op_steps))
        return 0
    raw, lit = [], []
    for _ in range(args.repeats):
        raw.append(raw_loop(cfg, datamodule, args.epochs))
        lit.append(lightning_loop(cfg, datamodule, args.epochs, out))
    r, l_ = statistics.median(raw), statistics.median(lit)
    for name, value, runs in (("raw PyTorch loop", r, raw), ("train.py Lightning", l_, lit)):
        listed = ", ".join(f"{x:,.0f}" for x in runs)
        print(f"{name:<18} {value:10,.0f} tokens/s   (runs: {listed})")
    print(f"ratio Lightning / raw: {l_ / r:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
