"""CoNLL-style column files.

One token per line, columns separated by any run of whitespace, a blank line between
sentences, ``-DOCSTART-`` lines skipped, CRLF accepted. Any number of columns; the tag is in
the last column unless told otherwise. Every line of a file must have the same number of
columns as its first token line: a line that differs (or does not decode) is reported with its
file and line number rather than guessed at. With ``bad_lines="skip"`` the sentence holding
such a line is left out instead, and its place is recorded for the caller to report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from birnn.errors import DataError

DOCSTART = "-DOCSTART-"
BAD_LINES = ("error", "skip")  # what a malformed line does: stop the run, or drop its sentence


def read_column_file(
    path: str | Path,
    token_column: int = 0,
    tag_column: int | None = -1,
    encoding: str = "utf-8",
    bad_lines: str = "error",
    skipped: list[int] | None = None,
) -> Iterator[dict[str, list[str]]]:
    """Yield one ``{"tokens": [...], "tags": [...]}`` per sentence of a column file.

    Args:
        path: the file.
        token_column: index of the token column (negative counts from the end).
        tag_column: index of the tag column; ``None`` for unlabelled text (tags are empty).
        encoding: text encoding; a line that does not decode is reported with its number.
        bad_lines: ``error``: a malformed line raises; ``skip``: its sentence is left out.
        skipped: with ``skip``, receives the number of the first malformed line of each
            sentence left out.

    Raises:
        DataError: unreadable file, or (with ``bad_lines="error"``) an undecodable line or a
            line whose column count differs from the file's first token line (file and line
            number in the message); a first token line without the columns asked for.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path) from None
    with handle:
        yield from read_columns(handle, path, token_column, tag_column, encoding, bad_lines,
                                skipped)


def read_columns(
    lines: Iterable[bytes | str],
    name: str | Path,
    token_column: int = 0,
    tag_column: int | None = -1,
    encoding: str = "utf-8",
    bad_lines: str = "error",
    skipped: list[int] | None = None,
) -> Iterator[dict[str, list[str]]]:
    """`read_column_file` for lines already at hand (bytes, decoded with `encoding`, or text,
    e.g. from stdin); `name` is the source named in errors."""
    ncols = None
    tokens: list[str] = []
    tags: list[str] = []
    bad: int | None = None  # the first malformed line of the sentence being read
    for lineno, raw in enumerate(lines, start=1):
        try:
            line = raw.decode(encoding) if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as e:
            problem = DataError(
                f"not valid {encoding} (byte {raw[e.start]:#04x} at column {e.start + 1})",
                name,
                lineno,
            )
            if bad_lines == "error":
                raise problem from None
            bad = bad or lineno
            continue
        fields = line.split()
        if not fields:
            if bad is not None:
                if skipped is not None:
                    skipped.append(bad)
            elif tokens:
                yield {"tokens": tokens, "tags": tags}
            tokens, tags, bad = [], [], None
            continue
        if fields[0] == DOCSTART:
            continue
        if ncols is None:
            ncols = len(fields)
            _check_columns(ncols, token_column, tag_column, name, lineno)
        elif len(fields) != ncols:
            if bad_lines == "error":
                raise DataError(
                    f"{len(fields)} columns where the file's first token line has {ncols}: "
                    f"{line.rstrip()!r}",
                    name,
                    lineno,
                )
            bad = bad or lineno
            continue
        tokens.append(fields[token_column])
        if tag_column is not None:
            tags.append(fields[tag_column])
    if bad is not None:
        if skipped is not None:
            skipped.append(bad)
    elif tokens:
        yield {"tokens": tokens, "tags": tags}


def _check_columns(ncols, token_column, tag_column, path, lineno) -> None:
    for name, index in (("token_column", token_column), ("tag_column", tag_column)):
        if index is not None and not -ncols <= index < ncols:
            raise DataError(f"{name}={index} but the line has {ncols} columns", path, lineno)
    if tag_column is not None and ncols < 2:
        raise DataError(
            "one column only: a labelled column file needs a token and a tag column", path, lineno
        )


def write_column_file(path: str | Path, sentences, columns=("tokens", "tags")) -> None:
    """Write sentences (dicts of equal-length lists) as a space-separated column file."""
    with Path(path).open("w", encoding="utf-8") as f:
        for sentence in sentences:
            for row in zip(*(sentence[c] for c in columns), strict=True):
                f.write(" ".join(row) + "\n")
            f.write("\n")
