"""Shared fixtures: Hydra configs composed from conf/ and shrunk for fast, offline tests."""

from __future__ import annotations

import os
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
