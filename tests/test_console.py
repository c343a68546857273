"""The console of a training run: birnn's own lines, the progress bar, the score table and W&B's
closing lines, and no warning or advertisement from a third-party library; and `wandb` is not
imported unless the W&B logger is chosen."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

# small, two epochs (the per-epoch checkpoint messages would show twice), the W&B logger on
TINY = ("encoder.hidden_size=8", "model.embedding_dim=8", "encoder.num_layers=1",
        "trainer.max_epochs=2", "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=1")  # fewer batches than steps per log would be warned of
# a warning's words, or Python's `file.py:LINE: message` form of any warning
THIRD_PARTY = re.compile(r"warn|deprecat|tip:|weights_only|litlogger|treespec|\.py:\d+: ",
                         re.IGNORECASE)


def environment(home) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "PYTHONWARNINGS"))}
    env.update(HOME=str(home), WANDB_MODE="offline", BIRNN_ROOT=str(ROOT),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return env


def test_training_prints_no_third_party_warning(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "test" in run.stdout and "wandb sync" in output  # the table, W&B's closing lines
    # birnn's own log lines may warn (e.g. that W&B logs offline); nothing else may
    flagged = [line for line in output.splitlines()
               if THIRD_PARTY.search(line) and "[birnn]" not in line]
    assert not flagged, "\n".join(flagged)


def test_wandb_is_imported_only_for_the_wandb_logger(tmp_path):
    code = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
import train, evaluate, predict  # the entry points
from hydra import compose, initialize_config_dir
from birnn.cli.build import build
with initialize_config_dir({str(ROOT / "conf")!r}, version_base="1.3"):
    cfg = compose("train", overrides=["logger=csv", "paths.output_dir={tmp_path}"])
build(cfg, Path({str(tmp_path)!r}))
print("wandb imported:", "wandb" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "wandb imported: False" in run.stdout
