"""birnn: bidirectional-RNN stacks with Keras' merge modes (`BiRNN`), and the application
around them. Names are imported on first use, so that a light entry point (prediction with
an exported ONNX model) does not load PyTorch."""

import importlib

__all__ = ["BiRNN"]


def __getattr__(name: str):
    if name == "BiRNN":
        return importlib.import_module("birnn.encoder").BiRNN
    raise AttributeError(f"module 'birnn' has no attribute {name!r}")
