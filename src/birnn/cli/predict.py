"""Tag or classify new text with a trained checkpoint: `python predict.py ckpt=PATH input=FILE`.

Everything comes from the checkpoint: the model class (from its vocabularies' `task`), the
hyper-parameters, the weights and the word/label vocabularies. Input is plain text (one
sentence per line, whitespace tokens; an empty line is an empty sentence) or a CoNLL-style
column file (blank-line-separated blocks, the token in `token_column`), told apart
automatically (`input_format=auto`), from a file or stdin (`input=-`). Output goes to a file or
stdout:

- taggers: CoNLL columns (`token tag`, a blank line after every sentence) or JSONL
  (`{"tokens": [...], "tags": [...], "scores": [...], "spans": [{"type", "start", "end",
  "score"}]}`: each tag's and each span's probability, see `birnn.decoding`);
- sentence classifiers: `label<TAB>probability<TAB>sentence` lines or JSONL
  (`{"tokens": [...], "label": ..., "probability": ...}`).

One output sentence (or line, or record) per input sentence, in input order; an empty
sentence gives an empty one.

`ckpt` may also be an exported model (`model.onnx`, or the folder `export.py` wrote): it runs
with ONNX Runtime (`birnn.export.runtime`) and gives the checkpoint's labels and scores.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from omegaconf import DictConfig

from birnn.data.columns import DOCSTART, read_columns
from birnn.errors import ConfigError, DataError
from birnn.export.runtime import OnnxRunner, is_onnx

log = logging.getLogger("birnn")

INPUT_FORMATS = ("auto", "text", "columns")
OUTPUT_FORMATS = {"tagging": ("conll", "jsonl"), "classification": ("tsv", "jsonl")}
DETECT_LINES = 2000  # non-blank lines looked at to tell a column file from plain text


class BelowError(logging.Filter):
    """Log records below ERROR only: `user_errors_exit` prints a user error on stderr itself,
    and predict's log shares stderr (stdout carries the predictions)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


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
        sentences = read_columns(lines, name, token_column, tag_column=None)
        return [s["tokens"] for s in sentences], input_format
    return [line.split() for line in lines], input_format


# ----------------------------------------------------------------------------------- output


def write_predictions(out: IO[str], task: str, fmt: str, sentences: Iterable[Sequence[str]],
                      predictions: Iterable) -> None:
    """Write one output sentence/line/record per input sentence (see the module docstring)."""
    for tokens, pred in zip(sentences, predictions, strict=True):
        if task == "tagging":
            record = pred if isinstance(pred, dict) else {"tags": pred}  # with scores or not
            if fmt == "jsonl":
                out.write(json.dumps({"tokens": list(tokens), **record},
                                     ensure_ascii=False) + "\n")
            else:
                pred = record["tags"]
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
    if is_onnx(cfg.ckpt):
        predictor = OnnxRunner.from_path(cfg.ckpt)
    else:  # imported here: an exported model needs neither the model code nor Lightning
        from birnn.inference import Predictor

        predictor = Predictor.from_checkpoint(cfg.ckpt, device=cfg.get("device", "cpu"))
    fmt = output_format(cfg.get("format", "auto"), predictor.task)
    sentences, input_format = read_sentences(str(cfg.input), cfg.get("input_format", "auto"),
                                             cfg.get("token_column", 0))
    predictions = predictor.predict(sentences, batch_size=cfg.get("batch_size", 256),
                                    scores=fmt == "jsonl")
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
