"""Tag or classify text: `python predict.py ckpt=PATH input=FILE [output=FILE] [format=jsonl]`
(Hydra overrides; see conf/predict.yaml). `input=-` reads stdin; no output writes stdout."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("BIRNN_ROOT", str(Path(__file__).resolve().parent))

from birnn.cli.app import user_errors_exit  # noqa: E402
from birnn.cli.predict import predict  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
