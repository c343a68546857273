"""`birnn.inference.Predictor` on the fixture checkpoints: its batches are the ones the data
module makes from the data files, its labels are the model's own decoding of those batches,
and a sentence's labels do not depend on the batch it is in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ROOT, SAMPLE_NER

from birnn.data import ClassificationDataModule, TaggingDataModule
from birnn.errors import ConfigError
from birnn.inference import Predictor

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
DATA = {"tagger": (TaggingDataModule, SAMPLE_NER),
        "classifier": (ClassificationDataModule, ROOT / "data" / "sample_sentiment")}


def from_files(name: str, predictor: Predictor):
    """The test split as the data module reads it from its files, with the checkpoint's
    vocabularies, and one batch of 24 of its sentences."""
    cls, folder = DATA[name]
    datamodule = cls(dir=str(folder))
    datamodule.use_vocabularies(torch.load(FIXTURES / f"{name}.ckpt",
                                           weights_only=True)["vocabularies"])
    datamodule.setup("test")
    split = datamodule.splits["test"]
    indices = list(range(0, len(split), max(len(split) // 24, 1)))[:24]
    return split, indices, datamodule.collate(split, indices)


@pytest.mark.parametrize("name", list(DATA))
def test_batches_equal_the_data_modules_batches(name):
    predictor = Predictor.from_checkpoint(FIXTURES / f"{name}.ckpt")
    split, indices, expected = from_files(name, predictor)
    [batch] = predictor.batches([split.tokens[i] for i in indices], batch_size=len(indices))
    order = batch["index"].tolist()  # longest first: positions in the list given
    for key, value in expected.items():
        if key in ("index", "tags", "label"):  # no gold labels in prediction
            continue
        for row, position in enumerate(order):
            got, want = value[position], batch[key][row]
            steps = int(expected["lengths"][position])
            if key in ("words", "casing", "chars"):
                got, want = got[:steps], want[:steps]
                if key == "chars":
                    width = max(int((got > 0).sum(-1).max()), 1)
                    got, want = got[:, :width], want[:, :width]
            assert torch.equal(got, want), (key, position)
    assert "tags" not in batch and "label" not in batch


def test_tagger_labels_are_the_models_decoding_of_the_file_batches():
    predictor = Predictor.from_checkpoint(FIXTURES / "tagger.ckpt")
    split, indices, batch = from_files("tagger", predictor)
    features = {k: batch[k] for k in ("chars", "casing")}
    with torch.no_grad():
        ids = predictor.model.decode(batch["words"], batch["lengths"], **features)
    labels = predictor.labels
    predicted = predictor.predict([split.tokens[i] for i in indices])
    assert predicted == [[labels[j] for j in tags] for tags in ids]


def test_classifier_labels_are_the_argmax_of_the_models_scores():
    predictor = Predictor.from_checkpoint(FIXTURES / "classifier.ckpt")
    split, indices, batch = from_files("classifier", predictor)
    with torch.no_grad():
        probabilities = predictor.model(batch["words"], batch["lengths"]).softmax(-1)
    predicted = predictor.predict([split.tokens[i] for i in indices])
    for (label, p), row in zip(predicted, probabilities, strict=True):
        assert label == predictor.labels[int(row.argmax())]
        assert p == pytest.approx(float(row.max()), abs=1e-6)


@pytest.mark.parametrize("name", list(DATA))
def test_a_sentence_gets_the_same_labels_alone_and_in_any_batch(name):
    predictor = Predictor.from_checkpoint(FIXTURES / f"{name}.ckpt")
    split, indices, _ = from_files(name, predictor)
    sentences = [split.tokens[i] for i in indices]
    together = predictor.predict(sentences, batch_size=7)
    alone = [predictor.predict([s])[0] for s in sentences]
    if name == "tagger":
        assert together == alone
    else:
        assert [label for label, _ in together] == [label for label, _ in alone]
        for (_, p), (_, q) in zip(together, alone, strict=True):
            assert p == pytest.approx(q, abs=1e-5)


def test_text_empty_sentences_and_bad_batch_size():
    predictor = Predictor.from_checkpoint(FIXTURES / "tagger.ckpt")
    lines = ["EU rejects German call", "", "Peter Blackburn"]
    tags = predictor.predict_text(lines)
    assert tags == predictor.predict([line.split() for line in lines])
    assert tags[1] == [] and [len(t) for t in tags] == [4, 0, 2]
    assert predictor.predict([]) == []
    with pytest.raises(ConfigError, match="batch_size: must be an integer >= 1"):
        predictor.predict([["EU"]], batch_size=0)
    classifier = Predictor.from_checkpoint(FIXTURES / "classifier.ckpt")
    assert classifier.predict([[]]) == [(None, None)]
