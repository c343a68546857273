"""Value types shared by the config schemas, each with the one-line message a user sees.

Every type validates with a plain function, so a value is never coerced ("1" is no int, true
is no number) and the message says what the value must be, in the words the errors use:
``data.batch_size: must be an integer >= 1, got 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import PlainValidator


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML's true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _typed(hint: Any, test: Callable[[Any], bool], what: str) -> Any:
    def validate(value: Any) -> Any:
        if not test(value):
            raise ValueError(f"must be {what}")
        return value

    return Annotated[hint, PlainValidator(validate)]


def _or_null(test: Callable[[Any], bool], what: str, optional: bool):
    if not optional:
        return test, what
    return (lambda v: v is None or test(v)), f"null or {what}"


def Int(minimum: int | None = None, maximum: int | None = None, *, also: tuple = (),
        optional: bool = False) -> Any:
    """An integer in [minimum, maximum], or one of `also` (e.g. -1 for "no limit")."""
    if maximum is not None:
        what = f"an integer in [{minimum}, {maximum}]"
    else:
        what = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    what = " or ".join([*map(str, also), what])

    def test(v):
        return is_int(v) and (v in also or ((minimum is None or v >= minimum)
                                             and (maximum is None or v <= maximum)))

    return _typed(int | None if optional else int, *_or_null(test, what, optional))


def Number(low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = True, optional: bool = False) -> Any:
    """A finite number >= low (> low with `open_low`), below `high` (up to it without
    `open_high`)."""
    if low is None:
        what = "a finite number"
    elif high is None:
        what = f"a number {'>' if open_low else '>='} {low:g}"
    else:
        what = f"a number in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def test(v):
        if not is_number(v):
            return False
        above = low is None or (v > low if open_low else v >= low)
        below = high is None or (v < high if open_high else v <= high)
        return above and below

    return _typed(float | None if optional else float, *_or_null(test, what, optional))


def Choice(*values: Any, optional: bool = False) -> Any:
    """One of `values` (compared by value and type: true is not 1)."""
    names = ", ".join("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                      for v in values)

    def test(v):
        return any(v == c and type(v) is type(c) for c in values)

    what = names if len(values) == 1 else f"one of {names}"
    return _typed(Any, *_or_null(test, what, optional))


Bool = _typed(bool, lambda v: isinstance(v, bool), "true or false")
Probability = Number(0, 1)  # a dropout rate: 1 would drop everything
Text = _typed(str, lambda v: isinstance(v, str), "a string")
OptionalText = _typed(str | None, lambda v: v is None or isinstance(v, str), "null or a string")
