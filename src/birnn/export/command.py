"""`python export.py ckpt=PATH [format=onnx] [output=DIR]`: a checkpoint to a deployable model.

The model and its vocabularies come from the checkpoint (`birnn.checkpoint`). The output
folder gets `model.onnx`, `vocabularies.json` (the checkpoint's vocabularies) and
`labels.json` (label names, the graph's inputs, the head and, for taggers, the decoding
lattice), which `predict.py ckpt=DIR/model.onnx` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from birnn.errors import ConfigError

log = logging.getLogger("birnn")

FORMATS = ("onnx",)


def output_folder(output: str | None, ckpt: Path) -> Path:
    """`output`, or by default `export/` in the checkpoint's run folder (beside
    `checkpoints/`), or beside a checkpoint file kept elsewhere."""
    if output:
        return Path(output)
    parent = ckpt.resolve().parent
    return parent.parent / "export" if parent.name == "checkpoints" else parent / "export"


def export(cfg: DictConfig) -> Path:
    """Export `cfg.ckpt` in `cfg.format` to `cfg.output`; returns the model file's path."""
    fmt = cfg.get("format", "onnx")
    if fmt not in FORMATS:
        raise ConfigError(f"format: unknown {fmt!r} (valid: {', '.join(FORMATS)})")
    from birnn.checkpoint import checkpoint_path, load_model
    from birnn.export.onnx import export_onnx

    ckpt = checkpoint_path(cfg.ckpt)
    model, vocabularies = load_model(ckpt)
    folder = output_folder(cfg.get("output"), ckpt)
    path = export_onnx(model, vocabularies, folder, opset=int(cfg.get("opset", 17)))
    log.info("exported %s to %s (with its vocabularies and labels)", ckpt, path)
    return path
