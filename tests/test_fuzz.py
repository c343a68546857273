"""Fuzz the local-data readers: whatever the bytes, a reader returns or raises the project's
own error (`BirnnError`) naming the file, and for a problem on a line, ``PATH:LINE:``.

Targets: `read_column_file` (consumed fully), `check_delimited` (TSV and CSV), `check_jsonl`,
and `load_local_split` for conll, tsv, csv and jsonl. Inputs are (a) arbitrary bytes and (b)
small valid files put through random edits: byte insertions, deletions and replacements
(with a bias to bytes that matter: quotes, CR, NUL, BOM, invalid UTF-8, Unicode line
separators), line duplications, drops and swaps, CRLF/LF flips, blank lines, and a column
added to or dropped from a line.

Budgets are fixed (derandomized, no example database) so a run is repeatable and the file
stays well under 30 s. Every call is timed (< 5 s) and stopped by an alarm after 20 s, so a
hang fails instead of blocking. Each example writes a new file name: `datasets` caches by
fingerprint (path, size, mtime).

Failures these fuzzers found (an exception that is not a BirnnError, a message without the
file, a CSV record misread or reported without its line) have regression tests at the end of
this file. A failure found and not fixed yet goes into KNOWN with a strict-xfail test.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import signal
import sys
import time
import traceback
from pathlib import Path

import datasets
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from birnn.data.columns import read_column_file
from birnn.data.sources import check_delimited, check_jsonl, load_local_split
from birnn.errors import BirnnError, DataError

MAX_CALL_S = 5.0  # each reader call must finish within this
ALARM_S = 20  # a call still running then is stopped and reported as a hang
# Problems of a whole file, which a line-oriented reader reports without a line number.
WHOLE_FILE = r": (empty file|cannot read|no rows after the header)"

TAGGING = {"tokens": "tokens", "tags": "tags"}  # conf/data/conll.yaml
CLASSIFICATION = {"text": ["sentence", "text", "content"], "label": "label"}  # sentences.yaml

# Small valid files, one per format: the starting points of the mutations.
SEEDS = {
    "conll": (
        b"-DOCSTART- O\n\nEarlier O\n, O\nCarlos B-PER\nSilva I-PER\n. O\n\n"
        b"The O\nmarket O\nin O\nBarcelona B-LOC\n"
    ),
    "tsv": (
        b"label\tsentence\n1\tdespite the weak humor , the ending is charming\n"
        b"0\tthe ending is hardly beautiful .\n"
    ),
    "csv": b'label,sentence\n1,"charming, and fresh"\n0,the ending is hardly beautiful .\n',
    "jsonl": (
        b'{"tokens": ["Carlos", "Silva", "."], "tags": ["B-PER", "I-PER", "O"]}\n'
        b'{"tokens": ["Barcelona"], "tags": ["B-LOC"]}\n'
    ),
    "jsonl-cls": b'{"text": "the ending is charming", "label": 1}\n{"text": "bland", "label": 0}\n',
}
DELIMITERS = {"conll": b" ", "tsv": b"\t", "csv": b",", "jsonl": b", ", "jsonl-cls": b", "}
EXTENSIONS = {"conll": ".txt", "tsv": ".tsv", "csv": ".csv", "jsonl": ".jsonl",
              "jsonl-cls": ".jsonl"}

# ------------------------------------------------------------------------------ inputs

INTERESTING = [
    b'"', b"'", b"\r", b"\r\n", b"\n", b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\xc2\x85",
    b"\xe2\x80\xa8", b"\x0c", b"\x1e", b"\t", b",", b" ", b"\\", b"-DOCSTART-", b"{", b"}",
    b"[", b"]", b"null", b"[]", b'""', b"NaN", b"1e999", b"\\ud800", b"\xed\xa0\x80",
    b"x" * 140_000,  # longer than the csv module's default field limit (131072)
]
# Replacements for one token (a word, a number or a quoted string): other JSON types and
# values that trip type inference (pandas reads "1996" as a number, an empty cell as NaN).
TOKENS = [
    b"null", b"true", b"0", b"-1", b"1.5", b"1e999", b"99999999999999999999", b"[]", b"{}",
    b"[null]", b"[1, 2]", b"[[\"a\"]]", b'{"a": 1}', b'""', b'"x"', b'"1996"', b"NaN",
    b"Infinity", b'"\\ud800"', b"", b"label", b"tokens", b"tags", b"sentence", b"text",
    b"[" * 5_000 + b"]" * 5_000,  # valid JSON deeper than the recursion limit (Hypothesis
    # raises the limit while a test runs, so the default 1000 is not enough)
]
OPS = ("insert", "delete", "replace", "token", "token", "dup_line", "drop_line", "swap_lines",
       "crlf", "lf", "blank_line", "add_column", "drop_column")
TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[^\s,"{}\[\]:]+')
payloads = st.one_of(st.sampled_from(INTERESTING), st.sampled_from(TOKENS),
                     st.binary(min_size=1, max_size=6))
mutations = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2**16), payloads),
                     min_size=1, max_size=6)


def _lines(data: bytes) -> list[bytes]:
    return [line for line in re.split(b"(?<=\n)", data) if line]


def mutate(data: bytes, ops, delimiter: bytes) -> bytes:
    """Apply `ops` ((name, number, payload) triples) to `data`, in order."""
    for name, n, payload in ops:
        if name in ("insert", "delete", "replace"):
            pos = n % (len(data) + 1)
            if name == "insert":
                data = data[:pos] + payload + data[pos:]
            elif name == "delete":
                data = data[:pos] + data[pos + 1 + n % 8:]
            else:
                data = data[:pos] + payload[:1] + data[pos + 1:]
            continue
        if name == "token":
            found = list(TOKEN.finditer(data))
            if found:
                m = found[n % len(found)]
                data = data[:m.start()] + payload + data[m.end():]
            continue
        if name == "crlf":
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            continue
        if name == "lf":
            data = data.replace(b"\r\n", b"\n")
            continue
        lines = _lines(data) or [b""]
        i = n % len(lines)
        line = lines[i]
        body, end = (line[:-1], b"\n") if line.endswith(b"\n") else (line, b"")
        if name == "dup_line":
            lines.insert(i, line if end else line + b"\n")
        elif name == "drop_line":
            del lines[i]
        elif name == "swap_lines" and i + 1 < len(lines):
            after = lines[i + 1]
            lines[i], lines[i + 1] = after if after.endswith(b"\n") else after + b"\n", line
        elif name == "blank_line":
            lines.insert(i, b"  \n" if n % 2 else b"\n")
        elif name == "add_column":
            lines[i] = body + delimiter + (b"X" if n % 2 else payload) + end
        elif name == "drop_column":
            lines[i] = body.rsplit(delimiter, 1)[0] + end
        data = b"".join(lines)
    return data


def mutated(fmt: str):
    return mutations.map(lambda ops: mutate(SEEDS[fmt], ops, DELIMITERS[fmt]))


def inputs(fmt: str):
    """Half arbitrary bytes, half edited valid files."""
    return st.binary(max_size=300) | mutated(fmt)


# ------------------------------------------------------------------------------ harness


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no reader's `except Exception` eats it."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder for the examples' files, and the `datasets` cache moved inside it."""
    root = tmp_path_factory.mktemp("fuzz")
    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = root / "hf-cache"
    yield root
    datasets.config.HF_DATASETS_CACHE = old


_names = itertools.count()


def write(folder: Path, data: bytes, fmt: str) -> Path:
    path = folder / f"ex{next(_names):05d}{EXTENSIONS[fmt]}"
    path.write_bytes(data)
    return path


@contextlib.contextmanager
def time_guard(what: str):
    """Fail a call that takes MAX_CALL_S or more, whether it returns or raises; stop it (a hang)
    after ALARM_S."""

    def ring(signum, frame):
        raise Hang(f"{what} still running after {ALARM_S} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, ALARM_S)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        elapsed = time.monotonic() - start
        if elapsed >= MAX_CALL_S:
            raise AssertionError(f"{what} took {elapsed:.1f} s")


def number_of_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


# Problems found by these fuzzers and not fixed yet: (exception type, message pattern), each
# with a strict-xfail regression test. A match is tolerated; anything else fails the fuzzers.
# The ones found so far are fixed; their regression tests are at the end of this file.
KNOWN: list[tuple[type[BaseException], str]] = []


def known(e: BaseException) -> bool:
    return any(isinstance(e, t) and re.search(p, str(e)) for t, p in KNOWN)


def outcome(call, path: Path, data: bytes, line_oriented: bool):
    """Run `call()`; check that it returns, or raises a BirnnError that names `path` (and for a
    line-oriented reader, a line of the file, unless the whole file is at fault)."""
    try:
        with time_guard(f"reading {path.name}"):
            result = call()
        event("returned")
        return result
    except BirnnError as e:
        message = str(e)
        gist = re.sub(rf"^{re.escape(str(path))}(:\d+)?: ", "", message).split(": ")[0]
        gist = re.sub(r"\[.*\]|'[^']*'", "", gist)  # drop the header or value quoted
        event(f"{type(e).__name__}: {' '.join(re.findall(r'[A-Za-z]+', gist)[:4])}")
        if str(path) not in message and known(e):
            return e
        assert str(path) in message, f"no file in {type(e).__name__}: {message}"
        line = getattr(e, "line", None)
        if line is not None:
            assert f"{path}:{line}: " in message, message
            assert 1 <= line <= number_of_lines(data), f"line {line} of {data!r}: {message}"
        elif line_oriented:
            assert isinstance(e, DataError), message
            assert re.search(WHOLE_FILE, message), f"no line number: {message}"
        return e
    except Exception as e:
        if known(e):
            event(f"known {type(e).__name__}: {str(e)[:40]}")
            return e
        raise AssertionError(f"{type(e).__name__} (not a BirnnError) on {data!r}:\n"
                             + "".join(traceback.format_exception(e))) from e


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------ fuzzers


@fuzz_settings(500)
@given(data=inputs("conll"), tag_column=st.sampled_from([-1, 1, None, 3]))
def test_read_column_file(workdir, data, tag_column):
    path = write(workdir, data, "conll")
    got = outcome(lambda: list(read_column_file(path, tag_column=tag_column)), path, data, True)
    if isinstance(got, list):
        for sentence in got:
            assert sentence["tokens"]
            assert len(sentence["tags"]) == (0 if tag_column is None else len(sentence["tokens"]))


@fuzz_settings(400)
@given(data=inputs("tsv"))
def test_check_delimited_tsv(workdir, data):
    path = write(workdir, data, "tsv")
    header = outcome(lambda: check_delimited(path, "\t", ["label"]), path, data, True)
    if isinstance(header, list):
        assert "label" in header


@fuzz_settings(400)
@given(data=inputs("csv"))
def test_check_delimited_csv(workdir, data):
    path = write(workdir, data, "csv")
    header = outcome(lambda: check_delimited(path, ",", ["label"]), path, data, True)
    if isinstance(header, list):
        assert "label" in header


@fuzz_settings(400)
@given(data=inputs("jsonl"))
def test_check_jsonl(workdir, data):
    path = write(workdir, data, "jsonl")
    keys = outcome(lambda: check_jsonl(path), path, data, True)
    if isinstance(keys, list):
        assert all(isinstance(k, str) for k in keys)


LOADS = {  # fmt: (format, task, fields, examples)
    "conll": ("conll", "tagging", TAGGING, 120),
    "tsv": ("tsv", "classification", CLASSIFICATION, 120),
    "csv": ("csv", "classification", CLASSIFICATION, 120),
    "jsonl": ("jsonl", "tagging", TAGGING, 120),
    "jsonl-cls": ("jsonl", "classification", CLASSIFICATION, 100),
}


def _load_test(fmt: str):
    format, task, fields, examples = LOADS[fmt]

    @fuzz_settings(examples)
    @given(data=inputs(fmt))
    def test(workdir, data):
        path = write(workdir, data, fmt)
        ds = outcome(lambda: load_local_split(path, format, task, fields), path, data, False)
        if isinstance(ds, datasets.Dataset):
            gold = "tags" if task == "tagging" else "label"
            assert set(ds.column_names) == {"tokens", gold}

    test.__name__ = f"test_load_local_split_{fmt.replace('-', '_')}"
    return test


test_load_local_split_conll = _load_test("conll")
test_load_local_split_tsv = _load_test("tsv")
test_load_local_split_csv = _load_test("csv")
test_load_local_split_jsonl = _load_test("jsonl")
test_load_local_split_jsonl_cls = _load_test("jsonl-cls")


def test_time_guard(monkeypatch):
    """A slow call fails whether it returns or raises; a hung one is stopped."""
    monkeypatch.setattr(sys.modules[__name__], "MAX_CALL_S", 0.01)
    with pytest.raises(AssertionError, match="took"), time_guard("a slow call"):
        time.sleep(0.02)
    with pytest.raises(AssertionError, match="took"), time_guard("a slow failing call"):
        time.sleep(0.02)
        raise DataError("late")
    monkeypatch.setattr(sys.modules[__name__], "MAX_CALL_S", 10.0)
    monkeypatch.setattr(sys.modules[__name__], "ALARM_S", 0.05)
    with pytest.raises(Hang), time_guard("a hung call"):
        time.sleep(5)


def test_mutations_change_the_seed():
    """The mutator itself: each edit does what it says on a known input."""
    seed = b"a b\nc d\n"
    assert mutate(seed, [("crlf", 0, b"")], b" ") == b"a b\r\nc d\r\n"
    assert mutate(b"a b\r\n", [("lf", 0, b"")], b" ") == b"a b\n"
    assert mutate(seed, [("dup_line", 1, b"")], b" ") == b"a b\nc d\nc d\n"
    assert mutate(seed, [("drop_line", 0, b"")], b" ") == b"c d\n"
    assert mutate(seed, [("swap_lines", 0, b"")], b" ") == b"c d\na b\n"
    assert mutate(seed, [("add_column", 1, b"")], b" ") == b"a b\nc d X\n"
    assert mutate(seed, [("drop_column", 0, b"")], b" ") == b"a\nc d\n"
    assert mutate(seed, [("insert", 1, b"!")], b" ") == b"a! b\nc d\n"
    assert mutate(seed, [("replace", 0, b"z")], b" ") == b"z b\nc d\n"
    assert mutate(seed, [("delete", 0, b"")], b" ") == b" b\nc d\n"
    assert mutate(seed, [("token", 3, b"[]")], b" ") == b"a b\nc []\n"
    assert mutate(b'{"a": "b c"}', [("token", 1, b"1")], b" ") == b'{"a": 1}'


# ------------------------------------------------------------------ regression tests


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path


@pytest.mark.parametrize(("name", "delimiter"), [("a.tsv", "\t"), ("a.csv", ",")])
def test_bare_cr_in_a_delimited_line_is_a_data_error(folder, name, delimiter):
    path = folder / name
    path.write_bytes(b"label\r1\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: "):
        check_delimited(path, delimiter, ["label"])


def test_long_field_in_a_delimited_file(folder):
    path = folder / "long.csv"
    path.write_bytes(b"label,sentence\n1," + b"x" * 140_000 + b"\n")
    try:  # a long text is valid; rejecting it would be fine too, with its line
        assert check_delimited(path, ",", ["label"]) == ["label", "sentence"]
    except DataError as e:
        assert f"{path}:2: " in str(e)


def test_deep_json_nesting_is_a_data_error(folder):
    path = folder / "deep.jsonl"
    path.write_bytes(b"[" * 5_000 + b"]" * 5_000 + b"\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: "):
        check_jsonl(path)


@pytest.mark.parametrize(("name", "data", "format", "task", "fields"), [
    ("x.jsonl", b'{"x": ["a"], "tags": ["O"]}\n', "jsonl", "tagging", TAGGING),
    ("x.jsonl", b'{"text": "a"}\n', "jsonl", "classification", CLASSIFICATION),
    ("x.tsv", b"label\tx\n1\ta\n", "tsv", "classification", CLASSIFICATION),
], ids=["jsonl-tagging", "jsonl-classification", "tsv-classification"])
def test_missing_field_names_the_file(folder, name, data, format, task, fields):
    path = folder / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"no (text )?column") as info:
        load_local_split(path, format, task, fields)
    assert str(path) in str(info.value)


def test_csv_record_across_lines_is_not_misread(folder):
    path = folder / "multiline.csv"
    path.write_bytes(b'label,sentence\n1,"a\nb",c\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:[23]: "):
        load_local_split(path, "csv", "classification", CLASSIFICATION)


def test_csv_unterminated_quote_names_its_line(folder):
    path = folder / "quote.csv"
    path.write_bytes(b'label,sentence\n1,"a\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: "):
        load_local_split(path, "csv", "classification", CLASSIFICATION)
