"""`from_keras`: a Keras model (or a saved one) -> the birnn Lightning module with the same
outputs, its weights copied."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from birnn.errors import ConfigError, DataError
from birnn.keras.layers import Plan, read_model
from birnn.keras.vocab import (
    label_vocab,
    placeholder_labels,
    read_entries,
    vectorizer_vocab,
    word_vocab,
)
from birnn.keras.weights import layer_state, linear_state
from birnn.models import SentenceClassifier, TokenTagger
from birnn.models.base import BiRNNModule

INSTALL = "pip install -e '.[keras]'"
SUFFIXES = (".keras", ".h5", ".hdf5")


def import_keras():
    """Keras, on the torch backend unless the user chose another (torch needs no
    TensorFlow); a missing extra is a one-line error saying how to install it."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as e:
        raise ConfigError(f"birnn.keras needs Keras 3 ({INSTALL}): {e}") from None
    if int(keras.__version__.split(".")[0]) < 3:
        raise ConfigError(f"birnn.keras needs Keras 3, found {keras.__version__} ({INSTALL})")
    return keras


def load_keras_model(path: str | Path):
    """A saved Keras model (`.keras`, or a legacy `.h5` that Keras 3 loads), uncompiled."""
    keras = import_keras()
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DataError(f"not a Keras model file (expected {', '.join(SUFFIXES)})", path)
    if not path.is_file():
        raise DataError("Keras model not found", path)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, TypeError... for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"Keras cannot load it ({first[:160]})", path) from None


def build_module(plan: Plan, labels: list[str]) -> BiRNNModule:
    """The birnn module the plan describes, with the Keras weights loaded."""
    encoder = {
        "cell": [r.cell for r in plan.rnns],
        "hidden_size": [r.hidden_size for r in plan.rnns],
        "merge": [r.merge for r in plan.rnns],
        "num_layers": len(plan.rnns),
        "dropout": plan.encoder_dropout,
        "dropout_kind": plan.dropout_kind,
    }
    vocab_size, embedding_dim = plan.embedding.shape
    common = {"vocab_size": int(vocab_size), "labels": labels, "encoder": encoder,
              "embedding_dim": int(embedding_dim), "dropout": plan.dropout,
              "dropout_kind": plan.dropout_kind}
    if plan.task == "tagging":
        model = TokenTagger(head="softmax", **common)
    else:
        model = SentenceClassifier(pooling=plan.pooling, **common)
    model.load_state_dict(state_dict(plan))
    return model.eval()


def state_dict(plan: Plan) -> dict[str, torch.Tensor]:
    """birnn's state dict (its own keys) from the plan's Keras weights."""
    state = {"embedding.weight": torch.from_numpy(np.ascontiguousarray(plan.embedding))}
    for k, rnn in enumerate(plan.rnns):
        state.update(layer_state(f"encoder.layers.{k}.", rnn.cell, rnn.forward, rnn.backward))
    kernel, bias = plan.head_kernel, plan.head_bias
    if plan.task == "tagging" and plan.rnns[-1].merge == "none":
        # one projection per direction, summed: the Keras kernel's halves, its bias once
        hidden = plan.rnns[-1].hidden_size
        state.update(linear_state("head.0.", kernel[:hidden], bias))
        state.update(linear_state("head.1.", kernel[hidden:], np.zeros_like(bias)))
    else:
        state.update(linear_state("head.", kernel, bias))
    return state


def from_keras(model_or_path, words: str | Path | list[str] | None = None,
               labels: str | Path | list[str] | None = None, oov: str | None = None,
               lower: bool = False) -> BiRNNModule:
    """Convert a Keras 3 model to the birnn module with identical outputs.

    Args:
        model_or_path: a `keras.Model`, or the path of a `.keras` file (or a legacy `.h5`
            that Keras 3 loads).
        words: the word vocabulary, one entry per Embedding row in index order (a file with
            one per line, or a list); not needed when the model has a TextVectorization.
        labels: the label names in the head's output order (a file or a list). Default:
            placeholders (`B-L0`, ... for a tagger, `0`, ... for a classifier).
        oov: the word vocabulary's out-of-vocabulary entry (default: the first of
            `birnn.keras.vocab.OOV_NAMES` found).
        lower: whether the Keras tokenizer lower-cased words (TextVectorization says so
            itself).

    Returns:
        A `TokenTagger` (head `softmax`) or `SentenceClassifier` in eval mode, with
        `vocabularies` set when the word vocabulary is known (from the model or `words`).

    Raises:
        ConfigError: a layer or setting with no exact birnn equivalent (naming the layer).
        DataError: an unreadable model file or a vocabulary that does not fit the model.
    """
    import_keras()
    if isinstance(model_or_path, str | Path):
        model = load_keras_model(model_or_path)
    else:
        model = model_or_path
    plan = read_model(model)
    input_dim = plan.embedding.shape[0]
    units = plan.head_kernel.shape[1]
    word_table = None
    if plan.vectorizer is not None:
        word_table = vectorizer_vocab(plan.vectorizer, input_dim)
    elif words is not None:
        source = str(words) if isinstance(words, str | Path) else "words"
        entries = read_entries(words) if isinstance(words, str | Path) else list(words)
        word_table = word_vocab(entries, input_dim, plan.mask_zero, source, oov, lower)
    if labels is None:
        label_table = label_vocab(placeholder_labels(plan.task, units), units, "labels")
    else:
        source = str(labels) if isinstance(labels, str | Path) else "labels"
        entries = read_entries(labels) if isinstance(labels, str | Path) else list(labels)
        label_table = label_vocab(entries, units, source)
    try:
        module = build_module(plan, label_table.itos)
    except ValueError as e:  # a tagger's labels must be tags (O, B-X, I-X, ...)
        if isinstance(e, ConfigError):
            raise
        raise DataError(f"the labels do not fit a birnn tagger ({e})",
                        labels if isinstance(labels, str | Path) else "labels") from None
    if word_table is not None:
        module.vocabularies = vocabularies(plan.task, word_table, label_table)
    return module


def vocabularies(task: str, words, labels) -> dict:
    """A checkpoint's `vocabularies`, as the data modules write them."""
    out = {"task": task, "words": words.state_dict(), "labels": labels.state_dict()}
    if task == "tagging":
        out["scheme"] = "iob2"
    return out
