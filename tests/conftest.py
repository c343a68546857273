"""Shared fixtures: Hydra configs composed from conf/ and shrunk for fast, offline tests."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from birnn.hardware import cpu_supports_bf16

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_NER = ROOT / "data" / "sample_ner"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("BIRNN_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Quiet, CPU-only, no experiment logger: the parts tests add to every config.
TEST_OVERRIDES = ("logger=none", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false")


# bf16 autocast on CPU needs oneDNN's bf16 kernels (birnn.hardware): PyTorch's LSTM fails
# under it on a CPU without them, and the config check refuses bf16 there
needs_cpu_bf16 = pytest.mark.skipif(not cpu_supports_bf16(),
                                    reason="this CPU has no oneDNN bf16 kernels")
CPU_PRECISION = "bf16-mixed" if cpu_supports_bf16() else "32-true"


def make_config(tmp_path: Path, *overrides: str, config_name: str = "train",
                test_overrides: bool = True) -> DictConfig:
    """Compose `conf/<config_name>.yaml` as `python train.py OVERRIDES` would, writing to tmp
    (quiet and without an experiment logger unless `test_overrides` is false)."""
    quiet = TEST_OVERRIDES if test_overrides else ()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name,
            overrides=[f"paths.output_dir={tmp_path}", *quiet, *overrides],
        )


@pytest.fixture
def cfg_factory(tmp_path):
    """`cfg_factory("encoder.merge=sum", ...)` -> a composed config writing into tmp_path."""
    return lambda *overrides: make_config(tmp_path, *overrides)


def write_vectors_file(path: Path, rows: Iterable[tuple[str, Sequence[float]]],
                       header: bool = False, extra: str = "") -> Path:
    """A word-vectors text file as GloVe and word2vec write it: `word x1 x2 ...` per line,
    optionally after a `count dim` header, gzipped when the name ends in .gz; `extra` is
    appended as it is (for malformed lines)."""
    rows = [(w, list(v)) for w, v in rows]
    lines = [f"{len(rows)} {len(rows[0][1])}"] if header else []
    lines += [" ".join([w, *(repr(float(x)) for x in v)]) for w, v in rows]
    text = "\n".join(lines) + "\n" + extra
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def recased_copy(folder: Path, out: Path, change: Callable[[str], str]) -> Path:
    """The column files train/dev/test.txt of `folder` with `change` applied to the token
    column by hand (-DOCSTART- lines kept as they are)."""
    out.mkdir()
    for name in ("train.txt", "dev.txt", "test.txt"):
        lines = []
        for line in (folder / name).read_text().splitlines():
            cols = line.split()
            keep = not cols or cols[0] == "-DOCSTART-"
            lines.append(line if keep else " ".join([change(cols[0]), *cols[1:]]))
        (out / name).write_text("\n".join(lines) + "\n")
    return out
