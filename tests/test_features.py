"""Character, casing and word-dropout features: each changes what the tagger computes the way
it should, each option reaches the model a composed config builds, and a tiny tagger with
the features learns a small training set.

Module-level checks compare a model against a twin without the feature (or against the same
model in eval mode); config-level checks compare the model the training recipe builds with
one constructed here from the arguments the option stands for; learning is scored with
seqeval, not with the project's metric.
"""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, SAMPLE_NER, make_config
from hydra import compose, initialize_config_dir
from seqeval.metrics import f1_score

from birnn.cli.evaluate import evaluate
from birnn.cli.train import train
from birnn.data import TaggingDataModule, read_column_file
from birnn.data.vocab import UNK, Vocab
from birnn.errors import ConfigError
from birnn.models import TokenTagger
from birnn.tags import word_shape

TINY = ("encoder.hidden_size=16", "model.embedding_dim=16", "model.char.dim=8",
        "model.char.filters=8", "model.char.hidden_size=8", "trainer.max_epochs=1")
UNK_ID = 1  # the word vocabulary's <unk> (<pad> 0)
LABELS = ["O", "B-X", "I-X"]

# Eight sentences small enough to learn by heart: four entity types, multi-token spans,
# words that are entities in one sentence only, and mixed casing.
CORPUS = [
    ("John Smith lives in Paris .", "B-PER I-PER O O B-LOC O"),
    ("Mary works for Acme Corp in Berlin .", "B-PER O O B-ORG I-ORG O B-LOC O"),
    ("The UN met in New York on Monday .", "O B-ORG O O B-LOC I-LOC O O O"),
    ("Paris Hilton visited Rome .", "B-PER I-PER O B-LOC O"),
    ("Acme sold shares to IBM .", "B-ORG O O O B-ORG O"),
    ("he speaks German and French .", "O O B-MISC O B-MISC O"),
    ("Smith met Mary in London last year .", "B-PER O B-PER O B-LOC O O O"),
    ("the World Cup starts in Qatar .", "O B-MISC I-MISC O O B-LOC O"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: a second thread only adds contention
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_corpus(folder, sentences=CORPUS):
    """`sentences` as train, dev and test column files in `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join("".join(f"{w} {t}\n" for w, t in zip(s.split(), g.split(), strict=True))
                   + "\n" for s, g in sentences)
    for name in ("train.txt", "dev.txt", "test.txt"):
        (folder / name).write_text(text)
    return folder


def tiny_tagger(vocab_size=40, embedding_dim=8, **kwargs):
    kwargs.setdefault("dropout", 0.0)
    return TokenTagger(vocab_size, LABELS, {"hidden_size": 6, "num_layers": 1},
                       embedding_dim=embedding_dim, **kwargs)


# ------------------------------------------------------------------ building from configs


def build_model(cfg, datamodule=None, seed=0):
    """The data module and the model the training recipe builds for `cfg`, the model's
    weights drawn from `seed` (a data module may be passed in to share its vocabularies)."""
    from birnn.cli.build import make_datamodule, make_model
    datamodule = datamodule or make_datamodule(cfg)
    torch.manual_seed(seed)
    return datamodule, make_model(cfg, datamodule)


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied, nested dicts merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def constructed(hparams: dict, changes: dict, datamodule, seed=0):
    """A `TokenTagger` built here from `hparams` with `changes`, given the data module's
    vocabularies as the recipe gives them, its weights drawn from `seed`."""
    kwargs = merged({k: v for k, v in hparams.items() if k != "num_chars"}, changes)
    torch.manual_seed(seed)
    model = TokenTagger(**kwargs)
    model.vocabularies = datamodule.vocabularies()
    return model


def differences(a, b, batch) -> list[str]:
    """Where two models differ: their parameters and buffers, their outputs in eval mode,
    their outputs in training mode from the same random state (dropout draws alike), and
    the tags they decode."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return [f"state keys {sorted(sa.keys() ^ sb.keys())}"]
    found = [k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k])]
    features = TokenTagger.features(batch)
    for mode in ("eval", "train"):
        outputs = []
        for model in (a, b):
            getattr(model, mode)()
            torch.manual_seed(1)
            with torch.no_grad():
                outputs.append(model(batch["words"], batch["lengths"], **features))
        if not torch.equal(*outputs):
            found.append(f"{mode} outputs")
    decoded = [m.eval().decode(batch["words"], batch["lengths"], **features) for m in (a, b)]
    if decoded[0] != decoded[1]:
        found.append("decoded tags")
    return found


def corpus_config(tmp_path, *overrides):
    """The training config of a small model on the eight sentences (written to tmp_path)."""
    data = write_corpus(tmp_path / "data")
    return make_config(tmp_path, f"data.dir={data}", "data.batch_size=8",
                       "model.embedding_dim=8", "encoder.hidden_size=6", *overrides)


def check_option_reaches_model(tmp_path, overrides, changes, base=()):
    """The model built from `base` + `overrides` equals one constructed from the base
    config's constructor arguments with `changes`, and the base model does not."""
    datamodule, built = build_model(corpus_config(tmp_path, *base, *overrides))
    _, plain = build_model(corpus_config(tmp_path, *base), datamodule)
    expected = constructed(dict(plain.hparams), changes, datamodule)
    batch = datamodule.collate(datamodule.splits["train"], list(range(len(CORPUS))))
    assert differences(built, expected, batch) == []
    assert differences(plain, expected, batch), "the option has no effect this check sees"


CHAR = {"dim": 5, "filters": 7, "kernel_size": 3, "hidden_size": 4}


@pytest.mark.parametrize(("overrides", "changes"), [
    (["model.char.kind=cnn", "model.char.filters=7", "model.char.kernel_size=5"],
     {"char": {"kind": "cnn", "filters": 7, "kernel_size": 5}}),
    (["model.char.kind=birnn", "model.char.hidden_size=4"],
     {"char": {"kind": "birnn", "hidden_size": 4}}),
    (["model.casing=true", "model.casing_dim=3"], {"casing": True, "casing_dim": 3}),
    (["model.word_dropout=0.3"], {"word_dropout": 0.3}),
    (["model.rare_word_dropout=0.5"], {"rare_word_dropout": 0.5}),
    (["model.head=crf"], {"head": "crf"}),
], ids=["char-cnn", "char-birnn", "casing", "word-dropout", "rare-word-dropout", "crf"])
def test_feature_options_reach_the_built_model(tmp_path, overrides, changes):
    check_option_reaches_model(tmp_path, overrides, changes)


def test_unconstrained_crf_option_reaches_the_built_model(tmp_path):
    # the constraints change no weight, only what Viterbi may decode
    check_option_reaches_model(tmp_path, ["model.constrained=false"], {"constrained": False},
                               base=["model.head=crf"])


# ------------------------------------------------------------------ character features


def char_batch():
    """Three copies of one sentence whose middle word is unknown (<unk>): rows 0 and 2 spell
    it alike, row 1 differs from them in its last letter. Character ids (B, T, W)."""
    words = torch.tensor([[5, UNK_ID, 6]] * 3)
    chars = torch.zeros(3, 3, 5, dtype=torch.long)
    chars[:, 0, :3] = torch.tensor([3, 4, 5])
    chars[:, 2, :2] = torch.tensor([6, 7])
    chars[:, 1, :4] = torch.tensor([8, 9, 10, 11])
    chars[1, 1, 3] = 12
    return words, torch.tensor([3, 3, 3]), chars


@pytest.mark.parametrize("kind", ["cnn", "birnn"])
def test_char_features_tell_unknown_words_apart_by_spelling(kind):
    words, lengths, chars = char_batch()
    torch.manual_seed(0)
    model = tiny_tagger(char={"kind": kind, **CHAR}, num_chars=16).eval()
    torch.manual_seed(0)
    word_only = tiny_tagger().eval()
    with torch.no_grad():
        out = model(words, lengths, chars=chars)
        plain = word_only(words, lengths, chars=chars)
        # the same word padded to more character positions: padding is not spelling
        wider = model(words, lengths, chars=F.pad(chars, (0, 4)))
    assert not torch.allclose(out[0, 1], out[1, 1], atol=1e-4)  # one letter apart
    # equal rows up to rounding: the recurrence's matmul (MKL's, birnn's LSTM loop) may round
    # one batch row differently from another in the last bit
    torch.testing.assert_close(out[0], out[2], atol=1e-6, rtol=0)  # spelt alike
    # without character features both unknown words are the same <unk>
    torch.testing.assert_close(plain[0], plain[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(wider, out, atol=1e-6, rtol=0)


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


# ------------------------------------------------------------------ casing features


def test_word_shapes():
    assert [word_shape(w) for w in ("paris", "EU", "Paris", "1996", "iPhone", "U.S.")] == \
        [1, 2, 3, 4, 5, 2]


def test_casing_features_make_outputs_depend_on_casing(tmp_path):
    # the data: one word id for "paris" and "Paris" (lowercased vocabulary), other shapes
    folder = write_corpus(tmp_path / "data", [("Paris paris PARIS", "B-X O O")])
    dm = TaggingDataModule(dir=str(folder), lowercase=True)
    dm.setup("fit")
    batch = dm.collate(dm.splits["train"], [0])
    words, lengths, casing = batch["words"], batch["lengths"], batch["casing"]
    assert len(set(words[0].tolist())) == 1
    assert casing[0].tolist() == [word_shape(w) for w in ("Paris", "paris", "PARIS")]
    torch.manual_seed(0)
    model = tiny_tagger(casing=True, casing_dim=4).eval()
    torch.manual_seed(0)
    word_only = tiny_tagger().eval()
    repeated = torch.full_like(casing, word_shape("paris"))
    with torch.no_grad():
        out = model(words, lengths, casing=casing)
        same_shape = model(words, lengths, casing=repeated)
        plain = word_only(words, lengths, casing=casing)
        plain_repeated = word_only(words, lengths, casing=repeated)
    assert not torch.allclose(out, same_shape, atol=1e-4)
    assert not torch.allclose(out[0, 0], out[0, 2], atol=1e-4)
    torch.testing.assert_close(plain, plain_repeated, atol=0, rtol=0)


# ------------------------------------------------------------------ word dropout


def substitutions(model, words):
    """Which word ids the model's input vectors stand for in training mode: a (B, T) mask of
    the ids replaced, after checking that each replaced one became <unk>'s vector."""
    model.eval()
    with torch.no_grad():
        table = model.embed(torch.arange(model.hparams["vocab_size"]).unsqueeze(0))[0]
        model.train()
        seen = model.embed(words)
    assert len({tuple(r.tolist()) for r in table}) == len(table)  # rows tell ids apart
    kept = (seen == table[words]).all(-1)
    assert (seen[~kept] == table[UNK_ID]).all()
    return ~kept


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_word_dropout_replaces_words_by_unk_at_its_rate_in_training_only(p):
    torch.manual_seed(0)
    model = tiny_tagger(vocab_size=50, word_dropout=p)
    words = torch.randint(2, 50, (64, 40))
    words[::2, 30:] = 0  # padding
    replaced = substitutions(model, words)
    assert not replaced[words == 0].any()
    n = int((words != 0).sum())
    rate = replaced.sum().item() / n
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n)  # within 5 standard deviations
    model.eval()
    with torch.no_grad():
        first = model(words, torch.full((64,), 40))
        torch.testing.assert_close(model(words, torch.full((64,), 40)), first, atol=0, rtol=0)
    again = tiny_tagger(vocab_size=50, word_dropout=0.0)
    assert not substitutions(again, words).any()


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
    model = tiny_tagger(vocab_size=len(vocab), rare_word_dropout=0.5)
    model.vocabularies = {"words": vocab.state_dict()}
    singleton = torch.tensor([c == 1 for c in vocab.counts])
    words = torch.randint(2, len(vocab), (64, 50))
    replaced = substitutions(model, words)
    is_rare = singleton[words]
    assert not replaced[~is_rare].any()
    rate = replaced[is_rare].float().mean().item()
    n = int(is_rare.sum())
    assert abs(rate - 0.5) < 5 * (0.25 / n) ** 0.5  # within 5 standard deviations


def test_rare_word_dropout_needs_counts():
    vocab = Vocab.build([["a", "b"]])
    model = tiny_tagger(vocab_size=len(vocab), rare_word_dropout=0.5)
    old = {k: v for k, v in vocab.state_dict().items() if k != "counts"}
    with pytest.raises(ConfigError, match="counts"):
        model.vocabularies = {"words": old}
    model.train()
    with pytest.raises(ConfigError, match="rare_word_dropout"):
        model.embed(torch.tensor([[2, 3]]))


# ------------------------------------------------------------------ learning


def corpus_f1(model, datamodule) -> float:
    """seqeval's span F1 of the model's tags for the training sentences."""
    split = datamodule.splits["train"]
    batch = datamodule.collate(split, list(range(len(CORPUS))))
    assert batch["lengths"].tolist() == [len(s.split()) for s, _ in CORPUS]  # file order
    model.eval()
    with torch.no_grad():
        ids = model.decode(batch["words"], batch["lengths"], **model.features(batch))
    itos = datamodule.labels.itos
    return f1_score([g.split() for _, g in CORPUS], [[itos[i] for i in p] for p in ids])


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_a_tiny_tagger_learns_eight_sentences_by_heart(tmp_path, head):
    write_corpus(tmp_path / "data")
    dm = TaggingDataModule(dir=str(tmp_path / "data"), chars=True, batch_size=8)
    dm.setup("fit")
    L.seed_everything(0, verbose=False)
    model = TokenTagger(len(dm.words), dm.labels.itos, {"hidden_size": 16, "num_layers": 1},
                        embedding_dim=16, dropout=0.0, head=head, casing=True,
                        char={"kind": "cnn", "dim": 8, "filters": 8},
                        optimizer={"name": "adamw", "lr": 0.05})
    model.vocabularies = dm.vocabularies()
    before = corpus_f1(model, dm)
    trainer = L.Trainer(max_steps=50, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    assert trainer.global_step == 50
    assert before < 0.5  # what the untrained model scores: the bar below is learnt
    assert corpus_f1(model, dm) > 0.9


@pytest.mark.slow
def test_training_run_learns_eight_sentences_and_reports_seqeval_f1(tmp_path):
    """`train()` end to end on the eight sentences (train = dev = test): the run's test F1
    is above 0.9 and equals seqeval's F1 of the predictions file it writes."""
    data = write_corpus(tmp_path / "data")
    metrics = train(make_config(
        tmp_path / "run", f"data.dir={data}", "data.batch_size=8", "model.dropout=0.0",
        "encoder.dropout=0.0", "encoder.hidden_size=16", "encoder.num_layers=1",
        "model.embedding_dim=16", "model.char.kind=cnn", "model.casing=true",
        "model.head=crf", "trainer.max_epochs=80", "callbacks.early_stopping=null",
        "model.optimizer.lr=0.02"))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["f1"] == pytest.approx(metrics["test"]["f1"])
    predicted = [s["tags"] for s in
                 read_column_file(tmp_path / "run" / "test_predictions.conll")]
    assert saved["test"]["f1"] == pytest.approx(
        f1_score([g.split() for _, g in CORPUS], predicted), abs=1e-6)
    assert saved["test"]["f1"] > 0.9


@pytest.mark.slow
def test_crf_char_checkpoint_predicts_the_reported_f1(cfg_factory, tmp_path):
    from birnn.inference import Predictor
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


# ------------------------------------------------------------------ the CoNLL-2003 experiment


def valid_iob2(tags: list[str]) -> bool:
    """No I-X without a B-X or I-X right before it."""
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


def test_conll2003_experiment_builds_a_char_casing_constrained_crf_tagger(tmp_path):
    """The experiment's tagger, built on a small corpus: unknown words are told apart by
    spelling and by casing, and its decoded tags are valid IOB2 whatever the scores."""
    data = write_corpus(tmp_path / "data")
    cfg = make_config(tmp_path, "experiment=conll2003", f"data.dir={data}",
                      "encoder.hidden_size=8", "model.embedding_dim=8")
    dm, model = build_model(cfg)
    model.eval()
    folder = write_corpus(tmp_path / "unseen", [("Zorblat zorblax ZORBLAT", "O O O")])
    unseen = TaggingDataModule(dir=str(folder))
    unseen.use_vocabularies(dm.vocabularies())
    unseen.setup("test")
    batch = unseen.collate(unseen.splits["test"], [0])
    assert batch["words"].tolist() == [[UNK_ID] * 3]
    with torch.no_grad():
        out = model(batch["words"], batch["lengths"], **model.features(batch))[0]
    for i, j in ((0, 1), (0, 2), (1, 2)):  # spelling, casing, both
        assert not torch.allclose(out[i], out[j], atol=1e-5), (i, j)
    torch.manual_seed(0)
    scores = torch.randn(64, 12, len(model.labels)) * 10
    lengths = torch.randint(1, 13, (64,))
    itos = model.labels
    decoded = [[itos[i] for i in p] for p in model.decode_scores(scores, lengths)]
    assert all(valid_iob2(tags) for tags in decoded)
    # control: per-token argmax of the same scores breaks IOB2, so the check above can fail
    argmax = [[itos[i] for i in row[:n]] for row, n in
              zip(scores.argmax(-1).tolist(), lengths.tolist(), strict=True)]
    assert not all(valid_iob2(tags) for tags in argmax)
