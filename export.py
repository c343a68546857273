"""Export a checkpoint: `python export.py ckpt=outputs/DATE/TIME format=onnx`
(Hydra overrides; see conf/export.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("BIRNN_ROOT", str(Path(__file__).resolve().parent))

from birnn.cli.app import user_errors_exit  # noqa: E402
from birnn.export.command import export  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
