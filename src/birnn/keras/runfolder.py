"""A converted model as a birnn run folder: `checkpoints/best.ckpt` (a Lightning checkpoint
that `torch.load(weights_only=True)` reads) and `config.yaml` (the model and encoder
settings, and the `train.py` overrides that rebuild the same module)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import torch
from omegaconf import OmegaConf

from birnn.checkpoint import BEST
from birnn.errors import ConfigError, DataError
from birnn.models import TokenTagger
from birnn.models.base import BiRNNModule

# hyper-parameters that come from the data (the vocabularies), not from the config
FROM_DATA = ("vocab_size", "labels", "encoder")


def hyper_parameters(module: BiRNNModule) -> dict:
    """The module's constructor arguments as plain Python values."""
    return json.loads(json.dumps(dict(module.hparams)))


def checkpoint(module: BiRNNModule, source: str) -> dict:
    """A Lightning checkpoint of `module` at step 0: no optimiser or loop state, so
    `train.py ckpt_path=...` starts a fresh optimiser from the converted weights."""
    if module.vocabularies is None:
        raise ConfigError("the converted model has no word vocabulary: give one (--vocab)")
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optimizer_states": [],
        "lr_schedulers": [],
        "callbacks": {},
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters(module),
        "vocabularies": module.vocabularies,
        "converted_from": source,
    }


def train_overrides(module: BiRNNModule) -> list[str]:
    """`train.py` overrides that build this module's architecture."""
    hparams = hyper_parameters(module)
    kind = "tagger" if isinstance(module, TokenTagger) else "classifier"
    out = [f"model={kind}"]
    for key, value in hparams.items():
        if key not in FROM_DATA:
            out.append(f"model.{key}={_value(value)}")
    out += [f"encoder.{key}={_value(value)}" for key, value in hparams["encoder"].items()]
    return out


def _value(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def write_run_folder(module: BiRNNModule, outdir: str | Path, source: str,
                     force: bool = False) -> Path:
    """Write `outdir/checkpoints/best.ckpt` and `outdir/config.yaml`; returns the checkpoint.

    Raises:
        DataError: `outdir` already holds a checkpoint (unless `force`) or cannot be written.
    """
    outdir = Path(outdir)
    ckpt = outdir / BEST
    if ckpt.exists() and not force:
        raise DataError("already holds a checkpoint (choose another folder, or --force)",
                        outdir)
    hparams = hyper_parameters(module)
    config = {
        "converted_from": source,
        "model": {"_target_": f"birnn.models.{type(module).__name__}",
                  **{k: v for k, v in hparams.items() if k not in FROM_DATA}},
        "encoder": hparams["encoder"],
        "train_overrides": " ".join(train_overrides(module)),
    }
    try:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint(module, source), ckpt)
        header = ("# A Keras model converted by `python -m birnn.keras`. evaluate.py needs the "
                  "data named\n# (data=... data.dir=...); train.py ckpt_path=... needs "
                  "train_overrides.\n")
        (outdir / "config.yaml").write_text(header + OmegaConf.to_yaml(config))
    except OSError as e:
        raise DataError(f"cannot write the run folder: {e.strerror or e}", outdir) from None
    return ckpt
