"""Loading a vector source and copying its vectors into a model's word tables.

A vocabulary word takes the vector of its exact spelling, else of its lower-cased spelling
(GloVe 6B is lower case). Words that only the vectors know (the vocabulary's extension, see
`extension_words`) come after the training words and take their vectors into a fixed table.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from birnn.errors import ConfigError
from birnn.models.vectors.cache import read_cached_text
from birnn.models.vectors.named import NAMED, read_named
from birnn.models.vectors.text import KEY, width_error

log = logging.getLogger("birnn")


@dataclass
class Vectors:
    """Words and their vectors in the source's order: GloVe and word2vec list the most
    frequent words first, which `extension_words` relies on."""

    source: str
    words: list[str]
    matrix: np.ndarray = field(repr=False)  # (N, dim) float32, possibly memory-mapped

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    def find(self, word: str) -> tuple[int | None, bool]:
        """The row of `word`'s vector (exact spelling, else lower-cased) and whether it was
        found lower-cased; (None, False) when neither is known."""
        row = self.index.get(word)
        if row is not None:
            return row, False
        row = self.index.get(word.lower())
        return row, row is not None


@functools.lru_cache(maxsize=2)  # the vocabulary and the model's tables read the same source
def _load(source: str, stamp: tuple, dim: int) -> Vectors:
    if source in NAMED:
        words, matrix = read_named(source)
    else:  # a wrong width stops the parse at the first line
        words, matrix = read_cached_text(Path(source), dim)
    if matrix.shape[1] != dim:
        raise width_error(source, matrix.shape[1], dim)
    return Vectors(source, words, matrix)


def load_vectors(source: str, dim: int) -> Vectors:
    """The `dim`-wide vectors of `source`: a name of `NAMED` or the path of a text file
    (parsed once, then read from the cache, `birnn.models.vectors.cache`).

    Raises:
        ConfigError: a missing file (or unknown name), a missing package, a malformed file,
            or vectors that are not `dim` wide.
    """
    source = str(source)
    stamp: tuple = ()
    if source not in NAMED:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{KEY}: no such file {path} (a GloVe/word2vec text file, "
                              f"or a named source: {', '.join(NAMED)})")
        stat = path.stat()  # a changed file is read again
        stamp = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return _load(source, stamp, dim)


def extension_words(source: str, dim: int, max_words: int | None) -> list[str]:
    """The words a vocabulary is extended with: the first `max_words` words of the vectors
    (all of them with None), in the source's order, most frequent first."""
    words = load_vectors(source, dim).words
    return list(words if max_words is None else words[:max_words])


def read_vectors(source: str | Path, words: set[str], dim: int) -> dict[str, torch.Tensor]:
    """The vectors of `words` and of their lower-cased forms that `source` has."""
    vectors = load_vectors(str(source), dim)
    found = {}
    for word in words | {w.lower() for w in words}:
        row = vectors.index.get(word)
        if row is not None:
            found[word] = torch.from_numpy(np.array(vectors.matrix[row]))
    return found


def _rows(vectors: Vectors, rows: list[int], like: torch.Tensor) -> torch.Tensor:
    # fancy indexing copies only these rows out of a memory-mapped matrix
    return torch.from_numpy(np.asarray(vectors.matrix[rows], dtype=np.float32)).to(like.dtype)


@torch.no_grad()
def init_embedding(embedding: nn.Embedding, itos: list[str], source: str | Path,
                   skip: int = 2, fixed: torch.Tensor | None = None) -> int:
    """Copy the vectors of `source` into the word tables for the words `itos` (word id i is
    itos[i]) and log the coverage.

    The training words, ids `skip` to `embedding.num_embeddings` (the first `skip` rows,
    <pad> and <unk>, are left alone), take the vector of their exact spelling, else of their
    lower-cased one; the others keep their rows. The words after them, the vocabulary's
    extension with the vectors' own words, fill `fixed` (one row each) with their vectors.
    Returns how many training words took a vector.

    Raises:
        ConfigError: see `load_vectors`; or an extension word has no vector in `source`.
    """
    vectors = load_vectors(str(source), embedding.embedding_dim)
    trained = embedding.num_embeddings
    ids, rows, lower = [], [], 0
    for i, word in enumerate(itos[skip:trained], start=skip):
        row, lowered = vectors.find(word)
        if row is not None:
            ids.append(i)
            rows.append(row)
            lower += lowered
    if ids:
        embedding.weight[ids] = _rows(vectors, rows, embedding.weight)
    extension = itos[trained:]
    if extension:
        found = [vectors.find(w)[0] for w in extension]
        if None in found:
            word = extension[found.index(None)]
            raise ConfigError(f"{KEY}: {source} has no vector for {word!r}, a word the "
                              "vocabulary was extended with (from other vectors?)")
        fixed.copy_(_rows(vectors, found, fixed))
    hits, total = len(ids), max(trained - skip, 1)
    log.info("pretrained vectors: %s of %s vocabulary words from training (%.1f%%) from %s: "
             "%s by their spelling, %s lower-cased; %s more words of the vectors in a fixed "
             "table%s", f"{hits:,}", f"{total:,}", 100 * hits / total, source,
             f"{hits - lower:,}", f"{lower:,}", f"{len(extension):,}",
             "" if embedding.weight.requires_grad else " (all frozen)")
    if hits == 0:
        log.warning("pretrained vectors: no vocabulary word was found in %s", source)
    return hits
