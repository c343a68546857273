"""The base of every config schema, and the one place that turns a schema error into a
one-line `ConfigError` naming the full key.

Each config group (`encoder`, `data`, `model`, ...) has a pydantic model in this package.
`check(Schema, values, prefix)` validates a plain dict against it before any work starts;
constructors then trust their arguments. The same schema checks the keyword arguments of
Python users of `birnn.BiRNN`, so there is one source for every rule.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from birnn.errors import ConfigError


class Schema(BaseModel):
    """A config group: unknown keys are errors, and values are not coerced ("1" is no int,
    true is no number), so a typo on the command line fails instead of running."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class KeyedError(ValueError):
    """Raised by a schema's own validator about one of its keys: `key` (relative to the
    schema) joins the location, so the message names the full key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


S = TypeVar("S", bound=Schema)


def check(schema: type[S], values: Mapping, prefix: str = "") -> S:
    """`values` validated by `schema`; raises `ConfigError` for the first bad value, as
    ``prefix.key: message, got value``."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: must be a mapping of keys to values, "
                          f"got {values!r}")
    try:
        return schema.model_validate(dict(values))
    except ValidationError as e:
        raise ConfigError(describe(e, prefix, schema)) from None


def describe(error: ValidationError, prefix: str = "", schema: type[Schema] | None = None) -> str:
    """One line for the first error of `error`: the full dotted key, what the value must be,
    and the value given (for an unknown key: the keys allowed there)."""
    first = error.errors()[0]
    # pydantic adds the tried type of a union (`int`, `list[int]`) to the location: only the
    # field names and list positions are part of the key
    names = [str(p) for p in first["loc"] if isinstance(p, int) or not _type_tag(p)]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, KeyedError):
        names.append(cause.key)
    key = ".".join([p for p in (prefix, *names) if p]) or prefix or "config"
    message = first["msg"]
    if message.startswith("Value error, "):  # a validator's own message
        message = message.removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        where = _schema_at(schema, names[:-1]) if schema else None
        valid = f" (valid: {', '.join(_keys(where))})" if where else ""
        return f"{key}: unknown key{valid}"
    if first["type"] == "missing":
        return f"{key}: required, but not given"
    if isinstance(cause, KeyedError):
        return f"{key}: {message}"
    return f"{key}: {message[0].lower() + message[1:]}, got {first.get('input')!r}"


def _keys(schema: type[Schema]) -> list[str]:
    return [f.alias or name for name, f in schema.model_fields.items()]


def _schema_at(schema: type[Schema], names: list[str]) -> type[Schema] | None:
    """The schema class found by following field `names` down from `schema`."""
    for name in names:
        field = next((f for n, f in schema.model_fields.items() if name in (n, f.alias)), None)
        if field is None:
            return None
        inner = [t for t in (field.annotation, *typing.get_args(field.annotation))
                 if isinstance(t, type) and issubclass(t, Schema)]
        if not inner:
            return None
        schema = inner[0]
    return schema


_TYPE_NAMES = frozenset({"int", "float", "str", "bool", "list", "dict", "tuple", "none",
                         "nullable", "literal", "union"})


def _type_tag(part: str) -> bool:
    # the tag of a union member (`int`, `list[int]`, `function-plain[validate()]`) or of a
    # schema class (`EMASchema`): where pydantic looked, not a key the user wrote
    return "[" in part or part.lower() in _TYPE_NAMES or part.endswith("Schema")
