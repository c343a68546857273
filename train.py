"""Train a model: `python train.py encoder.merge=sum` (Hydra overrides; see conf/)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("BIRNN_ROOT", str(Path(__file__).resolve().parent))

from birnn.cli.app import sweep_job, user_errors_exit  # noqa: E402
from birnn.cli.train import train  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors_exit
@sweep_job
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    # the value a Hydra sweeper optimises: the monitored score of the best checkpoint
    return metrics["val"][cfg.monitor.removeprefix("val/")]


if __name__ == "__main__":
    main()
