"""Text nobody planned for: any Unicode in tokens, and a 10,000-token sentence."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics import f1_score

from birnn.cli.train import train
from birnn.data import read_column_file, write_column_file
from birnn.inference import Predictor

TOKENS = [
    "😀", "👩‍👩‍👧", "é", "é",  # emoji, a ZWJ sequence, precomposed vs combining accent
    "שלום", "مرحبا", "\u200bzero\u200bwidth", "a\u200db", "Ω", "ß", "中文", "\u202eRTL",
]


def _write_split(path, sentences):
    write_column_file(path, sentences)


def _sentences(rng, n, long_length=None):
    out = []
    for i in range(n):
        length = long_length if (long_length and i == 0) else rng.randint(3, 12)
        tokens = [rng.choice(TOKENS) for _ in range(length)]
        tags = ["B-X" if t in ("😀", "שלום") else "O" for t in tokens]
        out.append({"tokens": tokens, "tags": tags})
    return out


@pytest.fixture
def unicode_data(tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "unicode"
    folder.mkdir()
    _write_split(folder / "train.txt", _sentences(rng, 60, long_length=10_000))
    _write_split(folder / "dev.txt", _sentences(rng, 20))
    _write_split(folder / "test.txt", _sentences(rng, 20))
    return folder


def test_any_unicode_and_a_10000_token_sentence_train_and_predict(cfg_factory, unicode_data,
                                                                  tmp_path):
    metrics = train(cfg_factory(f"data.dir={unicode_data}", "encoder.hidden_size=8",
                                "model.embedding_dim=8", "trainer.max_epochs=2"))
    assert metrics["val"]["f1"] >= 0
    # every token survived reading: the vocabulary holds each exact string
    test = list(read_column_file(unicode_data / "test.txt"))
    predictor = Predictor.from_checkpoint(tmp_path / "checkpoints" / "best.ckpt", "cpu")
    predicted = predictor.predict([s["tokens"] for s in test])
    assert [len(p) for p in predicted] == [len(s["tokens"]) for s in test]
    # the test hooks and the predictor agree, scored independently
    f1 = f1_score([s["tags"] for s in test], predicted)
    assert f1 == pytest.approx(metrics["test"]["f1"], abs=1e-6)


def test_max_length_truncates_the_long_sentence_with_a_warning(cfg_factory, unicode_data,
                                                                caplog):
    with caplog.at_level("WARNING"):
        train(cfg_factory(f"data.dir={unicode_data}", "data.max_length=100",
                          "encoder.hidden_size=8", "model.embedding_dim=8",
                          "trainer.max_epochs=1"))
    assert "1 sequences truncated to data.max_length=100" in caplog.text
