"""Check a composed training config before any data is read or any model is built.

`validate_config(cfg)` walks one table of ``(key, test, what it must be)`` rules and raises
`ConfigError` naming the full key, e.g. ``data.batch_size: must be an integer >= 1, got 0``.
A key absent from the config (or still ``???``) is skipped: tagging and classification
configs differ. The encoder is then built once on the ``meta`` device (no memory, no
weights), so its own checks (unknown cell or merge, per-layer list lengths, ``none`` before
the last layer, ``impl``) run here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from birnn.data.datamodule import UNKNOWN_LABELS
from birnn.data.sources import FORMATS
from birnn.encoder import BiRNN
from birnn.errors import ConfigError
from birnn.metrics.spans import SCHEMES
from birnn.models.base import DROPOUT_KINDS, OPTIMIZERS, SCHEDULERS
from birnn.models.classifier import POOLINGS

MAX_SEED = 2**32 - 1  # numpy's bound, which Lightning's seed_everything enforces
_ABSENT = object()


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _ints(minimum: int, none: bool = False, also: tuple = ()) -> tuple[Callable, str]:
    def test(v):
        return (none and v is None) or (_int(v) and (v >= minimum or v in also))
    what = " or ".join([*map(str, also), f"an integer >= {minimum}"])
    return test, ("null or " if none else "") + what


def _nums(low: float, high: float | None = None, open_low: bool = False,
          none: bool = False) -> tuple[Callable, str]:
    def test(v):
        if v is None:
            return none
        return _num(v) and (v > low if open_low else v >= low) and (high is None or v < high)
    what = f"a number {'>' if open_low else '>='} {low:g}"
    if high is not None:
        what = f"a number in {'(' if open_low else '['}{low:g}, {high:g})"
    return test, ("null or " if none else "") + what


def _one_of(choices: Sequence[str]) -> tuple[Callable, str]:
    return (lambda v: v in choices), f"one of {', '.join(choices)}"


def _hidden_size(v) -> bool:
    values = v if isinstance(v, list | tuple) else [v]
    return len(values) > 0 and all(_int(h) and h >= 1 for h in values)


BOOL = ((lambda v: isinstance(v, bool)), "true or false")
INT = (_int, "an integer")
RULES: list[tuple[str, tuple[Callable[[Any], bool], str]]] = [
    ("seed", ((lambda v: _int(v) and 0 <= v <= MAX_SEED), f"an integer in [0, {MAX_SEED}]")),
    ("resume", BOOL),
    ("model.embedding_dim", _ints(1)),
    ("model.dropout", _nums(0, 1)),
    ("model.pooling", _one_of(POOLINGS)),
    ("model.optimizer.name", _one_of(list(OPTIMIZERS))),
    ("model.optimizer.lr", _nums(0, open_low=True)),
    ("model.optimizer.weight_decay", _nums(0)),
    ("model.optimizer.momentum", _nums(0)),
    ("model.optimizer.fused", BOOL),
    ("model.dropout_kind", _one_of(DROPOUT_KINDS)),
    ("model.embedding_dropout", _nums(0, 1)),
    ("model.embeddings.freeze", BOOL),
    ("model.scheduler.name", _one_of(SCHEDULERS)),
    ("model.scheduler.warmup_steps", _ints(0)),
    ("model.scheduler.min_lr", _nums(0)),
    ("model.scheduler.factor", _nums(0, 1, open_low=True)),
    ("model.scheduler.patience", _ints(0)),
    ("model.scheduler.mode", _one_of(["min", "max"])),
    ("encoder.forget_bias", ((lambda v: v is None or _num(v)), "null or a finite number")),
    ("encoder.hidden_size", (_hidden_size, "an integer >= 1 or a list of them (one per layer)")),
    ("encoder.num_layers", _ints(1, none=True)),
    ("encoder.dropout", _nums(0, 1)),
    ("encoder.residual", BOOL),
    ("data.format", _one_of(["auto", *FORMATS])),
    ("data.scheme", _one_of(SCHEMES)),
    ("data.unknown_labels", _one_of(UNKNOWN_LABELS)),
    ("data.token_column", INT),
    ("data.tag_column", ((lambda v: v is None or _int(v)), "null or an integer")),
    ("data.lowercase", BOOL),
    ("data.min_freq", _ints(1)),
    ("data.max_length", _ints(1, none=True)),
    ("data.validation_fraction", _nums(0, 1, open_low=True)),
    ("data.batch_size", _ints(1)),
    ("data.eval_batch_size", _ints(1)),
    ("data.bucketing", BOOL),
    ("data.num_workers", _ints(0)),
    ("trainer.max_epochs", _ints(1, none=True, also=(-1,))),
    ("trainer.gradient_clip_val", _nums(0, none=True)),
]


def check_encoder(encoder: dict, input_size: int) -> None:
    """Build the encoder on the meta device so that a bad option fails before data is read."""
    try:
        with torch.device("meta"):
            BiRNN(input_size, **encoder)
    except ConfigError as e:
        raise ConfigError(f"encoder.{e}") from None
    except TypeError as e:
        raise ConfigError(f"encoder: {e}") from None


def validate_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` (naming the full key) for the first value of the wrong type or range.

    Interpolations are resolved; one that cannot be resolved raises OmegaConf's own error.
    """
    for key, (test, what) in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not test(value):
            raise ConfigError(f"{key}: must be {what}, got {value!r}")
    if OmegaConf.select(cfg, "encoder", default=None) is not None:
        encoder = OmegaConf.to_container(cfg.encoder, resolve=True)
        check_encoder(encoder, OmegaConf.select(cfg, "model.embedding_dim", default=100))
