"""Where raw splits come from: local files of several formats, or the HuggingFace Hub.

Everything is loaded through `datasets` (its json/csv/parquet builders, or
`Dataset.from_generator` for column files), so Arrow caching is theirs. Each loader returns
one `datasets.Dataset` per split with standard columns:

- tagging: ``tokens`` (list of str) and ``tags`` (list of str); in CSV/TSV, whose cells cannot
  hold lists, both are space-separated strings;
- classification: ``tokens`` (the text split on whitespace) and ``label`` (str).

Local text formats are checked line by line first, so a malformed file is reported with its
file and line number (`DataError`) rather than as a parser's traceback.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import datasets

from birnn.data.columns import read_column_file
from birnn.errors import BirnnError, ConfigError, DataError

FORMATS = ("conll", "jsonl", "csv", "tsv", "parquet")
EXTENSIONS = {
    ".txt": "conll", ".conll": "conll", ".iob": "conll", ".bio": "conll",
    ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
}
HUB_PROBE_TIMEOUT_S = 3.0
SKIPS_NAMED = 5  # places of skipped sentences named in the warning

log = logging.getLogger(__name__)

datasets.disable_progress_bars()


# ----------------------------------------------------------------------------- local files


def detect_format(path: Path, format: str = "auto") -> str:
    """The format named in the config, or the one the file's extension implies."""
    if format != "auto":
        if format not in FORMATS:
            raise ConfigError(
                f"data.format: unknown {format!r} (valid: auto, {', '.join(FORMATS)})")
        return format
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"cannot tell the format from the extension {path.suffix!r}: set data.format "
            f"({', '.join(FORMATS)})", path)
    return found


def _fingerprint(path: Path, *options) -> str:
    stat = path.stat()
    key = "|".join(map(str, (path.resolve(), stat.st_size, stat.st_mtime_ns, *options)))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _surface_own_error(e: Exception) -> None:
    """datasets wraps errors raised inside its builders; re-raise ours unwrapped."""
    cause = e
    while cause is not None and not isinstance(cause, BirnnError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        raise cause from None


def _decoded_lines(path: Path):
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not valid utf-8 (byte {raw[e.start]:#04x} at column {e.start + 1})",
                    path, lineno) from None


def check_delimited(path: Path, delimiter: str, required: Sequence[str]) -> list[str]:
    """Check a CSV/TSV file: decodable, a header holding `required`, equal field counts.

    One `csv` reader runs over the whole file (so a quoted field may span lines, as in any
    CSV), strict about quoting; every problem is reported with the line it was found on.
    Returns the header.
    """
    header = None
    rows = 0
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    lines = (line for _, line in _decoded_lines(path))
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    csv.field_size_limit(max(csv.field_size_limit(), 2**30))  # long documents are valid
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({e})",
                            path, reader.line_num) from None
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            missing = [r for r in required if r not in header]
            if missing:
                raise DataError(
                    f"header {header} has no column {' or '.join(map(repr, missing))} "
                    "(set data.fields)", path, reader.line_num)
        elif len(fields) != len(header):
            raise DataError(f"{len(fields)} fields where the header has {len(header)}",
                            path, reader.line_num)
        else:
            rows += 1
    if header is None:
        raise DataError("empty file", path)
    if not rows:
        raise DataError("no rows after the header", path)
    return header


def check_jsonl(path: Path) -> list[str]:
    """Check a JSON Lines file: one JSON object per non-blank line. Returns the first keys."""
    keys = None
    for lineno, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except RecursionError:
            raise DataError("JSON nested too deeply", path, lineno) from None
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg} at column {e.colno})", path, lineno) from None
        if not isinstance(record, dict):
            raise DataError("each line must be a JSON object", path, lineno)
        keys = keys or list(record)
    if keys is None:
        raise DataError("empty file", path)
    return keys


def check_column_file(path: Path, token_column: int, tag_column: int,
                      bad_lines: str) -> None:
    """Raise on an empty column file; with `bad_lines="skip"` read it once and warn, counting
    every sentence left out and naming the first places (the Arrow cache of a later run would
    skip them without reading the file)."""
    if bad_lines == "error":  # a malformed line raises while `datasets` reads the file
        found = next(read_column_file(path, token_column, tag_column), None) is not None
    else:
        skipped: list[int] = []
        found = False
        for _ in read_column_file(path, token_column, tag_column, bad_lines=bad_lines,
                                  skipped=skipped):
            found = True
        if skipped:
            places = ", ".join(f"{path}:{n}" for n in skipped[:SKIPS_NAMED])
            more = f" and {len(skipped) - SKIPS_NAMED} more" if len(skipped) > SKIPS_NAMED else ""
            log.warning("data: %s: %d sentence%s with a malformed line skipped "
                        "(data.bad_lines=skip): %s%s", path.name, len(skipped),
                        "s" * (len(skipped) != 1), places, more)
    if not found:  # `datasets` rejects a generator that yields nothing obscurely
        raise DataError("empty file: no sentences", path)


def load_local_split(path: Path, format: str, task: str, fields: dict,
                     token_column: int = 0, tag_column: int = -1,
                     bad_lines: str = "error") -> datasets.Dataset:
    """Read one split file into a Dataset with the task's standard columns; `bad_lines`:
    what a malformed line of a column file does (`birnn.data.columns.BAD_LINES`)."""
    format = detect_format(path, format)
    try:
        if format == "conll":
            if task != "tagging":
                raise ConfigError("data.format: column files hold tagged tokens; sentence "
                                  "classification reads jsonl, csv, tsv or parquet")
            check_column_file(path, token_column, tag_column, bad_lines)
            return datasets.Dataset.from_generator(
                read_column_file,
                gen_kwargs={"path": str(path), "token_column": token_column,
                            "tag_column": tag_column, "bad_lines": bad_lines},
                features=datasets.Features({
                    "tokens": datasets.Sequence(datasets.Value("string")),
                    "tags": datasets.Sequence(datasets.Value("string")),
                }),
                fingerprint=_fingerprint(path, token_column, tag_column, bad_lines),
            )
        if format in ("csv", "tsv"):
            delimiter = "\t" if format == "tsv" else ","
            header = check_delimited(path, delimiter, required=_required(task, fields, None))
            _required(task, fields, header)  # the text column may be any of several names
            kwargs = {"delimiter": delimiter}
            if format == "tsv":
                kwargs["quoting"] = csv.QUOTE_NONE
            ds = datasets.load_dataset("csv", data_files=str(path), split="train", **kwargs)
        elif format == "jsonl":
            _required(task, fields, check_jsonl(path))
            ds = datasets.load_dataset("json", data_files=str(path), split="train")
        else:
            try:
                ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
            except Exception as e:
                raise DataError(f"not a readable Parquet file ({type(e).__name__})", path) from None
            _required(task, fields, ds.column_names)
    except DataError as e:
        if e.path is None:  # a problem of the whole file (a missing field): name the file
            raise DataError(str(e), path) from None
        raise
    except BirnnError:
        raise
    except Exception as e:
        _surface_own_error(e)
        raise DataError(f"could not load ({type(e).__name__}: {e})", path) from None
    return standardize(ds, task, fields, source=str(path))


# --------------------------------------------------------------------------------- columns


def _text_field(fields: dict, columns: Sequence[str]) -> str | None:
    names = fields.get("text", "text")
    names = [names] if isinstance(names, str) else list(names)
    return next((n for n in names if n in columns), None)


def _required(task: str, fields: dict, columns: Sequence[str] | None) -> list[str]:
    """Fields the task needs; with `columns`, check they are there (DataError otherwise)."""
    if task == "tagging":
        needed = [fields.get("tokens", "tokens"), fields.get("tags", "tags")]
    else:
        needed = [fields.get("label", "label")]
        if columns is not None and _text_field(fields, columns) is None:
            raise DataError(f"no text column among {list(columns)} (looked for "
                            f"{fields.get('text', 'text')}; set data.fields.text)")
    if columns is not None:
        missing = [n for n in needed if n not in columns]
        if missing:
            raise DataError(f"no column {', '.join(map(repr, missing))} among {list(columns)} "
                            "(set data.fields)")
    return needed


def _names(ds: datasets.Dataset, column: str):
    """ClassLabel names of a label column (or of a sequence of labels), else None."""
    feature = ds.features[column]
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) -> ClassLabel
    if isinstance(feature, list):  # datasets >= 4 may use a plain list for sequences
        feature = feature[0]
    return getattr(feature, "names", None)


def _as_list(value) -> list[str]:
    """A sequence field: a list as is; a string (a CSV/TSV cell, which cannot hold a list) is
    read as space-separated items rather than as a sequence of characters."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(map(str, value))
    return str(value).split()  # pandas reads a one-token cell such as "1996" as a number


def _label_str(value) -> str | None:
    """A label as text; 1.0 (an integer column that pandas made float for a missing value)
    reads as "1", like the same label in a file without gaps."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def standardize(ds: datasets.Dataset, task: str, fields: dict, source: str) -> datasets.Dataset:
    """Rename and convert a split's columns to the task's standard ones."""
    try:
        _required(task, fields, ds.column_names)
    except DataError as e:
        raise DataError(str(e), source) from None
    if task == "tagging":
        tok, tag = fields.get("tokens", "tokens"), fields.get("tags", "tags")
        names = _names(ds, tag)

        def convert(batch):
            tags = batch[tag]
            if names is not None:
                tags = [[names[i] for i in seq] for seq in tags]
            return {"tokens": [_as_list(t) for t in batch[tok]],
                    "tags": [_as_list(t) for t in tags]}
    else:
        text, lab = _text_field(fields, ds.column_names), fields.get("label", "label")
        names = _names(ds, lab)

        def convert(batch):
            labels = batch[lab]
            if names is not None:
                labels = [names[i] if i is not None and i >= 0 else None for i in labels]
            return {"tokens": [("" if t is None else str(t)).split() for t in batch[text]],
                    "label": [_label_str(v) for v in labels]}

    # explicit features: without them `datasets` casts a column that keeps its name back to its
    # old type (integer labels stayed integers, unlike the same labels read from a TSV)
    columns = {"tokens": datasets.Sequence(datasets.Value("string"))}
    if task == "tagging":
        columns["tags"] = datasets.Sequence(datasets.Value("string"))
    else:
        columns["label"] = datasets.Value("string")
    return ds.map(convert, batched=True, remove_columns=ds.column_names,
                  features=datasets.Features(columns))


# ------------------------------------------------------------------------------------- Hub


def _hub_endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connection attempt to the Hub, so an unreachable Hub fails in seconds rather
    than after the HTTP client's retries."""
    try:
        with socket.create_connection(_hub_endpoint(), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub(path: str, name: str | None, revision: str | None, task: str, fields: dict,
             splits: dict) -> dict[str, datasets.Dataset]:
    """Load a Hub dataset and map its splits (`splits`: our split -> the Hub's split)."""
    label = f"{path}" + (f" ({name})" if name else "")
    hint = ("download it elsewhere and point data.dir at local copies (column files, JSONL, "
            "CSV/TSV or Parquet), e.g. `data.dir=../shared/data/...`")
    offline = datasets.config.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE") == "1"
    if not offline and not hub_reachable():
        raise DataError(f"cannot reach the HuggingFace Hub to load dataset {label}: {hint}")
    try:
        loaded = datasets.load_dataset(path, name, revision=revision)
    except Exception as e:
        why = "offline mode (HF_HUB_OFFLINE=1) and no cached copy" if offline else \
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise DataError(f"could not load dataset {label} from the HuggingFace Hub ({why}): "
                        f"{hint}") from None
    out = {}
    for ours, theirs in splits.items():
        if theirs is None:
            continue
        if theirs not in loaded:
            raise DataError(f"dataset {label} has no split {theirs!r} (has {list(loaded)}); "
                            f"set data.splits.{ours}")
        out[ours] = standardize(loaded[theirs], task, fields, source=f"{label}[{theirs}]")
    return out
