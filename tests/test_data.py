"""Data sources and data modules: the same data in every local format gives the same batches,
tag schemes convert to the same gold spans, the Hub fails fast offline, malformed files are
reported by file and line, vocabularies come from train only, and bucketing cuts padding.

Expected values are computed here, independently of `birnn.data` (vocabularies counted with
`Counter`, schemes converted with the small converter below, padding counted on the batches)."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, SAMPLE_NER

from birnn.cli.app import user_errors_exit
from birnn.cli.train import train
from birnn.data import BucketBatchSampler, ClassificationDataModule, TaggingDataModule
from birnn.errors import ConfigError, DataError

SAMPLE_SENTIMENT = ROOT / "data" / "sample_sentiment"
SPLITS = {"train": "train", "validation": "dev", "test": "test"}

# ------------------------------------------------------------------------------ tiny datasets

TAGGED = {
    "train": [
        (["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
         ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
        (["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
        (["The", "European", "Commission", "said", "on", "Thursday", "it", "disagreed", "."],
         ["O", "B-ORG", "I-ORG", "O", "O", "O", "O", "O", "O"]),
        (["Germany", "'s", "representative", "to", "the", "EU", "said", "."],
         ["B-LOC", "O", "O", "O", "O", "B-ORG", "O", "O"]),
        (["1996"], ["O"]),  # a one-token sentence that CSV readers take for a number
    ],
    "validation": [
        (["Peter", "said", "the", "EU", "rejects", "lamb", "."],
         ["B-PER", "O", "O", "B-ORG", "O", "O", "O"]),
        (["British", "Commission"], ["B-MISC", "B-ORG"]),
    ],
    "test": [
        (["Germany", "said", "on", "Thursday", "."], ["B-LOC", "O", "O", "O", "O"]),
        (["Blackburn", "to", "BRUSSELS"], ["B-PER", "O", "B-LOC"]),
        (["European", "Commission", "rejects", "call"], ["B-ORG", "I-ORG", "O", "O"]),
    ],
}

SENTENCES = {
    "train": [
        ("a gripping , funny film", 1), ("dull and far too long", 0),
        ("the cast is \"wonderful\" ; the plot is not", 1), ("it 's a mess", 0),
        ("funny , warm and wise", 1), ("long , dull , and loud", 0), ("wise film", 1),
        ("1996", 0),
    ],
    "validation": [("a funny mess", 1), ("far too dull", 0), ("wonderful cast", 1)],
    "test": [("gripping and wise", 1), ("a loud , long mess", 0)],
}


def write_conll(path: Path, sentences, crlf: bool = False) -> None:
    """Three columns (token, a dummy POS column, tag) with a -DOCSTART- line, as CoNLL-2003."""
    nl = "\r\n" if crlf else "\n"
    lines = ["-DOCSTART- -X- O", ""]
    for tokens, tags in sentences:
        lines += [f"{tok}\tX  {tag}" for tok, tag in zip(tokens, tags, strict=True)] + [""]
    path.write_bytes(nl.join(lines).encode() + nl.encode())


def write_records(path: Path, records: list[dict], fmt: str) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "csv":  # quoted where needed (commas, quotes)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(list(records[0]))
            writer.writerows([list(r.values()) for r in records])
    elif fmt == "tsv":  # GLUE style: never quoted
        rows = [list(records[0])] + [list(r.values()) for r in records]
        path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows),
                        encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        raise AssertionError(fmt)


def tagging_folder(root: Path, fmt: str, data=TAGGED, crlf: bool = False) -> tuple[Path, dict]:
    """Write `data` as `fmt` files under root/fmt; returns the folder and the data.files map."""
    folder = root / fmt
    folder.mkdir(parents=True, exist_ok=True)
    ext = "txt" if fmt == "conll" else fmt
    files = {split: f"{name}.{ext}" for split, name in SPLITS.items()}
    for split, sentences in data.items():
        path = folder / files[split]
        if fmt == "conll":
            write_conll(path, sentences, crlf=crlf)
        elif fmt in ("csv", "tsv"):  # a cell holds a string: space-separated tokens and tags
            write_records(path, [{"tokens": " ".join(t), "tags": " ".join(g)}
                                 for t, g in sentences], fmt)
        else:
            write_records(path, [{"tokens": t, "tags": g} for t, g in sentences], fmt)
    return folder, files


def classification_folder(root: Path, fmt: str) -> tuple[Path, dict]:
    folder = root / fmt
    folder.mkdir(parents=True, exist_ok=True)
    files = {split: f"{name}.{fmt}" for split, name in SPLITS.items()}
    for split, rows in SENTENCES.items():
        # labels as numbers in JSONL/Parquet, necessarily text in CSV/TSV: all read as "0"/"1"
        write_records(folder / files[split],
                      [{"label": label, "sentence": text} for text, label in rows], fmt)
    return folder, files


def expected_words(train_sequences) -> list[str]:
    """The word vocabulary as specified: <pad>, <unk>, then by descending count, then by name."""
    counts = Counter(t for seq in train_sequences for t in seq)
    return ["<pad>", "<unk>"] + sorted(counts, key=lambda t: (-counts[t], t))


def first_batches(dm) -> dict[str, dict[str, torch.Tensor]]:
    return {split: next(iter(loader())) for split, loader in
            (("train", dm.train_dataloader), ("validation", dm.val_dataloader),
             ("test", dm.test_dataloader))}


def assert_same_batches(a: dict, b: dict) -> None:
    for split in a:
        assert a[split].keys() == b[split].keys()
        for key in a[split]:
            assert torch.equal(a[split][key], b[split][key]), (split, key)


# --------------------------------------------------------------- 1. formats give one encoding


@pytest.fixture(scope="module")
def tagging_reference(tmp_path_factory):
    folder, files = tagging_folder(tmp_path_factory.mktemp("ref"), "conll", crlf=True)
    dm = TaggingDataModule(dir=str(folder), files=files, batch_size=64)
    dm.setup()
    return dm


def test_column_file_batches_decode_to_the_sentences(tagging_reference):
    dm = tagging_reference
    train_tokens = [t for t, _ in TAGGED["train"]]
    assert dm.words.itos == expected_words(train_tokens)
    assert dm.labels.itos == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-ORG", "I-PER"]
    for split, batch in first_batches(dm).items():
        sentences = TAGGED[split]
        assert sorted(batch["index"].tolist()) == list(range(len(sentences)))  # one batch
        for row, i in enumerate(batch["index"].tolist()):
            tokens, tags = sentences[i]
            n = len(tokens)
            assert batch["lengths"][row] == n
            words = batch["words"][row]
            assert words[n:].eq(0).all() and batch["tags"][row, n:].eq(-100).all()
            known = [t if t in dm.words.stoi else "<unk>" for t in tokens]
            assert dm.words.decode(words[:n].tolist()) == known
            assert dm.labels.decode(batch["tags"][row, :n].tolist()) == tags


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet"])
def test_tagging_formats_give_identical_batches(tmp_path, tagging_reference, fmt):
    folder, files = tagging_folder(tmp_path, fmt)
    dm = TaggingDataModule(dir=str(folder), files=files, format="auto", batch_size=64)
    dm.setup()
    assert dm.words.itos == tagging_reference.words.itos
    assert dm.labels.itos == tagging_reference.labels.itos
    for split in SPLITS:
        assert dm.splits[split].tokens == [t for t, _ in TAGGED[split]]
        assert dm.splits[split].gold == [g for _, g in TAGGED[split]]
    assert_same_batches(first_batches(dm), first_batches(tagging_reference))


def test_explicit_format_overrides_the_extension(tmp_path, tagging_reference):
    folder, files = tagging_folder(tmp_path, "conll")
    renamed = {}
    for split, name in files.items():
        (folder / name).rename(folder / f"{name}.data")
        renamed[split] = f"{name}.data"
    with pytest.raises(DataError, match="cannot tell the format"):
        TaggingDataModule(dir=str(folder), files=renamed).setup()
    dm = TaggingDataModule(dir=str(folder), files=renamed, format="conll", batch_size=64)
    dm.setup()
    assert_same_batches(first_batches(dm), first_batches(tagging_reference))
    with pytest.raises(ConfigError, match="data.format"):
        TaggingDataModule(dir=str(folder), files=renamed, format="xml").setup()


@pytest.fixture(scope="module")
def classification_reference(tmp_path_factory):
    folder, files = classification_folder(tmp_path_factory.mktemp("ref"), "tsv")
    dm = ClassificationDataModule(dir=str(folder), files=files, batch_size=64)
    dm.setup()
    return dm


def test_tsv_batches_decode_to_the_sentences(classification_reference):
    dm = classification_reference
    assert dm.words.itos == expected_words([t.split() for t, _ in SENTENCES["train"]])
    assert dm.labels.itos == ["0", "1"]
    for split, batch in first_batches(dm).items():
        rows = SENTENCES[split]
        assert sorted(batch["index"].tolist()) == list(range(len(rows)))
        for row, i in enumerate(batch["index"].tolist()):
            tokens = rows[i][0].split()
            n = len(tokens)
            assert batch["lengths"][row] == n and batch["words"][row, n:].eq(0).all()
            known = [t if t in dm.words.stoi else "<unk>" for t in tokens]
            assert dm.words.decode(batch["words"][row, :n].tolist()) == known
            assert dm.labels.itos[batch["label"][row]] == str(rows[i][1])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_classification_formats_give_identical_batches(tmp_path, classification_reference,
                                                       fmt):
    folder, files = classification_folder(tmp_path, fmt)
    dm = ClassificationDataModule(dir=str(folder), files=files, batch_size=64)
    dm.setup()
    assert dm.words.itos == classification_reference.words.itos
    assert dm.labels.itos == classification_reference.labels.itos
    assert_same_batches(first_batches(dm), first_batches(classification_reference))


# ----------------------------------------------------------------------- 2. scheme round trips


def read_columns(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a two-column file, -DOCSTART- skipped (independent of birnn's reader)."""
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        fields = line.split()
        if not fields:
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
        elif fields[0] != "-DOCSTART-":
            tokens.append(fields[0])
            tags.append(fields[-1])
    return sentences


def iob2_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) of well-formed IOB2 tags."""
    spans = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append([tag[2:], i, i + 1])
        elif tag.startswith("I-"):
            assert spans and spans[-1][0] == tag[2:] and spans[-1][2] == i, tags
            spans[-1][2] = i + 1
    return [tuple(s) for s in spans]


def from_iob2(tags: list[str], scheme: str) -> list[str]:
    out = ["O"] * len(tags)
    previous = None
    for kind, start, end in iob2_spans(tags):
        if scheme == "iob1":  # B- only where a chunk directly follows one of the same type
            adjacent = previous is not None and previous[0] == kind and previous[2] == start
            out[start:end] = [f"{'B' if adjacent else 'I'}-{kind}"] + [f"I-{kind}"] * (
                end - start - 1)
        elif end - start == 1:
            out[start] = f"S-{kind}"
        else:
            out[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 2) + [f"E-{kind}"]
        previous = (kind, start, end)
    return out


def test_own_converter_on_hand_written_tags():
    tags = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG"]
    assert from_iob2(tags, "iob1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG",
                                       "I-ORG", "I-ORG"]
    assert from_iob2(tags, "iobes") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG",
                                        "I-ORG", "E-ORG"]


@pytest.fixture(scope="module")
def scheme_folders(tmp_path_factory):
    """A slice of the NER sample in IOB2 (as shipped), IOB1 and IOBES, plus two hand-made
    sentences with adjacent same-type chunks (where IOB1 needs its B-)."""
    root = tmp_path_factory.mktemp("schemes")
    extra = [(["Peter", "Blackburn", "Jordan", "Smith", "met", "Ann"],
              ["B-PER", "I-PER", "B-PER", "I-PER", "O", "B-PER"]),
             (["Paris", "London", "Berlin"], ["B-LOC", "B-LOC", "B-LOC"])]
    sizes = {"train": 600, "validation": 150, "test": 150}
    data = {split: extra + read_columns(SAMPLE_NER / f"{name}.txt")[: sizes[split]]
            for split, name in SPLITS.items()}
    folders = {}
    for scheme in ("iob2", "iob1", "iobes"):
        converted = {split: [(t, g if scheme == "iob2" else from_iob2(g, scheme))
                             for t, g in sentences] for split, sentences in data.items()}
        folders[scheme], _ = tagging_folder(root / scheme, "conll", converted)
    text = {s: (folders[s] / "train.txt").read_text() for s in folders}
    assert len(set(text.values())) == 3  # the schemes really differ
    assert "B-PER" in text["iob1"] and " S-" in text["iobes"] and " E-" in text["iobes"]
    return folders, data


@pytest.mark.parametrize("scheme", ["iob1", "iobes"])
def test_schemes_load_as_the_same_iob2_gold(scheme_folders, scheme):
    folders, data = scheme_folders
    dm = TaggingDataModule(dir=str(folders[scheme]), scheme=scheme)
    dm.setup()
    for split in SPLITS:
        gold = [g for _, g in data[split]]
        assert dm.splits[split].gold == gold
        assert [iob2_spans(g) for g in dm.splits[split].gold] == [iob2_spans(g) for g in gold]
    assert all(t[0] in "OBI" for t in dm.labels.itos)
    if scheme == "iobes":  # the same file read with the wrong scheme is an error, not silence
        with pytest.raises(DataError, match="data.scheme=iob2"):
            TaggingDataModule(dir=str(folders[scheme]), scheme="iob2").setup()


def test_schemes_train_to_the_same_scores(scheme_folders, cfg_factory, tmp_path):
    folders, data = scheme_folders
    runs = {}
    for scheme, folder in folders.items():
        out = tmp_path / scheme
        cfg = cfg_factory(f"data.dir={folder}", f"data.scheme={scheme}", "trainer.max_epochs=3",
                          "encoder.hidden_size=32", "encoder.num_layers=1",
                          "model.optimizer.lr=0.01", "model.dropout=0.2",
                          f"paths.output_dir={out}")
        runs[scheme] = train(cfg), (out / "test_predictions.conll").read_text()
    reference, predictions = runs["iob2"]
    assert reference["val"]["f1"] > 0.2  # something was learned, so equal scores mean something
    for scheme in ("iob1", "iobes"):
        metrics, preds = runs[scheme]
        assert metrics["val"] == reference["val"]
        assert metrics["test"] == reference["test"]
        assert preds == predictions  # same gold (IOB2) and predicted tags, token by token
    gold_column = [line.split()[1] for line in predictions.splitlines() if line.strip()]
    assert gold_column == [tag for _, tags in data["test"] for tag in tags]


# ---------------------------------------------------------------------------- 3. Hub offline


def test_hub_dataset_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set by conftest too: never the network
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        TaggingDataModule(hub={"path": "some/dataset"}).setup()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "some/dataset" in message and "data.dir" in message and "offline" in message


def test_hub_config_without_path_is_a_missing_value(cfg_factory, capsys):
    with pytest.raises(SystemExit) as info:
        user_errors_exit(train)(cfg_factory("data=hub_tokens"))
    assert info.value.code == 2
    assert "data.hub.path is required" in capsys.readouterr().err


def test_train_py_on_a_hub_dataset_fails_fast_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "data=conll2003", "logger=none",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr[-2000:]
    assert "eriktks/conll2003" in error[0] and "data.dir" in error[0]
    assert "Traceback" not in result.stderr
    # imports take most of it; Hub retries would take minutes. Generous for a loaded machine.
    assert elapsed < 90


# ------------------------------------------------- 4. sentence classification vs the majority


def read_sentiment(split: str) -> list[str]:
    with (SAMPLE_SENTIMENT / f"{split}.tsv").open(encoding="utf-8") as f:
        return [row["label"] for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def majority():
    """Accuracy on dev and test of always answering train's most frequent label."""
    label = Counter(read_sentiment("train")).most_common(1)[0][0]
    return {split: Counter(read_sentiment(name))[label] / len(read_sentiment(name))
            for split, name in (("val", "dev"), ("test", "test"))}


@pytest.mark.parametrize(("pooling", "merge"), [
    ("final", "concat"), ("mean", "concat"), ("max", "concat"), ("attention", "concat"),
    ("final", "sum"), ("final", "mul"), ("final", "ave"), ("final", "[concat,none]"),
])
def test_sentiment_sample_beats_the_majority(cfg_factory, majority, pooling, merge):
    assert max(majority.values()) < 0.6  # the baseline is computed from real, balanced data
    metrics = train(cfg_factory("task=classification", f"model.pooling={pooling}",
                                f"encoder.merge={merge}", "encoder.hidden_size=32",
                                "model.optimizer.lr=0.01", "model.dropout=0.2",
                                "trainer.max_epochs=3"))
    for split in ("val", "test"):
        # measured: 0.89-1.0 over three seeds after 2 epochs, 0.98-1.0 after 3
        assert metrics[split]["acc"] > majority[split] + 0.3, (split, metrics[split], majority)
        assert 0 < metrics[split]["macro_f1"] <= 1


# ------------------------------------------------------------- 5. malformed files, one line


GOOD_COLUMNS = "EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n"
GOOD_TSV = "label\tsentence\n1\tgood film\n0\tbad film\n"
GOOD_JSONL = '{"sentence": "good film", "label": 1}\n{"sentence": "bad film", "label": 0}\n'

MALFORMED = {
    "column count": ("txt", GOOD_COLUMNS + "\nEU\tB-ORG\nsaid O X\n", ":8: 3 columns"),
    "utf-8 in column file": ("txt", b"EU B-ORG\r\nr\xe9jects O\r\n", ":2: not valid utf-8"),
    "utf-8 in TSV": ("tsv", b"label\tsentence\n1\tgood\n0\tcaf\xe9 film\n", ":3: not valid utf-8"),
    "TSV without label": ("tsv", "sentence\ngood film\n", ":1: header ['sentence'] has no "
                                                          "column 'label'"),
    "TSV field count": ("tsv", GOOD_TSV + "1\tgood\textra\n", ":4: 3 fields where the header "
                                                             "has 2"),
    "empty column file": ("txt", "", ": empty file"),
    "blank column file": ("txt", "-DOCSTART- O\n\n\n", ": empty file"),
    "empty TSV": ("tsv", "", ": empty file"),
    "header-only TSV": ("tsv", "label\tsentence\n", ": no rows after the header"),
    "invalid JSON": ("jsonl", GOOD_JSONL + '{"sentence": "x", label: 1}\n', ":3: not valid JSON"),
    "empty JSONL": ("jsonl", "\n", ": empty file"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_gives_one_line_with_file_and_line(cfg_factory, capsys, tmp_path, case):
    ext, bad, message = MALFORMED[case]
    good = {"txt": GOOD_COLUMNS, "tsv": GOOD_TSV, "jsonl": GOOD_JSONL}[ext]
    folder = tmp_path / "data"
    folder.mkdir()
    files = {split: f"{name}.{ext}" for split, name in SPLITS.items()}
    for split, name in files.items():
        content = bad if split == "validation" else good
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    overrides = [f"data.dir={folder}",
                 *(f"data.files.{split}={name}" for split, name in files.items())]
    if ext != "txt":
        overrides += ["task=classification", "data=sentences"]
    with pytest.raises(SystemExit) as info:
        user_errors_exit(train)(cfg_factory(*overrides))
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {folder / files['validation']}{message}"), err
    assert "Traceback" not in err


# ------------------------------------------------------- 6. vocabularies, truncation, skipping


def jsonl_tagging(tmp_path: Path, data: dict) -> tuple[Path, dict]:
    return tagging_folder(tmp_path, "jsonl", data)


def test_vocabularies_come_from_train_only(tmp_path):
    data = {"train": [(["the", "EU", "said"], ["O", "B-ORG", "O"]),
                      (["the", "EU"], ["O", "B-ORG"])],
            "validation": [(["the", "zebra", "said"], ["O", "O", "O"])],
            "test": [(["EU", "said"], ["B-ORG", "O"])]}
    folder, files = jsonl_tagging(tmp_path, data)
    dm = TaggingDataModule(dir=str(folder), files=files)
    dm.setup()
    assert dm.words.itos == ["<pad>", "<unk>", "EU", "the", "said"]
    assert dm.labels.itos == ["O", "B-ORG"]
    assert dm.splits["validation"].word_ids[0].tolist() == [3, 1, 4]  # zebra -> <unk>
    assert "zebra" not in dm.words.stoi


def test_min_freq_and_lowercase(tmp_path):
    data = {"train": [(["The", "EU", "said"], ["O", "B-ORG", "O"]),
                      (["the", "EU"], ["O", "B-ORG"])],
            "validation": [(["THE", "said"], ["O", "O"])],
            "test": [(["EU"], ["B-ORG"])]}
    folder, files = jsonl_tagging(tmp_path, data)
    dm = TaggingDataModule(dir=str(folder), files=files, lowercase=True, min_freq=2)
    dm.setup()
    assert dm.words.itos == ["<pad>", "<unk>", "eu", "the"]
    assert dm.splits["validation"].word_ids[0].tolist() == [3, 1]
    assert dm.splits["validation"].tokens == [["THE", "said"]]  # text itself is kept


UNSEEN_LABEL = {"train": [(["the", "EU"], ["O", "B-ORG"])],
                "validation": [(["the", "Olympics"], ["O", "B-EVENT"])],
                "test": [(["EU"], ["B-ORG"])]}


def test_label_unseen_in_train_is_an_error(tmp_path):
    folder, files = jsonl_tagging(tmp_path, UNSEEN_LABEL)
    with pytest.raises(DataError, match=r"validation split has label\(s\) never seen in train: "
                                        r"B-EVENT"):
        TaggingDataModule(dir=str(folder), files=files).setup()


def test_label_unseen_in_train_maps_to_outside(tmp_path, caplog):
    folder, files = jsonl_tagging(tmp_path, UNSEEN_LABEL)
    dm = TaggingDataModule(dir=str(folder), files=files, unknown_labels="outside")
    with caplog.at_level(logging.WARNING, logger="birnn"):
        dm.setup()
    assert dm.splits["validation"].gold == [["O", "O"]]
    assert dm.splits["validation"].targets[0].tolist() == [0, 0]
    assert any("validation" in r.message and "B-EVENT" in r.message and r.levelname == "WARNING"
               for r in caplog.records), caplog.text


def test_classification_label_unseen_in_train_is_an_error(tmp_path):
    folder, files = classification_folder(tmp_path, "jsonl")
    (folder / files["test"]).write_text('{"sentence": "meh", "label": 2}\n')
    with pytest.raises(DataError, match=r"test split has label\(s\) never seen in train: 2"):
        ClassificationDataModule(dir=str(folder), files=files).setup()


def test_max_length_truncates_with_a_counted_warning(tmp_path, caplog):
    folder, files = tagging_folder(tmp_path, "jsonl")
    dm = TaggingDataModule(dir=str(folder), files=files, max_length=3)
    with caplog.at_level(logging.WARNING, logger="birnn"):
        dm.setup()
    for split in SPLITS:
        long = sum(len(t) > 3 for t, _ in TAGGED[split])
        assert long > 0
        assert any(f"{split} split: {long} sequences truncated to data.max_length=3"
                   in r.message for r in caplog.records), caplog.text
        assert dm.splits[split].lengths == [min(3, len(t)) for t, _ in TAGGED[split]]
        assert dm.splits[split].gold == [g[:3] for _, g in TAGGED[split]]
    assert max(len(w) for w in dm.splits["train"].word_ids) == 3


def test_empty_sentences_are_skipped_with_a_counted_warning(tmp_path, caplog):
    data = {split: [([], []), *sentences, ([], [])] for split, sentences in TAGGED.items()}
    folder, files = jsonl_tagging(tmp_path, data)
    dm = TaggingDataModule(dir=str(folder), files=files)
    with caplog.at_level(logging.WARNING, logger="birnn"):
        dm.setup()
    for split in SPLITS:
        assert dm.splits[split].tokens == [t for t, _ in TAGGED[split]]
        assert any(f"{split} split: 2 empty sequences skipped" in r.message
                   for r in caplog.records), caplog.text
    text = tmp_path / "text"
    folder, files = classification_folder(text, "tsv")
    with (folder / files["train"]).open("a") as f:
        f.write("1\t\n")
    dm = ClassificationDataModule(dir=str(folder), files=files)
    dm.setup()
    assert len(dm.splits["train"]) == len(SENTENCES["train"])


def test_tokens_and_tags_of_different_lengths(tmp_path):
    data = {**TAGGED, "test": [(["EU", "said"], ["B-ORG"])]}
    folder, files = jsonl_tagging(tmp_path, data)
    with pytest.raises(DataError, match="test split: a sentence has 2 tokens but 1 tags"):
        TaggingDataModule(dir=str(folder), files=files).setup()


# ----------------------------------------------------------------------------- 7. bucketing


@pytest.fixture(scope="module")
def sample_ner():
    dm = TaggingDataModule(dir=str(SAMPLE_NER), batch_size=32)
    dm.setup()
    return dm


def padding_of_batches(loader) -> float:
    """Padding counted on the batches themselves (word id 0 is <pad> and nothing else)."""
    pad = total = 0
    for batch in loader:
        pad += int(batch["words"].eq(0).sum())
        total += batch["words"].numel()
    return pad / total


def test_bucketing_cuts_padding(sample_ner):
    bucketed = sample_ner.padded_fraction("train")
    random = sample_ner.padded_fraction("train", bucketing=False)
    assert bucketed == pytest.approx(padding_of_batches(sample_ner.train_dataloader()))
    assert sample_ner.bucketing  # the override did not stick
    sample_ner.bucketing = False
    try:
        assert random == pytest.approx(padding_of_batches(sample_ner.train_dataloader()))
    finally:
        sample_ner.bucketing = True
    assert random > 0.25 and bucketed < 0.05 and bucketed < random / 5, (bucketed, random)
    # every training sentence is in exactly one batch of an epoch
    indices = [i for b in sample_ner.train_dataloader() for i in b["index"].tolist()]
    assert sorted(indices) == list(range(len(sample_ner.splits["train"])))


@pytest.mark.parametrize("n", [1000, 997, 1010])
@pytest.mark.parametrize("epoch", [0, 3])
def test_bucket_sampler_shards_across_ranks(sample_ner, n, epoch):
    lengths = sample_ner.splits["train"].lengths[:n]
    per_rank = []
    for rank in range(2):
        sampler = BucketBatchSampler(lengths, 20, shuffle=True, pool_batches=10, seed=7,
                                     num_replicas=2, rank=rank)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1])  # same number of steps on every process
    sets = [{i for b in batches for i in b} for batches in per_rank]
    assert sets[0] | sets[1] == set(range(n))  # every sample seen
    counts = Counter(i for batches in per_rank for b in batches for i in b)
    single = BucketBatchSampler(lengths, 20, shuffle=True, pool_batches=10, seed=7)
    single.set_epoch(epoch)
    all_batches = list(single)
    if len(all_batches) % 2 == 0:  # an even number of batches splits without overlap
        assert sets[0].isdisjoint(sets[1]) and set(counts.values()) == {1}
    else:  # an odd one: the first batch is repeated once so both ranks take as many steps
        assert [i for i, c in counts.items() if c > 1] == all_batches[0]
    # the ranks' batches are the single process's batches, dealt alternately
    assert [b for pair in zip(*per_rank, strict=True) for b in pair][: len(all_batches)] \
        == all_batches
    # a later epoch draws another order
    other = BucketBatchSampler(lengths, 20, shuffle=True, pool_batches=10, seed=7)
    other.set_epoch(epoch + 1)
    assert list(other) != all_batches


@pytest.mark.parametrize("replicas", [2, 3])
@pytest.mark.parametrize("n", [1000, 997])
def test_eval_batches_shard_without_padding(sample_ner, replicas, n):
    lengths = sample_ner.splits["train"].lengths[:n]
    single = list(BucketBatchSampler(lengths, 20, shuffle=False))
    shards = []
    for rank in range(replicas):
        sampler = BucketBatchSampler(lengths, 20, shuffle=False, num_replicas=replicas, rank=rank)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    # every sample scored exactly once across the processes, in the single process's batches
    counts = Counter(i for shard in shards for batch in shard for i in batch)
    assert sorted(counts) == list(range(n)) and set(counts.values()) == {1}
    assert sorted(map(tuple, (b for shard in shards for b in shard))) \
        == sorted(map(tuple, single))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def loader_indices(loader) -> list[int]:
    return [i for batch in loader for i in batch["index"].tolist()]


def test_datamodule_shards_validation_not_test_under_ddp():
    dm = TaggingDataModule(dir=str(SAMPLE_NER), batch_size=32, eval_batch_size=16)
    dm.setup()
    n_val, n_test = len(dm.splits["validation"]), len(dm.splits["test"])
    assert n_val > 2 * 16  # at least two validation batches
    val, test = [], []
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, current_epoch=0)
        val.append(loader_indices(dm.val_dataloader()))
        test.append(loader_indices(dm.test_dataloader()))
    assert set(val[0]).isdisjoint(val[1])
    assert sorted(val[0] + val[1]) == list(range(n_val))
    # every process scores the whole test split (its predictions are written from one)
    assert sorted(test[0]) == sorted(test[1]) == list(range(n_test))

    # fewer validation batches than processes: every process scores every sentence
    dm.eval_batch_size = n_val
    for rank in range(2):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, current_epoch=0)
        assert sorted(loader_indices(dm.val_dataloader())) == list(range(n_val))
