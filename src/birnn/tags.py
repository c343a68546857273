"""What tokens are tagged with: entity tag schemes, the spans a tag sequence holds, and
word shapes (the casing feature).

Span extraction follows the CoNLL-2000/2003 evaluation script ``conlleval`` (its
``startOfChunk``/``endOfChunk`` rules), which reads IOB1, IOB2 and IOBES tags with one set of
rules. That makes scores comparable with published CoNLL numbers and with ``seqeval`` in its
default mode, and it means an ill-formed prediction such as ``O I-PER`` still yields a span
instead of being silently dropped.

The data package converts tags with these helpers, the metrics score spans with them and the
models read ``IGNORE_INDEX`` and ``CASING`` from here, so none of them imports another.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

__all__ = ["CASING", "IGNORE_INDEX", "SCHEMES", "convert_tags", "get_spans", "parse_tag",
           "spans_of_parsed", "word_shape"]

IGNORE_INDEX = -100  # target value of padding positions (cross-entropy's ignore_index)

SCHEMES = ("iob1", "iob2", "iobes")

_PREFIXES = frozenset("BIES")
# Tag prefixes each scheme may contain; "O" is allowed everywhere.
_SCHEME_PREFIXES = {"iob1": frozenset("BI"), "iob2": frozenset("BI"), "iobes": frozenset("BIES")}

# (prefix, type) of a tag; "O" parses to ("O", "") so no entity type ever equals it.
_Parsed = tuple[str, str]
_OUTSIDE: _Parsed = ("O", "")


@lru_cache(maxsize=4096)
def parse_tag(tag: str) -> _Parsed:
    if tag == "O":
        return _OUTSIDE
    # Split on the first hyphen only, so types such as "geo-loc" survive intact.
    prefix, sep, type_ = tag.partition("-") if isinstance(tag, str) else ("", "", "")
    if not sep or prefix not in _PREFIXES or not type_:
        raise ValueError(
            f"invalid tag {tag!r}: expected 'O' or PREFIX-TYPE with PREFIX in B, I, E, S"
        )
    return prefix, type_


def _ends(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
    # conlleval's endOfChunk, minus its bracket and "." tags, which no scheme here uses.
    if prev_prefix in ("E", "S"):
        return True
    if prev_prefix in ("B", "I"):
        return prefix in ("B", "S", "O") or prev_type != type_
    return False


def _starts(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
    # conlleval's startOfChunk: I- and E- continue a chunk only after B-/I- of the same type.
    if prefix in ("B", "S"):
        return True
    if prefix in ("I", "E"):
        return prev_prefix not in ("B", "I") or prev_type != type_
    return False


def spans_of_parsed(parsed: Sequence[_Parsed]) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    start = -1
    prev_prefix, prev_type = _OUTSIDE
    for i, (prefix, type_) in enumerate(parsed):
        if start >= 0 and _ends(prev_prefix, prefix, prev_type, type_):
            spans.append((prev_type, start, i))
            start = -1
        if _starts(prev_prefix, prefix, prev_type, type_):
            start = i
        prev_prefix, prev_type = prefix, type_
    # The sentence end closes whatever chunk is still open, as an "O" would.
    if start >= 0:
        spans.append((prev_type, start, len(parsed)))
    return spans


def get_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Extracts the chunks of one sentence by the rules of ``conlleval``.

    The same rules read IOB1, IOB2 and IOBES: ``B-X`` always starts a chunk, ``S-X`` is a
    one-token chunk, ``E-X`` ends one, and an ``I-X`` (or ``E-X``) that does not follow a
    ``B-X``/``I-X`` of the same type starts a new chunk. The sentence end closes an open chunk.

    Args:
        tags: The sentence's tags, e.g. ``["B-PER", "I-PER", "O"]``. A type may contain
            hyphens: ``"B-geo-loc"`` has type ``"geo-loc"``.

    Returns:
        The chunks as ``(type, start, end)`` with ``end`` exclusive, in order of position.

    Raises:
        ValueError: A tag is neither ``"O"`` nor ``PREFIX-TYPE`` with ``PREFIX`` in B, I, E, S.

    Example:
        >>> get_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
        [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5)]
    """
    return spans_of_parsed([parse_tag(tag) for tag in tags])


def _check_scheme(name: str, role: str) -> str:
    if name not in SCHEMES:
        raise ValueError(f"unknown {role} scheme {name!r}; valid schemes: {', '.join(SCHEMES)}")
    return name


def _encode(spans: Sequence[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    tags = ["O"] * length
    prev_end, prev_type = -1, ""
    for type_, start, end in spans:
        if scheme == "iobes" and end - start == 1:
            tags[start] = f"S-{type_}"
        else:
            if scheme == "iob1":
                # IOB1 marks a chunk's first token B- only where it directly follows a chunk of
                # the same type; anywhere else I- alone already starts a chunk.
                adjacent = start == prev_end and type_ == prev_type
                first = "B" if adjacent else "I"
            else:
                first = "B"
            tags[start] = f"{first}-{type_}"
            for i in range(start + 1, end):
                tags[i] = f"I-{type_}"
            if scheme == "iobes":
                tags[end - 1] = f"E-{type_}"
        prev_end, prev_type = end, type_
    return tags


def convert_tags(tags: Sequence[str], source: str, target: str = "iob2") -> list[str]:
    """Converts one sentence's tags from one tagging scheme to another.

    The chunks are read with :func:`get_spans` and written back in ``target``, so
    ``get_spans`` gives the same chunks before and after. Ill-formed input (such as ``O I-X``
    in IOB2) is read as ``conlleval`` reads it and comes out well formed.

    Args:
        tags: The sentence's tags in scheme ``source``.
        source: The scheme of ``tags``: one of ``SCHEMES`` (``"iob1"``, ``"iob2"``,
            ``"iobes"``).
        target: The scheme to convert to, one of ``SCHEMES``.

    Returns:
        The tags in scheme ``target``, one per input tag.

    Raises:
        ValueError: An unknown scheme name, a malformed tag, or a tag whose prefix the
            ``source`` scheme does not use (``E-``/``S-`` in IOB1 or IOB2), which usually means
            the wrong ``source`` was given.

    Example:
        >>> convert_tags(["I-PER", "I-PER", "B-PER", "O"], "iob1", "iob2")
        ['B-PER', 'I-PER', 'B-PER', 'O']
    """
    _check_scheme(source, "source")
    _check_scheme(target, "target")
    parsed = [parse_tag(tag) for tag in tags]
    allowed = _SCHEME_PREFIXES[source]
    for tag, (prefix, _) in zip(tags, parsed, strict=True):
        if prefix != "O" and prefix not in allowed:
            raise ValueError(f"tag {tag!r} is not valid in the {source} scheme")
    return _encode(spans_of_parsed(parsed), len(tags), target)


# ------------------------------------------------------------------------------ word shapes

# word-shape ids of the casing feature; 0 is padding
CASING = ("<pad>", "lower", "upper", "title", "digit", "other")


def word_shape(token: str) -> int:
    """The casing class of a token (an index into `CASING`): all lower, all upper, title
    case, has a digit, other."""
    if any(c.isdigit() for c in token):
        return 4
    if token.islower():
        return 1
    if token.isupper():
        return 2
    if token.istitle():
        return 3
    return 5
