"""Schemas of configs that Hydra instantiates (`_target_`): besides the keys a schema types,
every key must be an argument of the target, so a misspelt option fails before work starts."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, Field, model_validator

from birnn.config.base import KeyedError, Schema
from birnn.config.optim import locate, parameters
from birnn.config.types import Bool, Choice, Text

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_")


class TargetSchema(Schema):
    """A config Hydra instantiates: `_target_` and the Hydra keys that steer it."""

    target: Text = Field(alias="_target_")
    recursive: Bool = Field(True, alias="_recursive_")
    convert: Choice("none", "partial", "object", "all") = Field("none", alias="_convert_")


class CallSchema(TargetSchema):
    """`_target_` and its keyword arguments; the untyped ones are checked by the target."""

    model_config = ConfigDict(extra="allow")  # merged with Schema's: only this differs
    kind: ClassVar[str] = "class"
    example: ClassVar[str] = ""
    # arguments the caller supplies itself, and keys that are not the target's
    supplied: ClassVar[tuple[str, ...]] = ()
    ours: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _arguments_exist(self):
        try:
            target = locate(self.target)
        except ImportError:
            example = f", e.g. {self.example}" if self.example else ""
            raise KeyedError("_target_", f"cannot import {self.target!r} "
                             f"(a {self.kind}{example})") from None
        self.check_target(target)
        accepted = parameters(target)
        if "*" in accepted:
            return self
        fields = type(self).model_fields
        given = [fields[k].alias or k if k in fields else k
                 for k in (*self.model_fields_set, *(self.model_extra or {}))]
        for key in given:
            if key not in (*HYDRA_KEYS, *self.ours) and key not in accepted:
                valid = sorted(accepted - {*self.supplied})
                raise KeyedError(key, f"not an argument of {self.target} "
                                 f"(valid: {', '.join(valid)})")
        return self

    def check_target(self, target: Any) -> None:
        """Raise `KeyedError` unless `target` is the right kind of callable."""

    def subclass_of(self, target: Any, base: type) -> None:
        """Raise `KeyedError` unless `target` is `base` or a subclass of it."""
        if not (isinstance(target, type) and issubclass(target, base)):
            raise KeyedError("_target_", f"{self.target} is not a {self.kind}")


class PartialSchema(CallSchema):
    """A `_partial_: true` config, completed by the code that uses it."""

    partial: Choice(True) = Field(alias="_partial_")
