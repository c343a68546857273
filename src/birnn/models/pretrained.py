"""Word vectors from a GloVe or word2vec text file, to initialise a word embedding table.

Format: one word per line followed by its numbers, separated by spaces (GloVe); word2vec's text
format adds a first line "COUNT DIM", which is recognised and skipped. Files ending in `.gz` are
read compressed. A word may itself contain spaces (some GloVe files have such entries): the
last DIM fields are the vector and the rest is the word.

Only words of the training vocabulary are looked up: the vocabulary is built on the training
split, so a word seen only in the file (or only in dev/test) stays <unk>. A vocabulary word
takes the vector of its exact spelling, else of its lower-cased spelling (GloVe 6B is lower
case); the rest keep their random initialisation.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import torch
from torch import nn

from birnn.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "model.embeddings.pretrained"


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


def read_vectors(path: str | Path, words: set[str], dim: int) -> dict[str, torch.Tensor]:
    """The vectors of `words` (and of their lower-cased forms) found in the file at `path`.

    Raises ConfigError when the file is missing, when its vectors are not `dim` wide (naming
    the width found), when a line has fewer than `dim` numbers, or when the vector of a
    wanted word does not parse (other words' numbers are not read).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{KEY}: no such file {path}")
    wanted = words | {w.lower() for w in words}
    found: dict[str, torch.Tensor] = {}
    checked = False
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").rstrip(" ").split(" ")
            if number == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                continue  # word2vec header "COUNT DIM"
            if len(fields) < 2:
                continue  # blank line
            if not checked:  # the first vector line gives the file's width
                width, checked = len(fields) - 1, True
                if width != dim and _trailing_numbers(fields) != dim:  # (not a spaced word)
                    raise ConfigError(
                        f"{KEY}: {path} has {width}-dimensional vectors but "
                        f"model.embedding_dim={dim}; set model.embedding_dim={width}")
            if len(fields) < dim + 1:
                raise ConfigError(f"{KEY}: {path} line {number}: {len(fields) - 1} numbers "
                                  f"after the word, expected {dim}")
            word = " ".join(fields[:-dim])
            if word not in wanted or word in found:
                continue
            try:
                found[word] = torch.tensor([float(x) for x in fields[-dim:]])
            except ValueError:
                raise ConfigError(f"{KEY}: {path} line {number}: not a word followed by "
                                  f"{dim} numbers") from None
    return found


def init_embedding(embedding: nn.Embedding, itos: list[str], path: str | Path,
                   skip: int = 2) -> int:
    """Copy the file's vectors into the rows of `embedding` for the words `itos` (row i is
    word itos[i]); the first `skip` rows (<pad>, <unk>) are left alone. Returns how many
    words took a vector, and logs the coverage."""
    dim = embedding.embedding_dim
    vectors = read_vectors(path, set(itos[skip:]), dim)
    hits = 0
    with torch.no_grad():
        for i, word in enumerate(itos[skip:], start=skip):
            vector = vectors.get(word)
            if vector is None:
                vector = vectors.get(word.lower())
            if vector is not None:
                embedding.weight[i] = vector.to(embedding.weight.dtype)
                hits += 1
    total = max(len(itos) - skip, 1)
    log.info("pretrained vectors: %s of %s vocabulary words (%.1f%%) from %s%s", f"{hits:,}",
             f"{total:,}", 100 * hits / total, path,
             "" if embedding.weight.requires_grad else " (frozen)")
    if hits == 0:
        log.warning("pretrained vectors: no vocabulary word was found in %s", path)
    return hits
