"""Tag or classify new text with a trained checkpoint: `python predict.py ckpt=PATH input=FILE`.

Everything comes from the checkpoint: the model class (from its vocabularies' `task`), the
hyper-parameters, the weights and the word/label vocabularies. Input is plain text (one
sentence per line, whitespace tokens; an empty line is an empty sentence) or a CoNLL-style
column file (blank-line-separated blocks, the token in `token_column`), told apart
automatically (`input_format=auto`), from a file or stdin (`input=-`). Output goes to a file or
stdout:

- taggers: CoNLL columns (`token tag`, a blank line after every sentence) or JSONL
  (`{"tokens": [...], "tags": [...]}`);
- sentence classifiers: `label<TAB>probability<TAB>sentence` lines or JSONL
  (`{"tokens": [...], "label": ..., "probability": ...}`).

One output sentence (or line, or record) per input sentence, in input order; an empty
sentence gives an empty one.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import torch
from omegaconf import DictConfig
from torch.nn.utils.rnn import pad_sequence

from birnn.data.columns import DOCSTART
from birnn.data.vocab import Vocab, casing_ids, char_ids, pad_chars
from birnn.errors import ConfigError, DataError
from birnn.models import SentenceClassifier, TokenTagger
from birnn.models.base import BiRNNModule

log = logging.getLogger("birnn")

MODELS: dict[str, type[BiRNNModule]] = {"tagging": TokenTagger,
                                        "classification": SentenceClassifier}
INPUT_FORMATS = ("auto", "text", "columns")
OUTPUT_FORMATS = {"tagging": ("conll", "jsonl"), "classification": ("tsv", "jsonl")}
DEVICES = ("cpu", "cuda", "auto")
DETECT_LINES = 2000  # non-blank lines looked at to tell a column file from plain text


class BelowError(logging.Filter):
    """Log records below ERROR only: `user_errors_exit` prints a user error on stderr itself,
    and predict's log shares stderr (stdout carries the predictions)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


# ------------------------------------------------------------------------------ checkpoints


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file: `path` itself, or `path/checkpoints/best.ckpt` for a run folder."""
    path = Path(path)
    if path.is_dir() and (path / "checkpoints" / "best.ckpt").is_file():
        return path / "checkpoints" / "best.ckpt"
    if not path.is_file():
        raise DataError("checkpoint not found (ckpt=PATH: a .ckpt file or a run folder)", path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a birnn checkpoint safely (`torch.load(weights_only=True)`: tensors and plain
    Python values only, no arbitrary unpickling) and check it holds what a model needs.

    Raises DataError, naming the file, for a missing, truncated or foreign file.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise DataError("not a birnn checkpoint: it holds objects other than tensors and "
                            "plain Python values, which are not unpickled (weights_only)",
                            path) from None
        raise DataError(f"not a readable checkpoint: corrupt or not a PyTorch file "
                        f"({_brief(e)})", path) from None
    except EOFError:
        raise DataError("not a readable checkpoint (empty or truncated file)", path) from None
    except OSError as e:
        raise DataError(f"cannot read the checkpoint: {e.strerror or e}", path) from None
    except Exception as e:  # torch reports a damaged zip archive as RuntimeError and others
        raise DataError(f"not a readable checkpoint: truncated or corrupt ({_brief(e)})",
                        path) from None
    if not isinstance(checkpoint, dict):
        raise DataError("not a birnn checkpoint (not a Lightning checkpoint dictionary)", path)
    missing = [k for k in ("state_dict", "hyper_parameters", "vocabularies")
               if not checkpoint.get(k)]
    if missing:
        raise DataError(f"not a birnn checkpoint (no {', '.join(missing)}): pass the "
                        "checkpoints/best.ckpt of a `python train.py` run", path)
    vocabularies = checkpoint["vocabularies"]
    task = vocabularies.get("task") if isinstance(vocabularies, dict) else None
    if task not in MODELS:
        raise DataError(f"not a birnn checkpoint (unknown task {task!r})", path)
    return checkpoint


def _brief(error: Exception, limit: int = 100) -> str:
    """An exception's first sentence, for a one-line message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_model(checkpoint: dict, path: str | Path = "checkpoint") -> BiRNNModule:
    """The model of a checkpoint read by `load_checkpoint`, weights loaded, on the CPU, in
    eval mode. What `cls.load_from_checkpoint` does, without reading the file again."""
    cls = MODELS[checkpoint["vocabularies"]["task"]]
    try:
        model = cls(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise DataError(f"the checkpoint does not fit {cls.__name__} ({_brief(e)})",
                        path) from None
    model.on_load_checkpoint(checkpoint)
    return model.eval()


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise ConfigError(f"device: unknown {device!r} (valid: {', '.join(DEVICES)})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available (use device=cpu)")
    return torch.device(device)


class Predictor:
    """A checkpoint's model and vocabularies, ready to label tokenised sentences.

    >>> predictor = Predictor.from_checkpoint("outputs/DATE/TIME/checkpoints/best.ckpt")
    >>> predictor.predict([["EU", "rejects", "German", "call"]])   # tagger
    [['B-ORG', 'O', 'B-MISC', 'O']]

    A sentence classifier returns `(label, probability)` per sentence instead. An empty
    sentence gives `[]` (tagger) or `(None, None)` (classifier).
    """

    def __init__(self, model: BiRNNModule, vocabularies: dict, device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.task = vocabularies["task"]
        self.words = Vocab.from_state_dict(vocabularies["words"])
        self.labels = [str(label) for label in Vocab.from_state_dict(vocabularies["labels"]).itos]
        chars = vocabularies.get("chars")
        self.chars = Vocab.from_state_dict(chars) if chars else None

    def features(self, sentences: list[Sequence[str]]) -> dict[str, torch.Tensor]:
        """A tagger's token features, as its data module batches them: `casing` (B, T) and,
        with a character vocabulary, `chars` (B, T, W)."""
        out = {"casing": pad_sequence([casing_ids(list(s)) for s in sentences],
                                      batch_first=True, padding_value=0).to(self.device)}
        if self.chars is not None:
            out["chars"] = pad_chars([char_ids(self.chars, list(s))
                                      for s in sentences]).to(self.device)
        return out

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Predictor:
        path = checkpoint_path(path)
        checkpoint = load_checkpoint(path)
        return cls(build_model(checkpoint, path), checkpoint["vocabularies"], device)

    @torch.inference_mode()
    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list:
        """Labels for each sentence, in order; batches of similar lengths (sorted by length)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        empty = [] if self.task == "tagging" else (None, None)
        results: list = [empty] * len(sentences)
        order = sorted((i for i, s in enumerate(sentences) if s), key=lambda i: -len(sentences[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids = [torch.tensor(self.words.encode(sentences[i]), dtype=torch.int64)
                   for i in batch]
            lengths = torch.tensor([len(x) for x in ids], dtype=torch.int64)  # (B,)
            words = pad_sequence(ids, batch_first=True, padding_value=0).to(self.device)
            if self.task == "tagging":
                features = self.features([sentences[i] for i in batch])
                predicted = self.model.decode(words, lengths, **features)  # trimmed
                for i, tags in zip(batch, predicted, strict=True):
                    results[i] = [self.labels[j] for j in tags]
            else:
                scores = self.model(words, lengths).float()  # (B, labels)
                probability, predicted = scores.softmax(-1).max(-1)  # (B,), (B,)
                for i, p, j in zip(batch, probability.cpu().tolist(), predicted.cpu().tolist(),
                                   strict=True):
                    results[i] = (self.labels[j], p)
        return results


# ------------------------------------------------------------------------------------ input


def read_lines(source: str) -> tuple[list[str], str]:
    """The input's lines (decoded as UTF-8, line ends removed) and its name for messages;
    `-` reads stdin."""
    name = "<stdin>" if source == "-" else source
    try:
        if source == "-":
            raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else \
                sys.stdin.read().encode("utf-8")
        else:
            raw = Path(source).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read the input: {e.strerror or e}", name) from None
    lines = []
    for lineno, line in enumerate(io.BytesIO(raw), start=1):
        try:
            lines.append(line.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as e:
            raise DataError(f"not valid utf-8 (byte {line[e.start]:#04x} at column "
                            f"{e.start + 1})", name, lineno) from None
    if lines and lines[0].startswith("\ufeff"):  # a byte-order mark
        lines[0] = lines[0][1:]
    return lines, name


def looks_like_columns(lines: Sequence[str]) -> bool:
    """A column file: `-DOCSTART-` lines, or non-blank lines that mostly have the same number
    (2 or more) of columns, in blank-line-separated blocks of several lines each. Plain text
    (one sentence per line) has lines of varying lengths, or blocks of one line."""
    counts: list[int] = []
    blocks, in_block = 0, False
    for line in lines:
        fields = line.split()
        if not fields:
            in_block = False
            continue
        if fields[0] == DOCSTART:
            return True
        counts.append(len(fields))
        blocks += not in_block
        in_block = True
        if len(counts) >= DETECT_LINES:
            break
    if len(counts) < 2 or blocks < 1 or len(counts) < 2 * blocks:
        return False
    width, seen = Counter(counts).most_common(1)[0]
    separated = blocks > 1 or (lines and not lines[-1].split())  # a sentence then a blank line
    return width >= 2 and seen >= 0.9 * len(counts) and bool(separated)


def parse_columns(lines: Sequence[str], name: str, token_column: int = 0) -> list[list[str]]:
    """Sentences of a column file: blank-line-separated blocks, the token in `token_column`."""
    sentences, tokens = [], []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            if tokens:
                sentences.append(tokens)
                tokens = []
            continue
        if fields[0] == DOCSTART:
            continue
        if not -len(fields) <= token_column < len(fields):
            raise DataError(f"token_column={token_column} but the line has {len(fields)} "
                            "column(s)", name, lineno)
        tokens.append(fields[token_column])
    if tokens:
        sentences.append(tokens)
    return sentences


def read_sentences(source: str, input_format: str = "auto",
                   token_column: int = 0) -> tuple[list[list[str]], str]:
    """Tokenised sentences of a file (or stdin for `-`) and the format they were read as."""
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"input_format: unknown {input_format!r} "
                          f"(valid: {', '.join(INPUT_FORMATS)})")
    lines, name = read_lines(source)
    if input_format == "auto":
        input_format = "columns" if looks_like_columns(lines) else "text"
    if input_format == "columns":
        return parse_columns(lines, name, token_column), input_format
    return [line.split() for line in lines], input_format


# ----------------------------------------------------------------------------------- output


def write_predictions(out: IO[str], task: str, fmt: str, sentences: Iterable[Sequence[str]],
                      predictions: Iterable) -> None:
    """Write one output sentence/line/record per input sentence (see the module docstring)."""
    for tokens, pred in zip(sentences, predictions, strict=True):
        if task == "tagging":
            if fmt == "jsonl":
                out.write(json.dumps({"tokens": list(tokens), "tags": pred},
                                     ensure_ascii=False) + "\n")
            else:
                out.writelines(f"{t} {tag}\n" for t, tag in zip(tokens, pred, strict=True))
                out.write("\n")
        else:
            label, probability = pred
            if fmt == "jsonl":
                out.write(json.dumps({"tokens": list(tokens), "label": label,
                                      "probability": probability}, ensure_ascii=False) + "\n")
            elif label is None:
                out.write("\n")
            else:
                out.write(f"{label}\t{probability:.4f}\t{' '.join(tokens)}\n")


def output_format(fmt: str, task: str) -> str:
    valid = OUTPUT_FORMATS[task]
    if fmt == "auto":
        return valid[0]
    if fmt not in valid:
        what = "a tagger" if task == "tagging" else "a sentence classifier"
        raise ConfigError(f"format: {fmt!r} is not an output of {what} "
                          f"(valid: auto, {', '.join(valid)})")
    return fmt


# ---------------------------------------------------------------------------------- command


def predict(cfg: DictConfig) -> dict:
    """Read `cfg.input`, label it with `cfg.ckpt`, write `cfg.output` (stdout when null).

    Returns a summary: sentences, tokens, input format, output format, seconds.
    """
    started = time.time()
    predictor = Predictor.from_checkpoint(cfg.ckpt, device=cfg.get("device", "cpu"))
    fmt = output_format(cfg.get("format", "auto"), predictor.task)
    sentences, input_format = read_sentences(str(cfg.input), cfg.get("input_format", "auto"),
                                             cfg.get("token_column", 0))
    predictions = predictor.predict(sentences, batch_size=cfg.get("batch_size", 256))
    output = cfg.get("output")
    if output in (None, "", "-"):
        write_predictions(sys.stdout, predictor.task, fmt, sentences, predictions)
        sys.stdout.flush()
    else:
        try:
            with Path(output).open("w", encoding="utf-8") as f:
                write_predictions(f, predictor.task, fmt, sentences, predictions)
        except OSError as e:
            raise DataError(f"cannot write the output: {e.strerror or e}", output) from None
    summary = {
        "sentences": len(sentences),
        "tokens": sum(len(s) for s in sentences),
        "input_format": input_format,
        "format": fmt,
        "seconds": time.time() - started,
    }
    log.info("predict: %d sentences (%s input), %d tokens, %s output to %s in %.1f s",
             summary["sentences"], input_format, summary["tokens"], fmt,
             output or "stdout", summary["seconds"])
    return summary
