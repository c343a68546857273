"""Run an exported model with ONNX Runtime: ids from the exported vocabularies, the graph's
emissions or logits, decoding with `birnn.decoding`. Neither Lightning nor the model code is
imported, so a deployment needs only NumPy, onnxruntime and this package's pure-Python parts.

>>> runner = OnnxRunner.from_path("outputs/DATE/TIME/export/model.onnx")
>>> runner.predict([["EU", "rejects", "German", "call"]])
[['B-ORG', 'O', 'B-MISC', 'O']]
>>> runner.predict([["EU", "rejects", "German", "call"]], scores=True)[0]["spans"][0]
{'type': 'ORG', 'start': 0, 'end': 1, 'score': 0.96...}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from birnn.decoding import Lattice, decode, viterbi
from birnn.errors import ConfigError, DataError
from birnn.tags import word_shape

ONNX_FILE = "model.onnx"  # the names `birnn.export.onnx` writes
VOCAB_FILE = "vocabularies.json"
LABELS_FILE = "labels.json"
# sentences per forward pass, of both prediction paths: the fastest measured on CPU, where
# larger batches overflow the caches (docs/performance.md, "Prediction")
BATCH_SIZE = 32


def is_onnx(path: str | Path) -> bool:
    """Whether `path` is an exported model: a `.onnx` file, or a folder holding `model.onnx`."""
    path = Path(path)
    return path.suffix == ".onnx" or (path.is_dir() and (path / ONNX_FILE).is_file())


class Lookup:
    """A vocabulary as exported (`Vocab.state_dict()` in JSON): token -> id, lower-cased
    first where the vocabulary is; an unknown token takes the id of its lower-cased form
    where the vocabulary has `lower_fallback` (extended with pretrained vectors) and that
    form is known, else the `unk` entry's."""

    def __init__(self, state: dict):
        self.itos = list(state["itos"])
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.lower = bool(state.get("lower", False))
        self.lower_fallback = bool(state.get("lower_fallback", False))
        unk = state.get("unk")
        self.unk = self.stoi[unk] if unk is not None else None

    def encode(self, tokens) -> list[int]:
        tokens = [t.lower() for t in tokens] if self.lower else list(tokens)
        if self.unk is None:
            return [self.stoi[t] for t in tokens]
        if self.lower_fallback:
            return [self.stoi.get(t, self.stoi.get(t.lower(), self.unk)) for t in tokens]
        return [self.stoi.get(t, self.unk) for t in tokens]


class OnnxRunner:
    """An exported model and its vocabularies, labelling tokenised sentences.

    Taggers give, per sentence, its tags, or with `scores` `{"tags", "scores", "spans"}`
    (`birnn.decoding.Decoded.named`: spans as `{"type", "start", "end", "score"}`, end
    exclusive; scores are marginal probabilities); classifiers give `(label, probability)`.
    An empty sentence gives empty lists, or `(None, None)`. The same as
    `birnn.inference.Predictor` gives for the checkpoint.
    """

    def __init__(self, session, vocabularies: dict, info: dict):
        self.session = session
        self.info = info
        self.task = info["task"]
        self.labels = list(info["labels"])
        self.inputs = list(info["inputs"])
        self.words = Lookup(vocabularies["words"])
        chars = vocabularies.get("chars")
        self.chars = Lookup(chars) if chars else None
        self.lattice = Lattice.from_dict(info["lattice"]) if self.task == "tagging" else None

    @classmethod
    def from_path(cls, path: str | Path) -> OnnxRunner:
        """Read `model.onnx` (a file, or a folder holding it) and the JSON files beside it."""
        import onnxruntime

        path = Path(path)
        model = path / ONNX_FILE if path.is_dir() else path
        if not model.is_file():
            raise DataError("exported model not found (ckpt=PATH: a .onnx file or the folder "
                            "export.py wrote)", model)
        side = {}
        for name in (VOCAB_FILE, LABELS_FILE):
            try:
                side[name] = json.loads((model.parent / name).read_text(encoding="utf-8"))
            except OSError as e:
                raise DataError(f"cannot read {name}, which export.py writes beside the "
                                f"model: {e.strerror or e}", model.parent / name) from None
            except ValueError as e:
                raise DataError(f"not valid JSON ({e})", model.parent / name) from None
        try:
            session = onnxruntime.InferenceSession(str(model),
                                                   providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime reports a bad file as its own Fail/InvalidGraph
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"not a readable ONNX model ({first[:100]})", model) from None
        return cls(session, side[VOCAB_FILE], side[LABELS_FILE])

    def arrays(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """The graph's inputs for non-empty sentences: ids padded with 0, lengths."""
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        steps = int(lengths.max())
        words = np.zeros((len(sentences), steps), dtype=np.int64)
        casing = np.zeros_like(words)
        for b, tokens in enumerate(sentences):
            words[b, : len(tokens)] = self.words.encode(tokens)
            casing[b, : len(tokens)] = [word_shape(t) for t in tokens]
        out = {"words": words, "lengths": lengths, "casing": casing}
        if "chars" in self.inputs:
            if self.chars is None:
                raise DataError("the model takes character ids but the exported "
                                "vocabularies have no character table", VOCAB_FILE)
            width = max(1, max(len(t) for s in sentences for t in s))
            chars = np.zeros((len(sentences), steps, width), dtype=np.int64)
            for b, tokens in enumerate(sentences):
                for t, token in enumerate(tokens):
                    chars[b, t, : len(token)] = self.chars.encode(token)
            out["chars"] = chars
        return {name: out[name] for name in self.inputs}

    def outputs(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """The graph's output for non-empty sentences: emissions (B, T, L) or logits (B, C)."""
        return self.session.run(None, self.arrays(sentences))[0]

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = BATCH_SIZE,
                scores: bool = False) -> list:
        """Labels for each sentence, in order, with their scores if `scores` (taggers);
        batches of similar lengths."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        empty = (None, None) if self.task != "tagging" else \
            {"tags": [], "scores": [], "spans": []} if scores else []
        results: list = [empty] * len(sentences)
        order = sorted((i for i, s in enumerate(sentences) if s), key=lambda i: -len(sentences[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            tokens = [list(sentences[i]) for i in batch]
            out = self.outputs(tokens)
            if self.task == "tagging" and scores:
                lengths = np.array([len(t) for t in tokens])
                for i, d in zip(batch, decode(out, lengths, self.lattice, self.labels),
                                strict=True):
                    results[i] = d.named(self.labels)
            elif self.task == "tagging":  # the tags alone: Viterbi, without the marginals
                lengths = np.array([len(t) for t in tokens])
                for i, path in zip(batch, viterbi(out, lengths, self.lattice), strict=True):
                    results[i] = [self.labels[j] for j in path]
            else:
                logits = out.astype(np.float64)
                probs = np.exp(logits - logits.max(-1, keepdims=True))
                probs /= probs.sum(-1, keepdims=True)  # (B, C)
                for i, row in zip(batch, probs, strict=True):
                    results[i] = (self.labels[int(row.argmax())], float(row.max()))
        return results
