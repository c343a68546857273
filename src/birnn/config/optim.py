"""The optimiser and learning-rate schedule configs, completed with the model's parameters.

Configs name a class or function with `_partial_: true` (``{_target_: torch.optim.AdamW,
_partial_: true, lr: 0.002}``); the module keeps them as plain dicts in its hyper-parameters,
so checkpoints stay weights-only loadable, and completes them in `configure_optimizers`.
Checkpoints written before this form say ``{name: adamw, lr: ...}``: `optimizer_config` and
`scheduler_config` translate those, so such models still load and train.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping

import torch
from hydra.utils import instantiate

from birnn.errors import ConfigError

# the name-based form of older checkpoints
LEGACY_OPTIMIZERS = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW",
                     "sgd": "torch.optim.SGD"}
PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"
WARMUP_DECAY = "birnn.config.optim.warmup_decay"
SHAPES = ("constant", "linear", "cosine")
# keys of a scheduler config that are Lightning's, not the scheduler's
LIGHTNING_KEYS = ("monitor", "interval")


def locate(path: str):
    """The object a dotted `path` names (``torch.optim.AdamW``); ImportError if none."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            break
        return obj
    raise ImportError(f"cannot import {path!r}")


def parameters(target: Callable) -> set[str]:
    """The keyword arguments `target` (a class or function) accepts, or {"*"} for **kwargs."""
    signature = inspect.signature(target)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return {"*"}
    return set(signature.parameters) - {"self"}


def optimizer_config(cfg: Mapping) -> dict:
    """`cfg` in the `_partial_` form (a name-based config translated)."""
    cfg = dict(cfg)
    if "name" in cfg:
        target = LEGACY_OPTIMIZERS[cfg.pop("name")]
        if target != "torch.optim.SGD":
            cfg.pop("momentum", None)  # the old configs carried it for every optimiser
        cfg = {"_target_": target, "_partial_": True, **cfg}
    return cfg


def build_optimizer(cfg: Mapping, params, *, fp16_clipping: bool = False):
    """The optimiser `cfg` names, over `params`.

    PyTorch's default update on CPU is a Python loop over the parameters; the fused kernel
    does the same update faster (docs/performance.md), so `fused` defaults to true where the
    class has it. With fp16 loss scaling and clipping (`fp16_clipping`), Lightning needs the
    gradients unscaled before the step, which a fused optimiser does inside it: then the
    multi-tensor loop is taken instead.
    """
    cfg = optimizer_config(cfg)
    if "fused" in parameters(locate(cfg["_target_"])):
        cfg["fused"] = bool(cfg.get("fused", True))
        if cfg["fused"] and fp16_clipping:
            cfg["fused"], cfg["foreach"] = False, True
    return instantiate(cfg, _convert_="all")(params)


def scheduler_config(cfg: Mapping | None) -> dict | None:
    """`cfg` in the `_partial_` form, or None for no schedule (a name-based config
    translated: `none`, `plateau`, and the warm-up shapes)."""
    if not cfg:
        return None
    cfg = dict(cfg)
    if "_target_" in cfg:
        return cfg
    name = cfg.pop("name", "none")
    if name == "none":
        return None
    if name == "plateau":
        keys = ("mode", "factor", "patience", "min_lr", "monitor")
        return {"_target_": PLATEAU, "_partial_": True, **{k: cfg[k] for k in keys if k in cfg}}
    keys = ("warmup_steps", "min_lr")
    return {"_target_": WARMUP_DECAY, "_partial_": True, "shape": name,
            **{k: cfg[k] for k in keys if k in cfg}}


def build_scheduler(cfg: Mapping | None, optimizer,
                    total_steps: Callable[[], float]) -> dict | None:
    """The Lightning scheduler config for `cfg` (None for no schedule). `total_steps` is
    called only for a schedule that needs the run's length (`warmup_decay`)."""
    cfg = scheduler_config(cfg)
    if cfg is None:
        return None
    extra = {k: cfg.pop(k) for k in LIGHTNING_KEYS if k in cfg}
    if "total_steps" in parameters(locate(cfg["_target_"])):
        scheduler = instantiate(cfg, _convert_="all")(optimizer, total_steps=total_steps())
    else:
        scheduler = instantiate(cfg, _convert_="all")(optimizer)
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return {"scheduler": scheduler, "monitor": extra.get("monitor", "val/f1"),
                "interval": extra.get("interval", "epoch"), "strict": True}
    return {"scheduler": scheduler, "interval": extra.get("interval", "step")}


def warmup_decay(optimizer, total_steps: float, shape: str = "cosine", warmup_steps: int = 0,
                 min_lr: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: a linear warm-up from 0 over `warmup_steps`, then `shape`:
    `constant`, or `linear` / `cosine` decay to `min_lr` at step `total_steps`."""
    if shape != "constant" and not math.isfinite(total_steps):
        raise ConfigError(f"model.scheduler.shape={shape} decays over the run, which needs "
                          "a finite trainer.max_epochs or trainer.max_steps")
    total = max(int(total_steps), 1) if math.isfinite(total_steps) else warmup_steps + 1
    base = optimizer.param_groups[0]["lr"]
    floor = min_lr / base if base else 0.0

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if shape == "constant":
            return 1.0
        progress = min((step - warmup_steps) / max(total - warmup_steps, 1), 1.0)
        decay = 1 - progress if shape == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
