"""The base of every config schema, and the one place that turns a schema error into a
one-line `ConfigError` naming the full key.

Each config group (`encoder`, `data`, `model`, ...) has a pydantic model in this package.
`check(Schema, values, prefix)` validates a plain dict against it before any work starts;
constructors then trust their arguments. The same schema checks the keyword arguments of
Python users of `birnn.BiRNN`, so there is one source for every rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from birnn.errors import ConfigError


class Schema(BaseModel):
    """A config group: unknown keys are errors, and values are not coerced ("1" is no int,
    true is no number), so a typo on the command line fails instead of running."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


S = TypeVar("S", bound=Schema)


def check(schema: type[S], values: Mapping, prefix: str = "") -> S:
    """`values` validated by `schema`; raises `ConfigError` for the first bad value, as
    ``prefix.key: message, got value``."""
    try:
        return schema.model_validate(dict(values))
    except ValidationError as e:
        raise ConfigError(describe(e, prefix)) from None


def describe(error: ValidationError, prefix: str = "") -> str:
    """One line for the first error of `error`: the full dotted key, what the value must be,
    and the value given."""
    first = error.errors()[0]
    # pydantic adds the tried type of a union (`int`, `list[int]`) to the location: only the
    # field names and list positions are part of the key
    names = [str(p) for p in first["loc"] if isinstance(p, int) or p in _fields(error)]
    key = ".".join([p for p in (prefix, *names) if p]) or prefix or "config"
    message = first["msg"]
    if message.startswith("Value error, "):  # a validator's own message
        message = message.removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {message[0].lower() + message[1:]}, got {first.get('input')!r}"


def _fields(error: ValidationError) -> set[str]:
    # every field name of every schema (a location part that is a field, not a type name)
    return {name for cls in _all_schemas() for name in cls.model_fields}


def _all_schemas() -> list[type[Schema]]:
    seen, todo = [], [Schema]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen
