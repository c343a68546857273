"""Score a checkpoint: `python evaluate.py ckpt=outputs/DATE/TIME/checkpoints/best.ckpt`
(Hydra overrides; see conf/evaluate.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("BIRNN_ROOT", str(Path(__file__).resolve().parent))

from birnn.cli.app import user_errors_exit  # noqa: E402
from birnn.cli.evaluate import evaluate  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
