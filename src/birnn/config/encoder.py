"""The `encoder` config group: every keyword argument of `birnn.BiRNN` but `input_size`.

One schema checks both the composed config (``encoder.merge=max`` on the command line) and
Python calls (``BiRNN(100, merge="max")``), so both give the same one-line error:
``encoder.merge: must be one of concat, sum, mul, ave, none (...), got 'max'``. What
`auto` then picks at run time is `birnn.encoder.policy`'s business, not the schema's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from birnn.config.base import Schema
from birnn.errors import ConfigError

CELL_NAMES = ("lstm", "gru", "rnn")
MERGES = ("concat", "sum", "mul", "ave", "none")
IMPLS = ("auto", "fused", "layered")
RAGGED = ("auto", "pack", "reverse")
GRUS = ("auto", "torch", "birnn")  # the recurrence of GRU layers, and of LSTM layers
DIRECTIONS = ("auto", "serial", "concurrent")
INITS = ("default", "orthogonal")
DROPOUT_KINDS = ("standard", "locked")

CellName = Literal["lstm", "gru", "rnn"]
MergeName = Literal["concat", "sum", "mul", "ave", "none"]
PER_LAYER = ("cell", "hidden_size", "merge")


class EncoderSchema(Schema):
    """The encoder's options, checked once; `BiRNN` documents what each one does.

    `cell`, `hidden_size` and `merge` take one value for every layer or a list with one
    entry per layer; `num_layers` defaults to the length of such a list, else 1. The
    ``cells``, ``hidden_sizes`` and ``merges`` properties give the per-layer lists.

    Rules across fields are checked by the validator of the field they report (fields are
    validated in the order below, so each sees the ones above it in ``info.data``).
    """

    num_layers: int = 1
    cell: CellName | list[CellName] = "lstm"
    hidden_size: int | list[int] = 128
    merge: MergeName | list[MergeName] = "concat"
    dropout: float = 0.0
    dropout_kind: Literal["standard", "locked"] = "standard"
    residual: bool = False
    init: Literal["default", "orthogonal"] = "default"
    forget_bias: float | None = None
    ragged: Literal["auto", "pack", "reverse"] = "auto"
    gru: Literal["auto", "torch", "birnn"] = "auto"
    lstm: Literal["auto", "torch", "birnn"] = "auto"
    directions: Literal["auto", "serial", "concurrent"] = "auto"
    impl: Literal["auto", "fused", "layered"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _default_num_layers(cls, values):
        # num_layers absent or null: the length of the per-layer lists, else one layer
        if isinstance(values, dict) and values.get("num_layers") is None:
            lengths = [len(v) for k in PER_LAYER if _is_list(v := values.get(k))]
            values = {**values, "num_layers": max(lengths, default=1)}
        return values

    @field_validator("num_layers", mode="before")
    @classmethod
    def _num_layers(cls, value):
        if not _is_int(value, 1):
            raise ValueError("must be an integer >= 1 (or null: the per-layer lists' length)")
        return value

    @field_validator("cell", mode="before")
    @classmethod
    def _cell(cls, value, info: ValidationInfo):
        return _per_layer(_names(value, CELL_NAMES), info)

    @field_validator("hidden_size", mode="before")
    @classmethod
    def _hidden_size(cls, value, info: ValidationInfo):
        values = list(value) if _is_list(value) else [value]
        if not values or not all(_is_int(v, 1) for v in values):
            raise ValueError("must be an integer >= 1, or a list of them (one per layer)")
        return _per_layer(list(value) if _is_list(value) else value, info)

    @field_validator("merge", mode="before")
    @classmethod
    def _merge(cls, value, info: ValidationInfo):
        value = _per_layer(_names(value, MERGES), info)
        if "none" in _expand(value, info.data.get("num_layers", 1))[:-1]:
            raise ValueError("'none' is only allowed on the last layer: the next layer "
                             "cannot take an unmerged (forward, backward) pair as input")
        return value

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout(cls, value):
        if not (_is_number(value) and 0 <= value < 1):
            raise ValueError("must be in [0, 1)")
        return float(value)

    @field_validator("residual", mode="before")
    @classmethod
    def _residual(cls, value, info: ValidationInfo):
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        layers = _layers(info.data)
        if value and layers and not any(_residuals(*layers, residual=True)):
            raise ValueError(
                f"no layer's input has its output's width (hidden_size={layers[1]}, "
                f"merge={layers[2]}); a residual connection needs equal widths, e.g. two or "
                "more layers of one width merged by sum/ave/mul")
        return value

    @field_validator("forget_bias", mode="before")
    @classmethod
    def _forget_bias(cls, value):
        if value is None:
            return None
        if not _is_number(value):
            raise ValueError("must be a finite number or null")
        return float(value)

    @field_validator("dropout_kind", "init", "ragged", "gru", "lstm", "directions", "impl",
                     mode="before")
    @classmethod
    def _choice(cls, value, info: ValidationInfo):
        name, data = info.field_name, info.data
        choices = {"impl": IMPLS, "dropout_kind": DROPOUT_KINDS, "init": INITS,
                   "ragged": RAGGED, "gru": GRUS, "lstm": GRUS,
                   "directions": DIRECTIONS}[name]
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        if value in ("concurrent", "birnn") and data.get("ragged") == "pack":
            other = f", or {name}=torch" if name in ("gru", "lstm") else ""
            raise ValueError(f"'{value}' runs batches padded, which ragged=pack rules out; "
                             f"use ragged=auto or ragged=reverse{other}")
        layers = _layers(data)
        if value == "fused" and name == "impl" and layers and not _fusable(
                *layers, _residuals(*layers, residual=data.get("residual", False)),
                data.get("dropout_kind")):
            raise ValueError(
                "'fused' needs one cell type and width for all layers, 'concat' between "
                f"layers, no residual and standard dropout (cell={layers[0]}, hidden_size="
                f"{layers[1]}, merge={layers[2]}, residual={data.get('residual')}, "
                f"dropout_kind={data.get('dropout_kind')}); use impl=auto or impl=layered")
        return value

    # ------------------------------------------------------------------ derived, per layer

    @cached_property
    def cells(self) -> list[str]:
        return _expand(self.cell, self.num_layers)

    @cached_property
    def hidden_sizes(self) -> list[int]:
        return _expand(self.hidden_size, self.num_layers)

    @cached_property
    def merges(self) -> list[str]:
        return _expand(self.merge, self.num_layers)

    @cached_property
    def residuals(self) -> list[bool]:
        """Per layer, whether its input is added to its merged output: with `residual`, each
        layer after the first whose output has its input's width (`none` never)."""
        return _residuals(self.cells, self.hidden_sizes, self.merges, self.residual)

    @cached_property
    def fusable(self) -> bool:
        """Whether one multi-layer ``nn.LSTM/GRU/RNN(bidirectional=True)`` call computes
        this stack: one cell and width, `concat` between layers (`concat` or `none` last),
        no residual, standard dropout."""
        return _fusable(self.cells, self.hidden_sizes, self.merges, self.residuals,
                        self.dropout_kind)


# ------------------------------------------------------------- checks and expansions


def check_int(name: str, value, minimum: int) -> None:
    """Raise ConfigError unless `value` is an int >= minimum (bools are not ints here)."""
    if not _is_int(value, minimum):
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}")


def check_probability(name: str, value) -> None:
    """Raise ConfigError unless `value` is a number in [0, 1) (a dropout rate)."""
    if not (_is_number(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name}: must be in [0, 1), got {value!r}")


def _per_layer(value, info: ValidationInfo):
    """`value` (one value or a list), checked against the stack's number of layers."""
    num_layers = info.data.get("num_layers")
    if _is_list(value) and num_layers is not None and len(value) != num_layers:
        raise ValueError(f"{len(value)} entries but the stack has {num_layers} layers "
                         "(num_layers); give one value for all layers, or one per layer")
    return value


def _layers(data: dict) -> tuple[list, list, list] | None:
    """The per-layer cells, hidden sizes and merges from validated fields (None where one
    of them failed)."""
    if not all(k in data for k in ("num_layers", *PER_LAYER)):
        return None
    return tuple(_expand(data[k], data["num_layers"]) for k in PER_LAYER)


def _residuals(cells: list, hidden_sizes: list, merges: list, residual: bool) -> list[bool]:
    widths = [2 * h if m == "concat" else h for h, m in zip(hidden_sizes, merges, strict=True)]
    return [residual and k > 0 and m != "none" and widths[k] == widths[k - 1]
            for k, m in enumerate(merges)]


def _fusable(cells: list, hidden_sizes: list, merges: list, residuals: list[bool],
             dropout_kind: str | None) -> bool:
    return (not any(residuals) and dropout_kind == "standard"
            and len(set(cells)) == 1 and len(set(hidden_sizes)) == 1
            and all(m == "concat" for m in merges[:-1]) and merges[-1] in ("concat", "none"))


def _is_list(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _names(value, choices: Sequence[str]):
    """One name or a per-layer list of names from `choices`, lower-cased."""
    def name(v, in_list: bool):
        if not isinstance(v, str) or v.lower() not in choices:
            if in_list:  # say which entry
                raise ValueError(f"unknown {v!r}: each entry must be one of "
                                 f"{', '.join(choices)}")
            raise ValueError(f"must be one of {', '.join(choices)}, or a list of them (one "
                             "per layer)")
        return v.lower()

    return [name(v, True) for v in value] if _is_list(value) else name(value, False)


def _expand(value, num_layers: int) -> list:
    return list(value) if _is_list(value) else [value] * num_layers
