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
sentence gives an empty one. The input streams through: it is read, labelled and written
`CHUNK` sentences at a time, so a file of any size runs in bounded memory, with a progress
bar on a terminal.

`ckpt` may also be an exported model (`model.onnx`, or the folder `export.py` wrote): it runs
with ONNX Runtime (`birnn.export.runtime`) and gives the checkpoint's labels and scores.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from omegaconf import DictConfig

from birnn.data.columns import DOCSTART, read_columns
from birnn.errors import ConfigError, DataError
from birnn.export.runtime import BATCH_SIZE, OnnxRunner, is_onnx

log = logging.getLogger("birnn")

INPUT_FORMATS = ("auto", "text", "columns")
OUTPUT_FORMATS = {"tagging": ("conll", "jsonl"), "classification": ("tsv", "jsonl")}
DETECT_LINES = 2000  # non-blank lines looked at to tell a column file from plain text
# sentences labelled at a time: memory stays bounded on any input, and sorting this many by
# length fills batches nearly as evenly as sorting the whole input
CHUNK = 8192


class BelowError(logging.Filter):
    """Log records below ERROR only: `user_errors_exit` prints a user error on stderr itself,
    and predict's log shares stderr (stdout carries the predictions)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


# ------------------------------------------------------------------------------------ input


class Input:
    """The lines of a file, or of stdin for `-`, decoded as UTF-8 one at a time (line ends
    removed), with the bytes read so far for the progress bar."""

    def __init__(self, source: str):
        self.source = source
        self.name = "<stdin>" if source == "-" else source
        self.size: int | None = None  # bytes in all; unknown for stdin
        self.bytes_read = 0
        if source != "-":
            try:
                self.size = Path(source).stat().st_size
            except OSError as e:
                raise DataError(f"cannot read the input: {e.strerror or e}", self.name) \
                    from None

    def lines(self) -> Iterator[str]:
        if self.source == "-":
            raw = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else \
                (line.encode("utf-8") for line in sys.stdin)
            yield from self._decoded(raw)
            return
        try:
            handle = Path(self.source).open("rb")
        except OSError as e:
            raise DataError(f"cannot read the input: {e.strerror or e}", self.name) from None
        with handle:
            yield from self._decoded(handle)

    def _decoded(self, raw: Iterable[bytes]) -> Iterator[str]:
        for lineno, line in enumerate(raw, start=1):
            self.bytes_read += len(line)
            try:
                text = line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"not valid utf-8 (byte {line[e.start]:#04x} at column "
                                f"{e.start + 1})", self.name, lineno) from None
            yield text.removeprefix("\ufeff") if lineno == 1 else text  # a byte-order mark


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


def read_sentences(source: str | Input, input_format: str = "auto",
                   token_column: int = 0) -> tuple[Iterator[list[str]], str]:
    """The tokenised sentences of a file (or stdin for `-`), read as they are consumed, and
    the format they are read as. `auto` looks at the first `DETECT_LINES` non-blank lines."""
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"input_format: unknown {input_format!r} "
                          f"(valid: {', '.join(INPUT_FORMATS)})")
    source = source if isinstance(source, Input) else Input(source)
    lines = source.lines()
    head: list[str] = []
    if input_format == "auto":
        seen = 0
        for line in lines:  # held back until the format is known, then read first
            head.append(line)
            seen += bool(line.strip())
            if seen >= DETECT_LINES:
                break
        input_format = "columns" if looks_like_columns(head) else "text"
    lines = itertools.chain(head, lines)
    if input_format == "columns":
        sentences = read_columns(lines, source.name, token_column, tag_column=None)
        return (s["tokens"] for s in sentences), input_format
    return (line.split() for line in lines), input_format


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


@contextlib.contextmanager
def open_output(output: str | None) -> Iterator[IO[str]]:
    """The output file, or stdout for null, `""` or `-`."""
    if output in (None, "", "-"):
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        handle = Path(output).open("w", encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot write the output: {e.strerror or e}", output) from None
    with handle:
        yield handle


@contextlib.contextmanager
def progress_bar(source: Input, shown: bool):
    """`advance(sentences, tokens)` for a bar on stderr over the input's bytes (a counter for
    stdin); a no-op when not `shown` or when stderr is not a terminal."""
    if not (shown and sys.stderr.isatty()):
        yield lambda sentences, tokens: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("predict"), BarColumn(), TextColumn("{task.fields[done]}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("predict", total=source.size, done="")

        def advance(sentences: int, tokens: int) -> None:
            bar.update(task, completed=source.bytes_read,
                       done=f"{sentences:,} sentences, {tokens:,} tokens")

        yield advance


def load_predictor(ckpt: str, device: str = "cpu"):
    """The `Predictor` of a checkpoint, or the `OnnxRunner` of an exported model."""
    if is_onnx(ckpt):
        return OnnxRunner.from_path(ckpt)
    # imported here: an exported model needs neither the model code nor Lightning
    from birnn.inference import Predictor

    return Predictor.from_checkpoint(ckpt, device=device)


def label_stream(predictor, sentences: Iterator[list[str]], out: IO[str], fmt: str,
                 batch_size: int = BATCH_SIZE,
                 advance=lambda sentences, tokens: None) -> tuple[int, int]:
    """Label `sentences` with `predictor` (`Predictor` or `OnnxRunner`) and write them to
    `out` in `fmt`, `CHUNK` sentences at a time (each chunk sorted by length into batches,
    written in input order), so memory does not grow with the input. Returns the sentences
    and tokens labelled."""
    count = tokens = 0
    while chunk := list(itertools.islice(sentences, CHUNK)):
        predictions = predictor.predict(chunk, batch_size=batch_size, scores=fmt == "jsonl")
        write_predictions(out, predictor.task, fmt, chunk, predictions)
        count, tokens = count + len(chunk), tokens + sum(map(len, chunk))
        advance(count, tokens)
    return count, tokens


def predict(cfg: DictConfig) -> dict:
    """Read `cfg.input`, label it with `cfg.ckpt`, write `cfg.output` (stdout when null).

    Returns a summary: sentences, tokens, input format, output format, seconds.
    """
    started = time.time()
    predictor = load_predictor(str(cfg.ckpt), cfg.get("device", "cpu"))
    fmt = output_format(cfg.get("format", "auto"), predictor.task)
    source = Input(str(cfg.input))
    sentences, input_format = read_sentences(source, cfg.get("input_format", "auto"),
                                             cfg.get("token_column", 0))
    output = cfg.get("output")
    with open_output(output) as out, progress_bar(source, cfg.get("progress", True)) as advance:
        count, tokens = label_stream(predictor, sentences, out, fmt,
                                     cfg.get("batch_size", BATCH_SIZE), advance)
    summary = {"sentences": count, "tokens": tokens, "input_format": input_format,
               "format": fmt, "seconds": time.time() - started}
    log.info("predict: %d sentences (%s input), %d tokens, %s output to %s in %.1f s",
             count, input_format, tokens, fmt, output or "stdout", summary["seconds"])
    return summary
