"""ONNX export of a birnn model, up to its emissions (taggers) or class logits (classifiers).

The graph takes word ids (B, T), lengths (B,) and, where the model has them, character ids
(B, T, W) and casing ids (B, T), with the batch, sequence and word-width axes dynamic.
Decoding (Viterbi, marginals, span probabilities) stays outside the graph, in
`birnn.decoding`, which reads the CRF's lattice from `labels.json`.

While exporting, the encoder takes its plain exportable plan by itself (`birnn.encoder.policy`:
layer by layer, padded with the backward direction reversed within lengths, PyTorch's GRU,
serial directions). The character encoder's data-dependent steps (selecting the real words,
packing a BiLSTM's characters) become their padded equivalents here (`PaddedChars`), over the
same parameters and with the same numbers.

TorchScript-based export (`dynamo=False`) is used: it traces the padded plan with symbolic
batch and sequence sizes, where `torch.export` needs every data-dependent branch rewritten.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from birnn.decoding import Lattice
from birnn.export.runtime import LABELS_FILE, ONNX_FILE, VOCAB_FILE

OPSET = 17


class PaddedChars(nn.Module):
    """A `CharEncoder` computed over every padded word, then zeroed where a word is padding:
    the same vectors as its forward, with no selection of the real words and no packing."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.output_size = encoder.output_size
        if encoder.kind == "birnn":
            hidden = encoder.rnn.hidden_size
            # one single-direction LSTM per direction, sharing the BiLSTM's tensors
            self.directions = nn.ModuleList()
            for suffix in ("", "_reverse"):
                lstm = nn.LSTM(encoder.dim, hidden, batch_first=True)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    setattr(lstm, f"{name}_l0", getattr(encoder.rnn, f"{name}_l0{suffix}"))
                self.directions.append(lstm)

    def forward(self, chars: Tensor) -> Tensor:
        enc = self.encoder
        if enc.kind == "cnn" and enc.max_length:
            chars = chars[:, :, : enc.max_length]
        batch, steps, width = chars.shape
        flat = chars.reshape(batch * steps, width)  # (N, W)
        pad = flat == 0
        word_lengths = (~pad).sum(1)  # (N,)
        x = enc.embedding(flat)  # (N, W, dim)
        if enc.kind == "cnn":
            h = enc.conv(x.transpose(1, 2))  # (N, filters, W)
            pooled = h.masked_fill(pad.unsqueeze(1), float("-inf")).max(-1).values
        else:
            last = (word_lengths - 1).clamp(min=0)
            rows = torch.arange(flat.size(0))
            forward, _ = self.directions[0](x)  # (N, W, H); padding after each word's end
            # reversed within each word's length: position t reads position length - 1 - t
            positions = torch.arange(width)
            source = last.unsqueeze(1) - positions  # (N, W)
            source = torch.where(source >= 0, source, positions)
            backward, _ = self.directions[1](x.gather(1, source.unsqueeze(-1).expand_as(x)))
            pooled = torch.cat([forward[rows, last], backward[rows, last]], -1)  # (N, 2H)
        pooled = pooled.masked_fill((word_lengths == 0).unsqueeze(1), 0.0)
        return pooled.view(batch, steps, -1)


class Exportable(nn.Module):
    """A model's forward as the graph runs it: tensors in, emissions or logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        if getattr(self.model, "char_encoder", None) is not None:
            self.model.char_encoder = PaddedChars(self.model.char_encoder)
        self.tagger = hasattr(self.model, "crf")
        self.inputs = input_names(self.model)

    def forward(self, words: Tensor, lengths: Tensor, *features: Tensor) -> Tensor:
        if not self.tagger:
            return self.model(words, lengths)
        named = dict(zip(self.inputs[2:], features, strict=True))
        return self.model(words, lengths, **named)


def input_names(model: nn.Module) -> list[str]:
    """The graph's inputs for `model`: words and lengths, then chars and casing if used."""
    names = ["words", "lengths"]
    if getattr(model, "char_encoder", None) is not None:
        names.append("chars")
    if getattr(model, "casing_embedding", None) is not None:
        names.append("casing")
    return names


def example_inputs(names: list[str], vocab_size: int, num_chars: int = 2) -> tuple:
    """A small batch of unequal lengths (as the exportable plan expects) for tracing."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4, 2, 3], dtype=torch.int64)
    real = torch.arange(4)[None, :] < lengths[:, None]  # (B, T)
    words = torch.randint(1, max(vocab_size, 2), (3, 4), generator=generator) * real
    inputs = {"words": words, "lengths": lengths,
              "chars": torch.randint(1, max(num_chars, 2), (3, 4, 5), generator=generator)
              * real[..., None],
              "casing": torch.randint(1, 6, (3, 4), generator=generator) * real}
    return tuple(inputs[n] for n in names)


def export_onnx(model: nn.Module, vocabularies: dict, folder: str | Path,
                opset: int = OPSET) -> Path:
    """Write `model.onnx`, `vocabularies.json` and `labels.json` into `folder`.

    Args:
        model: a `TokenTagger` or `SentenceClassifier` (e.g. from `birnn.checkpoint`).
        vocabularies: the checkpoint's vocabularies (task, words, labels, chars).
        folder: where to write; created if missing.
        opset: the ONNX opset.

    Returns:
        The path of `model.onnx`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wrapped = Exportable(model)
    names = wrapped.inputs
    chars = vocabularies.get("chars") or {}
    args = example_inputs(names, model.embedding.num_embeddings, len(chars.get("itos", [])))
    output = "emissions" if wrapped.tagger else "logits"
    axes = {"words": {0: "batch", 1: "steps"}, "lengths": {0: "batch"},
            "chars": {0: "batch", 1: "steps", 2: "width"}, "casing": {0: "batch", 1: "steps"},
            output: {0: "batch", 1: "steps"} if wrapped.tagger else {0: "batch"}}
    path = folder / ONNX_FILE
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's notes on Python values it freezes: shapes are symbolic, lengths are
        # only read as tensors on the exportable plan
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the RNN ops' initial states are zeros of the traced batch size, read from the input
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        # (and its indices, positions and lengths - 1, are never the negative ones it warns of)
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=[output],
                          dynamic_axes={k: v for k, v in axes.items() if k in [*names, output]},
                          opset_version=opset, dynamo=False)
    (folder / VOCAB_FILE).write_text(json.dumps(vocabularies, ensure_ascii=False) + "\n")
    (folder / LABELS_FILE).write_text(json.dumps(labels_info(model, names, output),
                                                 ensure_ascii=False, indent=1) + "\n")
    return path


def labels_info(model: nn.Module, inputs: list[str], output: str) -> dict:
    """What the runtime needs besides the graph: the label names, the head and its lattice."""
    info = {"task": "tagging" if hasattr(model, "crf") else "classification",
            "labels": list(model.labels), "inputs": inputs, "output": output}
    if info["task"] == "tagging":
        info["head"] = "crf" if model.crf is not None else "softmax"
        info["lattice"] = Lattice.of_tagger(model).to_dict()
    return info
