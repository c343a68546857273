"""Reading birnn checkpoints, the same way everywhere: training resumes, evaluation and
prediction.

Checkpoints are read weights-only (`torch.load(weights_only=True)`: tensors and plain Python
values, never arbitrary pickled objects), and every way a file can be unfit is a one-line
`CheckpointError` naming it: missing, truncated or garbage, holding pickled objects, or a
checkpoint of another kind. A checkpoint fit for `evaluate.py`/`predict.py` is a Lightning
checkpoint dictionary with `state_dict`, `hyper_parameters` (the module's constructor
arguments) and `vocabularies` (the data module's `vocabularies()`, whose `task` names the
module class, see `MODELS`).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from birnn.errors import CheckpointError
from birnn.models import SentenceClassifier, TokenTagger
from birnn.models.base import BiRNNModule

log = logging.getLogger("birnn")

MODELS: dict[str, type[BiRNNModule]] = {"tagging": TokenTagger,
                                        "classification": SentenceClassifier}
REQUIRED = ("state_dict", "hyper_parameters", "vocabularies")
BEST = Path("checkpoints") / "best.ckpt"


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file: `path` itself, or `path/checkpoints/best.ckpt` for a run folder.

    Raises:
        CheckpointError: neither exists.
    """
    path = Path(path)
    if path.is_dir() and (path / BEST).is_file():
        return path / BEST
    if not path.is_file():
        raise CheckpointError("checkpoint not found (ckpt=PATH: a .ckpt file or a run folder)",
                              path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The dictionary a checkpoint file holds, read weights-only, on the CPU.

    Raises:
        CheckpointError: a missing, empty, truncated or garbage file, one that holds pickled
            objects other than tensors and plain Python values, or one that holds no
            dictionary.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise CheckpointError("not a birnn checkpoint: it holds objects other than tensors "
                                  "and plain Python values, which are not unpickled "
                                  "(weights_only)", path) from None
        raise CheckpointError(f"not a readable checkpoint: corrupt or not a PyTorch file "
                              f"({_brief(e)})", path) from None
    except EOFError:
        raise CheckpointError("not a readable checkpoint (empty or truncated file)",
                              path) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise CheckpointError(f"cannot read the checkpoint: {e.strerror or e}", path) from None
    except Exception as e:  # torch reports a damaged zip archive as RuntimeError and others
        raise CheckpointError(f"not a readable checkpoint: truncated or corrupt ({_brief(e)})",
                              path) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError("not a birnn checkpoint (not a Lightning checkpoint dictionary)",
                              path)
    return checkpoint


def load_checkpoint(path: str | Path) -> dict:
    """`read_checkpoint`, checked to hold what a birnn model needs (see the module docstring).

    Raises:
        CheckpointError: as `read_checkpoint`, or a checkpoint of another kind.
    """
    checkpoint = read_checkpoint(path)
    missing = [k for k in REQUIRED if not checkpoint.get(k)]
    if missing:
        raise CheckpointError(f"not a birnn checkpoint (no {', '.join(missing)}): pass the "
                              "checkpoints/best.ckpt of a `python train.py` run", path)
    vocabularies = checkpoint["vocabularies"]
    task = vocabularies.get("task") if isinstance(vocabularies, dict) else None
    if task not in MODELS:
        raise CheckpointError(f"not a birnn checkpoint (unknown task {task!r}; valid: "
                              f"{', '.join(MODELS)})", path)
    return checkpoint


def build_model(checkpoint: dict, path: str | Path = "checkpoint") -> BiRNNModule:
    """The model of a checkpoint read by `load_checkpoint`, weights loaded, on the CPU, in
    eval mode: what `cls.load_from_checkpoint` does, without reading the file again.

    Raises:
        CheckpointError: the hyper-parameters or weights do not fit the task's module.
    """
    cls = MODELS[checkpoint["vocabularies"]["task"]]
    try:
        model = cls(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"the checkpoint does not fit {cls.__name__} ({_brief(e)})",
                              path) from None
    model.on_load_checkpoint(checkpoint)
    return model.eval()


def load_model(path: str | Path) -> tuple[BiRNNModule, dict]:
    """The model (CPU, eval mode) and the vocabularies of a checkpoint file or run folder."""
    path = checkpoint_path(path)
    checkpoint = load_checkpoint(path)
    return build_model(checkpoint, path), checkpoint["vocabularies"]


def resumable(path: Path, folder: Path) -> tuple[Path, dict]:
    """The checkpoint a run resumed from `path` (its `last.ckpt`) continues from, read.

    An unreadable `last.ckpt` is reported in one line, and the newest readable birnn
    checkpoint of `folder` (its `checkpoints/`) is taken instead, with a warning naming it.

    Raises:
        CheckpointError: `path` is unreadable and no other checkpoint in `folder` is readable.
    """
    try:
        return path, load_checkpoint(path)
    except CheckpointError as e:
        problem = e
    log.warning("resume: %s", problem)
    others = sorted((p for p in folder.glob("*.ckpt") if p != path),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for other in others:
        try:
            checkpoint = load_checkpoint(other)
        except CheckpointError as e:
            log.warning("resume: %s", e)
            continue
        log.warning("resume: continuing from %s (epoch %s) instead", other,
                    checkpoint.get("epoch", "?"))
        return other, checkpoint
    raise CheckpointError(f"resume: no readable checkpoint to continue from in {folder}",
                          path) from None


def _brief(error: Exception, limit: int = 100) -> str:
    """An exception's first sentence, for a one-line message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
