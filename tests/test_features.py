"""Character, casing and word-dropout features, and the CoNLL-2003 experiment config."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, SAMPLE_NER, make_config
from hydra import compose, initialize_config_dir
from seqeval.metrics import f1_score

from birnn.cli.evaluate import evaluate
from birnn.cli.predict import Predictor
from birnn.cli.train import train
from birnn.data import TaggingDataModule, read_column_file
from birnn.data.vocab import UNK, Vocab, word_shape
from birnn.errors import ConfigError
from birnn.models import TokenTagger

TINY = ("encoder.hidden_size=16", "model.embedding_dim=16", "model.char.dim=8",
        "model.char.filters=8", "model.char.hidden_size=8", "trainer.max_epochs=1")


@pytest.mark.parametrize("overrides", [
    ["model.char.kind=cnn"],
    ["model.char.kind=birnn"],
    ["model.casing=true"],
    ["model.word_dropout=0.1"],
    ["model.rare_word_dropout=0.5"],
    ["model.head=crf", "model.char.kind=birnn", "model.casing=true", "model.word_dropout=0.1",
     "encoder.merge=[concat,none]"],
])
def test_each_feature_trains_one_epoch(cfg_factory, overrides):
    metrics = train(cfg_factory(*TINY, *overrides))
    assert metrics["parameters"] > 0 and 0 <= metrics["test"]["f1"] <= 1


def test_char_vocabulary_is_built_on_train_only(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text("Paris B-LOC\nis O\nbig O\n\n")
    (folder / "dev.txt").write_text("Zürich B-LOC\n\n")
    (folder / "test.txt").write_text("Qatar B-LOC\n\n")
    dm = TaggingDataModule(dir=str(folder), chars=True)
    dm.setup("fit")
    assert set(dm.chars.itos[2:]) == set("Parisbig")
    unk = dm.chars.stoi[UNK]
    batch = dm.collate(dm.splits["validation"], [0])
    assert batch["chars"].shape == (1, 1, 6)
    ids = dm.chars.stoi
    assert batch["chars"][0, 0].tolist() == [unk, unk, ids["r"], ids["i"], unk, unk]
    assert batch["casing"].tolist() == [[word_shape("Zürich")]]
    assert dm.vocabularies()["chars"]["itos"] == dm.chars.itos
    # a checkpoint's character vocabulary is used as it is, and turns the feature on
    again = TaggingDataModule(dir=str(folder))
    again.use_vocabularies(dm.vocabularies())
    again.setup("test")
    assert again.chars.itos == dm.chars.itos and "chars" in again.collate(
        again.splits["test"], [0])
    # without chars, batches carry no character ids
    plain = TaggingDataModule(dir=str(folder))
    plain.setup("fit")
    assert plain.chars is None and "chars" not in plain.collate(plain.splits["train"], [0])
    assert "chars" not in plain.vocabularies()


def test_word_shapes():
    assert [word_shape(w) for w in ("paris", "EU", "Paris", "1996", "iPhone", "U.S.")] == \
        [1, 2, 3, 4, 5, 2]


def test_word_dropout_only_in_training():
    torch.manual_seed(0)
    model = TokenTagger(50, ["O", "B-X", "I-X"], {"hidden_size": 8, "num_layers": 1},
                        embedding_dim=8, dropout=0.0, word_dropout=0.5, casing=True)
    words = torch.randint(2, 50, (4, 6))
    lengths = torch.tensor([6, 5, 3, 1])
    casing = torch.randint(1, 6, (4, 6))
    model.eval()
    first = model(words, lengths, casing=casing)
    torch.testing.assert_close(first, model(words, lengths, casing=casing))
    assert model.decode(words, lengths, casing=casing) == model.decode(words, lengths,
                                                                      casing=casing)
    model.train()
    train_out = model.embed(words, casing=casing)
    unk = model.embedding.weight[1]
    replaced = (train_out[..., :8] == unk).all(-1)
    assert 0 < replaced.float().mean() < 1  # about half the words are <unk> in training
    with pytest.raises(ConfigError, match="word_dropout"):
        TokenTagger(50, ["O"], {"hidden_size": 8}, word_dropout=1.0)


def test_vocabulary_counts_and_their_round_trip():
    sentences = [["the", "cat", "the"], ["a", "cat", "the", "dog"]]
    vocab = Vocab.build(sentences)
    seen = {t: sum(s.count(t) for s in sentences) for s in sentences for t in s}
    assert vocab.counts[:2] == [0, 0]  # <pad>, <unk>
    assert {t: c for t, c in zip(vocab.itos[2:], vocab.counts[2:], strict=True)} == seen
    assert vocab.counts[2:] == sorted(vocab.counts[2:], reverse=True)
    assert Vocab.from_state_dict(vocab.state_dict()).counts == vocab.counts
    old = {k: v for k, v in vocab.state_dict().items() if k != "counts"}
    assert Vocab.from_state_dict(old).counts is None  # checkpoints from before counts


def test_rare_word_dropout_replaces_singletons_only():
    torch.manual_seed(0)
    sentences = [[f"w{i}"] * (1 if i >= 10 else 5) for i in range(30)]  # 10 frequent, 20 once
    vocab = Vocab.build(sentences)
    model = TokenTagger(len(vocab), ["O"], {"hidden_size": 8, "num_layers": 1},
                        embedding_dim=8, dropout=0.0, rare_word_dropout=0.5)
    model.vocabularies = {"words": vocab.state_dict()}
    singleton = torch.tensor([c == 1 for c in vocab.counts])
    words = torch.randint(2, len(vocab), (64, 50))
    unk = model.embedding.weight[1]
    model.train()
    replaced = (model.embed(words) == unk).all(-1)
    is_rare = singleton[words]
    assert not replaced[~is_rare].any()
    rate = replaced[is_rare].float().mean().item()
    n = int(is_rare.sum())
    assert abs(rate - 0.5) < 5 * (0.25 / n) ** 0.5  # within 5 standard deviations
    model.eval()
    assert not (model.embed(words) == unk).all(-1).any()


def test_rare_word_dropout_needs_counts():
    vocab = Vocab.build([["a", "b"]])
    model = TokenTagger(len(vocab), ["O"], {"hidden_size": 8}, rare_word_dropout=0.5)
    old = {k: v for k, v in vocab.state_dict().items() if k != "counts"}
    with pytest.raises(ConfigError, match="counts"):
        model.vocabularies = {"words": old}
    model.train()
    with pytest.raises(ConfigError, match="rare_word_dropout"):
        model.embed(torch.tensor([[2, 3]]))
    with pytest.raises(ConfigError, match="rare_word_dropout"):
        TokenTagger(len(vocab), ["O"], {"hidden_size": 8}, rare_word_dropout=1.0)


def test_crf_char_checkpoint_predicts_the_reported_f1(cfg_factory, tmp_path):
    metrics = train(cfg_factory("model.head=crf", "model.char.kind=cnn", "model.casing=true",
                                "model.word_dropout=0.05", "trainer.max_epochs=2",
                                "encoder.hidden_size=32", "model.embedding_dim=32"))
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["hyper_parameters"]["num_chars"] == len(saved["vocabularies"]["chars"]["itos"])
    test = list(read_column_file(SAMPLE_NER / "test.txt"))
    predicted = Predictor.from_checkpoint(ckpt).predict([s["tokens"] for s in test],
                                                        batch_size=37)
    f1 = f1_score([s["tags"] for s in test], predicted)
    assert f1 == pytest.approx(metrics["test"]["f1"], abs=1e-6)
    # evaluate.py rebuilds the data with the checkpoint's character vocabulary
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", f"paths.output_dir={tmp_path}/ev",
                                             "trainer.enable_progress_bar=false"])
    assert evaluate(cfg)["test"]["f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-6)


def test_conll2003_experiment(tmp_path):
    cfg = make_config(tmp_path, "experiment=conll2003", "data.dir=../shared/data/conll2003")
    assert cfg.data.hub.path == "eriktks/conll2003"  # data: conll2003 selected
    assert cfg.model.head == "crf" and cfg.model.char.kind == "cnn" and cfg.model.casing
    assert cfg.encoder.hidden_size == 200 and cfg.encoder.num_layers == 2
    assert cfg.data.chars
    # the same overrides train on the sample (shrunk)
    small = make_config(tmp_path, "experiment=conll2003", f"data.dir={SAMPLE_NER}",
                        "encoder.hidden_size=16", "encoder.num_layers=1",
                        "model.embedding_dim=16", "trainer.max_epochs=1")
    assert train(small)["test"]["f1"] >= 0
