"""A parsed vectors text file, cached as `.npy` (the vectors) and `.json` (the words), so the
next run reads it memory-mapped instead of parsing text again.

The cache lives in `vectors/` under birnn's cache folder (`$BIRNN_CACHE_DIR`, else
`$XDG_CACHE_HOME/birnn` or `~/.cache/birnn`, the same as the GRU kernel's), one pair of files
per text file, named by the file's name and a digest of its absolute path, size and
modification time: an edited or replaced file is parsed again. A cache that cannot be
written or read is a warning, never an error. Files under `MIN_CACHED_BYTES` parse in well
under a second and are not cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from birnn.encoder.native import cache_dir
from birnn.models.vectors.text import read_text

log = logging.getLogger("birnn")

MIN_CACHED_BYTES = 1 << 20


def vectors_cache_dir() -> Path:
    return cache_dir() / "vectors"


def cache_files(path: Path) -> tuple[Path, Path]:
    """The (vectors, words) cache files of the text file at `path`."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    stem = f"{path.name}-{key.hexdigest()[:16]}"
    folder = vectors_cache_dir()
    return folder / f"{stem}.npy", folder / f"{stem}.words.json"


def _write_atomic(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cached_text(path: Path, dim: int | None = None) -> tuple[list[str], np.ndarray]:
    """`read_text(path, dim)`, from the cache when it holds this version of the file."""
    if path.stat().st_size < MIN_CACHED_BYTES:
        return read_text(path, dim)
    matrix_file, words_file = cache_files(path)
    if matrix_file.is_file() and words_file.is_file():
        try:
            words = json.loads(words_file.read_text(encoding="utf-8"))
            matrix = np.load(matrix_file, mmap_mode="r")
            if len(words) == len(matrix):
                log.info("vectors: %s read from the cache %s", path, matrix_file)
                return words, matrix
        except (OSError, ValueError) as e:
            log.warning("vectors: unreadable cache %s (%s): parsing %s again", matrix_file, e,
                        path)
    words, matrix = read_text(path, dim)
    try:
        matrix_file.parent.mkdir(parents=True, exist_ok=True)
        # the words last: a reader finds both files only once both are complete
        _write_atomic(matrix_file, lambda f: np.save(f, matrix))
        _write_atomic(words_file, lambda f: f.write(json.dumps(words).encode("utf-8")))
        log.info("vectors: parsed %s (%s words), cached in %s", path, f"{len(words):,}",
                 matrix_file.parent)
    except OSError as e:
        log.warning("vectors: cannot cache %s in %s (%s); the next run parses it again", path,
                    matrix_file.parent, e)
    return words, matrix
