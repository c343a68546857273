"""The `data` group: one schema per data module class, chosen by the config's `_target_`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator, model_validator

from birnn.config.base import KeyedError, Schema
from birnn.config.calls import TargetSchema
from birnn.config.types import Bool, Choice, Int, Number, OptionalText, Text
from birnn.data.augment import KINDS
from birnn.data.columns import BAD_LINES
from birnn.data.datamodule import SPLITS, UNKNOWN_LABELS
from birnn.data.sources import FORMATS
from birnn.tags import SCHEMES

Files = dict[str, OptionalText]  # split name -> file name (or Hub split name)


class HubSchema(Schema):
    path: Text
    name: OptionalText = None
    revision: OptionalText = None


class FieldsSchema(Schema):
    """Field names in JSONL/CSV/Parquet files and on the Hub; `text` may list candidates."""

    tokens: Text = "tokens"
    tags: Text = "tags"
    text: Text | list[Text] = "text"
    label: Text = "label"


Share = Number(0, 1, open_high=False)  # a probability that may be 1


class NoiseSchema(Schema):
    """How much the character perturbations change (`birnn.data.augment`); also the
    robustness report's `noise` (`evaluate.py robustness=true`)."""

    # character error rate of typo and keyboard; textnoisr's swaps cannot reach above 0.5
    rate: Number(0, 0.5, open_low=True, open_high=False) = 0.05
    ocr_rate: Number(0, 1, open_low=True, open_high=False) = 0.3  # of the confusable places


class AugmentSchema(NoiseSchema):
    """`data.augment` (`birnn.data.augment`): per training sentence and epoch, the
    probability of each perturbation; a sentence gets at most one, so they add up to the
    fraction of sentences perturbed. All zero (the default): batches as read."""

    lower: Share = 0.0
    upper: Share = 0.0
    title: Share = 0.0
    typo: Share = 0.0
    keyboard: Share = 0.0
    ocr: Share = 0.0

    @model_validator(mode="after")
    def _one_per_sentence(self):
        total = sum(getattr(self, kind) for kind in KINDS)
        if total > 1 + 1e-9:
            raise KeyedError("", f"the probabilities of {', '.join(KINDS)} add up to "
                             f"{total:g}: at most 1 (a sentence gets one perturbation)")
        return self


class DataSchema(TargetSchema):
    """What tagging and sentence-classification data share (`SequenceDataModule`)."""

    task: ClassVar[str] = ""
    dir: OptionalText = None
    format: Choice("auto", *FORMATS) = "auto"
    files: Files = {}
    hub: HubSchema | None = None
    splits: Files = {}
    fields: FieldsSchema = FieldsSchema()
    token_column: Int() = 0
    tag_column: Int(optional=True) = -1
    lowercase: Bool = False
    min_freq: Int(1) = 1
    max_length: Int(1, optional=True) = None
    validation_fraction: Number(0, 1, open_low=True) = 0.1
    batch_size: Int(1) = 32
    eval_batch_size: Int(1) = 128
    bucketing: Bool = True
    num_workers: Int(0) = 0
    seed: Int(0) = 0
    augment: AugmentSchema | None = None
    bad_lines: Choice(*BAD_LINES) = "error"  # a malformed line of a column file

    @field_validator("files", "splits")
    @classmethod
    def _known_splits(cls, names: dict) -> dict:
        unknown = sorted(set(names) - set(SPLITS))
        if unknown:
            raise KeyedError(unknown[0], f"unknown split (valid: {', '.join(SPLITS)})")
        return names


class TaggingDataSchema(DataSchema):
    """`birnn.data.TaggingDataModule`."""

    task: ClassVar[str] = "tagging"
    scheme: Choice(*SCHEMES) = "iob2"
    unknown_labels: Choice(*UNKNOWN_LABELS) = "error"
    # true/false, or the model's character-encoder kind (`${model.char.kind}`)
    chars: Choice(True, False, "none", "cnn", "birnn", optional=True) = False


class ClassificationDataSchema(DataSchema):
    """`birnn.data.ClassificationDataModule`."""

    task: ClassVar[str] = "classification"
