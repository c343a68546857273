"""Checks of the synthetic sample datasets in data/ and of scripts/make_sample.py."""

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_sample.py"
DATA = ROOT / "data"
SPLITS = ("train", "dev", "test")
NER_FILES = [f"sample_ner/{split}.txt" for split in SPLITS]
SENTIMENT_FILES = [f"sample_sentiment/{split}.tsv" for split in SPLITS]
TAG = re.compile(r"^(O|[BI]-[A-Z]+)$")


def read_ner(path: Path) -> list[list[tuple[str, str]]]:
    """Sentences of (token, tag); asserts every token line has exactly two columns."""
    sentences, current = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        fields = line.split()
        if not fields:
            if current:
                sentences.append(current)
                current = []
            continue
        assert len(fields) == 2, f"{path}:{lineno}: {len(fields)} columns in {line!r}"
        token, tag = fields
        assert TAG.match(tag), f"{path}:{lineno}: bad tag {tag!r}"
        if token != "-DOCSTART-":
            current.append((token, tag))
    if current:
        sentences.append(current)
    return sentences


def entities(sentence: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(type, surface string) of each entity; a stray I- opens an entity like B- does."""
    spans: list[list] = []
    previous = "O"
    for token, tag in sentence:
        if tag == "O":
            previous = tag
            continue
        etype = tag[2:]
        if tag.startswith("B-") or previous == "O" or previous[2:] != etype:
            spans.append([etype, [token]])
        else:
            spans[-1][1].append(token)
        previous = tag
    return [(etype, " ".join(tokens)) for etype, tokens in spans]


def test_regeneration_is_byte_identical(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in NER_FILES + SENTIMENT_FILES:
        committed = DATA / name
        assert committed.is_file(), f"{committed} missing: run python scripts/make_sample.py"
        assert (tmp_path / name).read_bytes() == committed.read_bytes(), (
            f"{name} differs from a fresh run of scripts/make_sample.py"
        )


@pytest.mark.parametrize("name", NER_FILES)
def test_ner_file_parses(name):
    path = DATA / name
    text = path.read_text(encoding="utf-8")
    assert text.startswith("-DOCSTART- O\n\n")
    assert text.endswith("\n")
    sentences = read_ner(path)
    assert sentences
    assert all(5 <= len(sentence) <= 30 for sentence in sentences)


@pytest.mark.parametrize("name", NER_FILES)
def test_ner_has_three_entity_types(name):
    types = {etype for sentence in read_ner(DATA / name) for etype, _ in entities(sentence)}
    assert {"PER", "LOC", "ORG"} <= types


def test_ner_train_names_are_ambiguous():
    types_of = defaultdict(set)
    for sentence in read_ner(DATA / "sample_ner/train.txt"):
        for etype, string in entities(sentence):
            types_of[string].add(etype)
    ambiguous = sum(len(types) > 1 for types in types_of.values())
    assert ambiguous >= 0.2 * len(types_of), f"{ambiguous}/{len(types_of)} strings ambiguous"


@pytest.mark.parametrize("name", SENTIMENT_FILES)
def test_sentiment_file(name):
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tsentence"
    labels = []
    for line in lines[1:]:
        label, sentence = line.split("\t")
        assert label in ("0", "1")
        assert sentence == sentence.lower() and sentence.strip()
        labels.append(label)
    share = labels.count("1") / len(labels)
    assert 0.4 <= share <= 0.6, f"{share:.0%} positive"
