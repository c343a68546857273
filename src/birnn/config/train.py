"""The top level of the training config, and `validate(cfg)`: the composed config checked
once, group by group, before any data is read or any model is built. The first bad value
raises `ConfigError` naming its full key (``data.batch_size: must be an integer >= 1, got
0``)."""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from birnn.config.base import Schema, check
from birnn.config.data import ClassificationDataSchema, DataSchema, TaggingDataSchema
from birnn.config.encoder import EncoderSchema
from birnn.config.model import ClassifierSchema, ModelSchema, TaggerSchema
from birnn.config.optim import locate
from birnn.config.trainer import LoggerSchema, TrainerSchema, callback_schema
from birnn.config.types import Bool, Choice, Int, OptionalText, Text
from birnn.errors import ConfigError

TASKS = ("tagging", "classification")
MAX_SEED = 2**32 - 1  # numpy's bound, which Lightning's seed_everything enforces


class PathsSchema(Schema):
    root_dir: Text
    output_dir: Text


class TrainSchema(Schema):
    """The top level of `conf/train.yaml`; each group below has its own schema."""

    task: Choice(*TASKS)
    seed: Int(0, MAX_SEED) = 42
    monitor: Text
    monitor_mode: Choice("min", "max") = "max"
    resume: Bool = False
    ckpt_path: OptionalText = None
    data: Any
    model: Any
    encoder: Any
    trainer: Any
    callbacks: dict[str, Any] | None = None
    logger: dict[str, Any] | None = None
    paths: PathsSchema


def validate(cfg: DictConfig) -> TrainSchema:
    """Check every group of a composed training config; raise `ConfigError` for the first
    bad value. Interpolations are resolved; a required value still `???` raises OmegaConf's
    `MissingMandatoryValue`, which the command lines report as ``KEY is required``."""
    values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    top = check(TrainSchema, values)
    # the model first: data.chars interpolates model.char.kind, whose bad value would
    # otherwise be reported under data.chars
    models = {"birnn.models.TokenTagger": TaggerSchema,
              "birnn.models.SentenceClassifier": ClassifierSchema}
    model_schema = _schema_for(values["model"], "model", models)
    base = next(path for path, schema in models.items() if schema is model_schema)
    check(model_schema, _base_keys(values["model"], base), "model")
    data_schema = type(validate_data(values["data"]))
    for group, schema in (("data", data_schema), ("model", model_schema)):
        if schema.task != top.task:
            raise ConfigError(
                f"{group}: {values[group]['_target_']} is for {schema.task}, but "
                f"task={top.task} (choose a {group} config for {top.task}, or "
                f"task={schema.task})")
    check(EncoderSchema, values["encoder"], "encoder")
    check(TrainerSchema, values["trainer"], "trainer")
    for name, entry in (values.get("callbacks") or {}).items():
        if entry is not None:
            check(callback_schema(_target(entry, f"callbacks.{name}")), entry,
                  f"callbacks.{name}")
    for name, entry in (values.get("logger") or {}).items():
        if entry is not None:
            check(LoggerSchema, entry, f"logger.{name}")
    return top


def validate_data(data: DictConfig | dict) -> DataSchema:
    """The `data` group alone (what `evaluate.py` reads besides a checkpoint), checked by the
    schema of its `_target_`'s class."""
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True, throw_on_missing=True)
    schema = _schema_for(data, "data", {
        "birnn.data.TaggingDataModule": TaggingDataSchema,
        "birnn.data.ClassificationDataModule": ClassificationDataSchema})
    return check(schema, data, "data")


def _target(entry: Any, key: str):
    if not isinstance(entry, dict) or not isinstance(entry.get("_target_"), str):
        raise ConfigError(f"{key}._target_: required (the class to build), got {entry!r}")
    try:
        return locate(entry["_target_"])
    except ImportError:
        raise ConfigError(f"{key}._target_: cannot import {entry['_target_']!r}") from None


def _base_keys(entry: dict, base: str) -> dict:
    """`entry` less the arguments that a subclass's constructor adds to those of the class
    `base` (a user's model subclass checks its own extra arguments)."""
    def arguments(cls) -> set[str]:
        return set(inspect.signature(cls.__init__).parameters)
    added = arguments(locate(entry["_target_"])) - arguments(locate(base))
    return {k: v for k, v in entry.items() if k not in added}


def _schema_for(entry: Any, key: str, schemas: dict[str, type[Schema]]):
    """The schema whose class (a key of `schemas`) `entry`'s `_target_` is, or subclasses."""
    target = _target(entry, key)
    for path, schema in schemas.items():
        if isinstance(target, type) and issubclass(target, locate(path)):
            return schema
    raise ConfigError(f"{key}._target_: {entry['_target_']} is not one of "
                      f"{', '.join(schemas)} (or a subclass)")


__all__ = ["TASKS", "DataSchema", "ModelSchema", "TrainSchema", "validate", "validate_data"]
