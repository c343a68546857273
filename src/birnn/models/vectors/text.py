"""Reading a GloVe or word2vec text file: every word and its vector, in file order.

Format: one word per line followed by its numbers, separated by spaces (GloVe); word2vec's
text format adds a first line "COUNT DIM", which is recognised and skipped. Files ending in
`.gz` are read compressed. A word may itself contain spaces (some GloVe files have such
entries): the last DIM fields are the vector and the rest is the word. The first line's
trailing numbers give DIM. A word listed twice keeps its first vector.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from birnn.errors import ConfigError

KEY = "model.embeddings.pretrained"
CHUNK = 65536  # rows parsed into one preallocated block


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _trailing_numbers(fields: list[str]) -> int:
    """How many of the last fields parse as numbers (the first one is always a word)."""
    count = 0
    for field in reversed(fields[1:]):
        try:
            float(field)
        except ValueError:
            break
        count += 1
    return count


def width_error(path, width: int, dim: int) -> ConfigError:
    return ConfigError(f"{KEY}: {path} has {width}-dimensional vectors but "
                       f"model.embedding_dim={dim}; set model.embedding_dim={width}")


def read_text(path: Path, dim: int | None = None) -> tuple[list[str], np.ndarray]:
    """The words of the file at `path` and their vectors (N, DIM) float32, in file order.

    Raises ConfigError naming the line when a line has fewer numbers than the first one or
    a number does not parse, and (with `dim`) as soon as the first line shows vectors that
    are not `dim` wide.
    """
    words: list[str] = []
    seen: set[str] = set()
    blocks: list[np.ndarray] = []
    block = np.empty((0, 0), np.float32)
    width = filled = 0
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip().split(" ")
            if number == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                continue  # word2vec header "COUNT DIM"
            if len(fields) < 2:
                continue  # blank line
            if not width:  # the first vector line gives the file's width
                width = _trailing_numbers(fields)
                if not width:
                    raise ConfigError(f"{KEY}: {path} line {number}: not a word followed by "
                                      "numbers")
                if dim is not None and width != dim:
                    raise width_error(path, width, dim)
            if len(fields) < width + 1:
                raise ConfigError(f"{KEY}: {path} line {number}: {len(fields) - 1} numbers "
                                  f"after the word, expected {width}")
            word = " ".join(fields[:-width])
            if word in seen:
                continue
            if filled == len(block):
                blocks.append(block := np.empty((CHUNK, width), np.float32))
                filled = 0
            try:
                block[filled] = fields[-width:]
            except ValueError:
                raise ConfigError(f"{KEY}: {path} line {number}: not a word followed by "
                                  f"{width} numbers") from None
            filled += 1
            seen.add(word)
            words.append(word)
    if not words:
        raise ConfigError(f"{KEY}: {path} holds no vectors")
    matrix = np.concatenate(blocks)[: len(words)]  # (N, width)
    return words, matrix
