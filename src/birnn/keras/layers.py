"""Read a Keras model layer by layer into a `Plan`: what birnn builds and which weights it
loads, or a one-line `ConfigError` naming the first layer and setting birnn cannot express.

The model must be a chain: an optional `TextVectorization`, an `Embedding`, optional
`Dropout`/`SpatialDropout1D`, one or more `Bidirectional(LSTM|GRU|SimpleRNN)` (a
`merge_mode=None` layer followed by the `Concatenate`/`Add`/`Average`/`Multiply` of its two
outputs), then the head: `Dense`/`TimeDistributed(Dense)` with a softmax on every token
(a tagger), or the last RNN's final states (`return_sequences=False`) or a
`GlobalMaxPooling1D`/`GlobalAveragePooling1D`, then a softmax `Dense` (a classifier).
The whole model is read before anything is built, so a refusal leaves nothing half-converted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from birnn.errors import ConfigError

CELLS = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
POOLINGS = {"GlobalMaxPooling1D": "max", "GlobalAveragePooling1D": "mean"}
# the layer that merges a merge_mode=None pair -> birnn's merge
PAIR_MERGES = {"Concatenate": "concat", "Add": "sum", "Average": "ave", "Multiply": "mul"}
DROPOUTS = {"Dropout": "standard", "SpatialDropout1D": "locked"}
# settings that only change training (or speed): converted without them, with a warning
TRAINING_ONLY = ("dropout", "recurrent_dropout", "kernel_regularizer", "recurrent_regularizer",
                 "bias_regularizer", "activity_regularizer", "embeddings_regularizer",
                 "kernel_constraint", "recurrent_constraint", "bias_constraint",
                 "embeddings_constraint", "unroll")


class ConversionWarning(UserWarning):
    """A setting that only changes training (or speed) was dropped, or the converted model
    matches Keras only on some inputs."""


@dataclass
class RNNLayer:
    """One Bidirectional layer: birnn's cell, width and merge, and each direction's Keras
    (kernel, recurrent_kernel, bias)."""

    name: str
    cell: str
    hidden_size: int
    merge: str
    forward: tuple
    backward: tuple
    final: bool = False  # return_sequences=False: only the final states go on
    pair: bool = False  # merge_mode=None, merged by the layer after it


@dataclass
class Plan:
    """Everything `from_keras` needs to build and fill the birnn module."""

    task: str = "tagging"  # or "classification"
    embedding: np.ndarray | None = None  # (input_dim, output_dim)
    mask_zero: bool = False
    rnns: list[RNNLayer] = field(default_factory=list)
    pooling: str = "final"  # classifiers
    head_kernel: np.ndarray | None = None  # (width, labels)
    head_bias: np.ndarray | None = None
    head_units: int = 0  # the Keras Dense's units (1 for a sigmoid head)
    dropout: float = 0.0  # on the embeddings and the encoder output
    dropout_kind: str = "standard"
    encoder_dropout: float = 0.0  # between RNN layers
    vectorizer: object = None  # a TextVectorization layer, where the model has one


def refuse(layer, message: str) -> ConfigError:
    return ConfigError(f"keras layer '{layer.name}' ({type(layer).__name__}): {message}")


def array(variable) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _activation_name(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # a serialized function or object
        return str(value.get("config", value.get("class_name")))
    return getattr(value, "__name__", repr(value))


def warn_training_only(layer, config: dict) -> None:
    """Warn about the settings of `config` that change training only, which are dropped."""
    dropped = [k for k in TRAINING_ONLY
               if config.get(k) not in (None, 0, 0.0, False)]
    if dropped:
        warnings.warn(f"keras layer '{layer.name}': {', '.join(dropped)} only change(s) "
                      "training or speed and are not converted", ConversionWarning, stacklevel=3)


# ------------------------------------------------------------------------- the layer chain


def chain(model) -> list:
    """The model's layers in order (input layers left out), after checking that each feeds
    the next and nothing else (a functional model that branches is refused)."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers:
        raise ConfigError("keras model: it has no layers")
    if isinstance(model, keras.Sequential):
        return layers
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"keras model '{model.name}': {len(model.inputs)} inputs and "
                          f"{len(model.outputs)} outputs; birnn converts one input, one output")
    previous = None
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise refuse(layer, f"called {len(nodes)} times; birnn converts a chain of layers "
                                "each used once")
        first = nodes[0].arguments.args[0] if nodes[0].arguments.args else None
        sources = [t._keras_history.operation for t in _tensors(first)]
        expected = previous
        if previous is None:
            expected = model.inputs[0]._keras_history.operation
        if not sources or any(s is not expected for s in sources):
            names = ", ".join(sorted({s.name for s in sources})) or "nothing"
            raise refuse(layer, f"reads {names}, not the layer before it; birnn converts a "
                                "chain of layers")
        previous = layer
    if model.outputs[0]._keras_history.operation is not layers[-1]:
        raise ConfigError(f"keras model '{model.name}': its output is not its last layer's")
    return layers


def _tensors(value) -> list:
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return [value] if hasattr(value, "_keras_history") else []


class _Layers:
    """A cursor over the chain."""

    def __init__(self, layers: list):
        self.layers, self.i = layers, 0

    def peek(self):
        return self.layers[self.i] if self.i < len(self.layers) else None

    def kind(self) -> str | None:
        layer = self.peek()
        return None if layer is None else type(layer).__name__

    def take(self):
        layer = self.peek()
        self.i += 1
        return layer


# ------------------------------------------------------------------------------- the reader


def read_model(model) -> Plan:
    """The `Plan` for a Keras model, or a `ConfigError` naming the first layer and setting
    birnn cannot express."""
    plan = Plan()
    layers = _Layers(chain(model))
    for layer in layers.layers:
        if getattr(layer, "quantization_mode", None):
            raise refuse(layer, f"quantized ({layer.quantization_mode}); birnn converts "
                                "float weights")
        dtype = getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
        if dtype != "float32":
            warnings.warn(f"keras layer '{layer.name}': computes in {dtype}; the birnn model "
                          "computes in float32 (its outputs agree to that precision)",
                          ConversionWarning, stacklevel=2)
    if layers.kind() == "TextVectorization":
        plan.vectorizer = layers.take()
    if layers.kind() != "Embedding":
        layer = layers.peek()
        raise refuse(layer, "birnn converts models that start with an Embedding "
                            "(after an optional TextVectorization)")
    _read_embedding(plan, layers.take())
    before, between, pending = [], [], []  # dropout layers: (rate, kind)
    while True:
        kind = layers.kind()
        if kind in DROPOUTS:
            (pending if plan.rnns else before).append(_read_dropout(layers.take()))
        elif kind == "Bidirectional":
            if plan.rnns and plan.rnns[-1].final:
                raise refuse(layers.peek(), "follows a Bidirectional with "
                                            "return_sequences=False, which only the last "
                                            "RNN layer may have")
            between += pending
            pending = []
            plan.rnns.append(_read_bidirectional(layers))
        else:
            break
    if not plan.rnns:
        raise refuse(layers.peek() or layers.layers[-1],
                     "birnn needs at least one Bidirectional layer after the Embedding")
    if plan.rnns[-1].pair and plan.rnns[-1].merge == "concat":
        plan.rnns[-1].merge = "none"  # the last layer's pair, as birnn's `none` keeps it
    pending += _read_head(plan, layers)  # dropout after the encoder: before the head
    _set_dropout(plan, before + pending, between)
    return plan


def _read_embedding(plan: Plan, layer) -> None:
    config = layer.get_config()
    warn_training_only(layer, config)
    plan.embedding = array(layer.embeddings)
    plan.mask_zero = bool(config.get("mask_zero", False))


def _read_dropout(layer) -> tuple[float, str]:
    return float(layer.get_config()["rate"]), DROPOUTS[type(layer).__name__]


def _set_dropout(plan: Plan, outer: list, between: list) -> None:
    # birnn has one rate on the embeddings and the encoder output and one between layers;
    # inference is the same whatever the rates, so a mismatch only warns
    if outer:
        plan.dropout, plan.dropout_kind = outer[0]
        if len(set(outer)) > 1:
            warnings.warn(f"keras model: dropout layers around the encoder have rates/kinds "
                          f"{outer}; birnn has one (model.dropout={plan.dropout}, "
                          f"{plan.dropout_kind})", ConversionWarning, stacklevel=3)
    if between:
        plan.encoder_dropout = between[0][0]
        if len(set(between)) > 1 or len(between) != len(plan.rnns) - 1:
            warnings.warn(f"keras model: dropout between the Bidirectional layers is "
                          f"{between}; birnn applies encoder.dropout={plan.encoder_dropout} "
                          "between every pair of layers", ConversionWarning, stacklevel=3)


def _read_rnn(bidirectional, sub, direction: str) -> tuple[str, dict]:
    name = type(sub).__name__
    if name not in CELLS:
        raise refuse(bidirectional, f"its {direction} layer is a {name}; birnn converts "
                                    f"{', '.join(CELLS)}")
    config = sub.get_config()
    cell = CELLS[name]
    checks = [("activation", "tanh")]
    if cell != "rnn":
        checks.append(("recurrent_activation", "sigmoid"))
    for key, expected in checks:
        got = _activation_name(config.get(key))
        if got != expected:
            raise refuse(bidirectional, f"{key}={got!r} in the {direction} {name}; birnn's "
                                        f"{name} uses {expected}")
    if not config.get("use_bias", True):
        raise refuse(bidirectional, f"use_bias=False in the {direction} {name}; birnn's "
                                    "layers always have biases")
    if cell == "gru" and not config.get("reset_after", True):
        raise refuse(bidirectional, "reset_after=False: that GRU applies the reset gate "
                                    "before the recurrent matmul, which PyTorch's GRU cannot")
    for key in ("stateful", "return_state"):
        if config.get(key):
            raise refuse(bidirectional, f"{key}=True in the {direction} {name}; birnn "
                                        "converts stateless layers that return sequences")
    if config.get("go_backwards") != (direction == "backward"):
        raise refuse(bidirectional, f"go_backwards={config.get('go_backwards')} on the "
                                    f"{direction} {name}; birnn runs its forward layer "
                                    "forward and its backward layer backward")
    warn_training_only(bidirectional, config)
    return cell, config


def _read_bidirectional(layers: _Layers) -> RNNLayer:
    layer = layers.take()
    config = layer.get_config()
    if config.get("return_state"):
        raise refuse(layer, "return_state=True; birnn converts layers that return outputs")
    cell, forward = _read_rnn(layer, layer.forward_layer, "forward")
    back_cell, backward = _read_rnn(layer, layer.backward_layer, "backward")
    if (back_cell, backward["units"]) != (cell, forward["units"]):
        raise refuse(layer, f"its backward layer ({back_cell}, {backward['units']} units) "
                            f"differs from its forward layer ({cell}, {forward['units']} "
                            "units); birnn's two directions share cell and width")
    mode, pair = layer.merge_mode, layer.merge_mode is None
    if pair:
        mode = _read_pair_merge(layer, layers)
    weights = [tuple(array(v) for v in (sub.cell.kernel, sub.cell.recurrent_kernel,
                                         sub.cell.bias))
               for sub in (layer.forward_layer, layer.backward_layer)]
    return RNNLayer(layer.name, cell, int(forward["units"]), mode, *weights,
                    final=not forward.get("return_sequences", False), pair=pair)


def _read_pair_merge(layer, layers: _Layers) -> str:
    """The merge for a merge_mode=None layer: the layer after it must combine its two
    outputs, (forward, backward) in that order for a Concatenate."""
    after = layers.peek()
    kind = type(after).__name__ if after is not None else None
    if kind not in PAIR_MERGES:
        what = f"feeds {kind} '{after.name}'" if after is not None else "is the output"
        raise refuse(layer, f"merge_mode=None {what}, which birnn cannot express (follow it "
                            f"with {', '.join(PAIR_MERGES)} of its two outputs)")
    if kind == "Concatenate":
        axis = after.get_config().get("axis", -1)
        if axis not in (-1, 2):
            raise refuse(after, f"axis={axis}: birnn merges a merge_mode=None pair along the "
                                "features (axis=-1)")
        args = after._inbound_nodes[0].arguments.args if after._inbound_nodes else ()
        order = [t._keras_history.tensor_index for t in _tensors(args[0] if args else None)]
        if order and order != [0, 1]:
            raise refuse(after, "concatenates the backward output before the forward one; "
                                "birnn's concat is [forward; backward]")
    layers.take()
    return PAIR_MERGES[kind]


def _read_head(plan: Plan, layers: _Layers) -> list[tuple[float, str]]:
    """Read pooling and head into `plan`; returns the dropout layers before the head."""
    dropouts = []
    while layers.kind() in DROPOUTS:
        dropouts.append(_read_dropout(layers.take()))
    kind = layers.kind()
    if plan.rnns[-1].final:
        plan.task, plan.pooling = "classification", "final"
    elif kind in POOLINGS:
        pool = layers.take()
        config = pool.get_config()
        if config.get("keepdims") or config.get("data_format", "channels_last") != \
                "channels_last":
            raise refuse(pool, "keepdims=True or data_format=channels_first; birnn pools "
                               "(B, T, W) to (B, W)")
        plan.task, plan.pooling = "classification", POOLINGS[kind]
        if kind == "GlobalMaxPooling1D" and plan.mask_zero:
            warnings.warn(f"keras layer '{pool.name}': Keras' GlobalMaxPooling1D ignores the "
                          "mask and takes the maximum over padding too (where the RNN outputs "
                          "0); birnn's max pooling is over real tokens only, so the two agree "
                          "on sequences without padding", ConversionWarning, stacklevel=3)
    while layers.kind() in DROPOUTS:  # after pooling: birnn's dropout before the head too
        dropouts.append(_read_dropout(layers.take()))
    dense = layers.take()
    name = type(dense).__name__ if dense is not None else None
    if name == "TimeDistributed" and plan.task == "tagging":
        wrapper, dense = dense, dense.layer
        name = type(dense).__name__
        if name != "Dense":
            raise refuse(wrapper, f"wraps a {name}; birnn's tagger head is a Dense")
    if name != "Dense":
        where = f"{name} '{dense.name}'" if dense is not None else "nothing"
        raise refuse(layers.layers[-1] if dense is None else dense,
                     f"found {where} where birnn needs the head: a Dense (or, for a tagger, "
                     "TimeDistributed(Dense)) with softmax")
    config = dense.get_config()
    warn_training_only(dense, config)
    if not config.get("use_bias", True):
        raise refuse(dense, "use_bias=False; birnn's head has a bias")
    activation = _activation_name(config.get("activation"))
    if activation == "linear" and layers.kind() in ("Softmax", "Activation"):
        after = layers.take()
        activation = _activation_name(after.get_config().get("activation", "softmax"))
        if type(after).__name__ == "Softmax" and after.get_config().get("axis", -1) != -1:
            raise refuse(after, "axis is not -1; birnn's softmax is over the labels")
    units = int(config["units"])
    kernel, bias = array(dense.kernel), array(dense.bias)
    if activation == "sigmoid" and units == 1:
        # p = sigmoid(z) is softmax([0, z])[1]: a two-label head whose first row is zero
        kernel = np.concatenate([np.zeros_like(kernel), kernel], axis=1)
        bias = np.concatenate([np.zeros_like(bias), bias])
    elif activation != "softmax":
        raise refuse(dense, f"activation={activation!r}; birnn's head is a softmax over the "
                            "labels (use softmax, a Softmax layer after it, or sigmoid with "
                            "1 unit)")
    plan.head_kernel, plan.head_bias, plan.head_units = kernel, bias, units
    if layers.peek() is not None:
        raise refuse(layers.peek(), "comes after the head; birnn's model ends with it")
    return dropouts
