"""birnn.keras: Keras models built here (torch backend), saved as .keras, converted, and
compared with Keras' own outputs on the same integer inputs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_TORCH_DEVICE", "cpu")  # Keras beside birnn's CPU module
keras = pytest.importorskip("keras")

from birnn.checkpoint import load_model  # noqa: E402
from birnn.errors import ConfigError, DataError  # noqa: E402
from birnn.keras import from_keras  # noqa: E402
from birnn.keras.__main__ import main as convert_main  # noqa: E402
from birnn.keras.layers import ConversionWarning  # noqa: E402
from birnn.keras.vocab import vectorizer_vocab, word_vocab  # noqa: E402

L = keras.layers
ROOT = Path(__file__).resolve().parents[1]
VOCAB, DIM, STEPS = 17, 6, 7
KERAS_CELLS = {"lstm": L.LSTM, "gru": L.GRU, "rnn": L.SimpleRNN}
TOLERANCE = 1e-5  # largest relative difference of probabilities, float32


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every weight (biases included, which Keras initialises to 0) random values."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.5, w.shape).astype("float32"))
    return model


def bidirectional(cell: str, units: int, merge, sequences: bool = True, **kwargs):
    return L.Bidirectional(KERAS_CELLS[cell](units, return_sequences=sequences, **kwargs),
                           merge_mode=merge)


def stack(cells, units, merges, mask: bool, head: list, last_sequences: bool = True):
    """Sequential: Embedding -> Bidirectional per layer -> the head layers."""
    layers = [keras.Input((None,), dtype="int32"), L.Embedding(VOCAB, DIM, mask_zero=mask)]
    for k, (c, u, m) in enumerate(zip(cells, units, merges, strict=True)):
        last = k == len(cells) - 1
        layers.append(bidirectional(c, u, m, sequences=last_sequences or not last))
    return randomize(keras.Sequential(layers + head))


def batch(mask: bool, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Integer inputs (B, T) and lengths: variable lengths padded with 0 for a masked model,
    full-length rows (id 0 included, a word like any other) for an unmasked one."""
    rng = np.random.default_rng(seed)
    if not mask:
        return rng.integers(0, VOCAB, (4, STEPS)), np.full(4, STEPS)
    lengths = np.array([STEPS, 5, 1, 3])
    ids = rng.integers(1, VOCAB, (4, STEPS))
    ids[np.arange(STEPS)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def keras_probs(model, ids: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(ids)))


def birnn_probs(module, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.tensor(ids), torch.tensor(lengths)).softmax(-1).numpy()


def relative_difference(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected) / np.abs(expected)))


def convert_saved(model, tmp_path: Path, **kwargs):
    path = tmp_path / "model.keras"
    model.save(path)
    return from_keras(path, **kwargs)


def check_tagger(model, tmp_path: Path, mask: bool) -> None:
    module = convert_saved(model, tmp_path)
    assert module.__class__.__name__ == "TokenTagger" and module.crf is None
    ids, lengths = batch(mask)
    expected, got = keras_probs(model, ids), birnn_probs(module, ids, lengths)
    real = np.arange(STEPS)[None, :] < lengths[:, None]  # (B, T): compare at real tokens
    assert relative_difference(expected[real], got[real]) < TOLERANCE


def check_classifier(model, tmp_path: Path, mask: bool, pooling: str) -> None:
    module = convert_saved(model, tmp_path)
    assert module.__class__.__name__ == "SentenceClassifier" and module.pooling == pooling
    ids, lengths = batch(mask)
    expected, got = keras_probs(model, ids), birnn_probs(module, ids, lengths)
    if expected.shape[-1] == 1:  # a sigmoid head: birnn's second label
        got = got[:, 1:]
    assert relative_difference(expected, got) < TOLERANCE


def softmax_dense(units: int = 4, distributed: bool = False):
    dense = L.Dense(units, activation="softmax")
    return L.TimeDistributed(dense) if distributed else dense


# --------------------------------------------------------------------------------- taggers


@pytest.mark.parametrize(("cells", "units", "merges", "mask"), [
    (["lstm"], [5], ["concat"], True),
    (["gru"], [5], ["sum"], True),
    (["rnn"], [5], ["mul"], True),
    (["lstm"], [4], ["ave"], False),
    (["gru", "lstm"], [4, 4], ["concat", "concat"], False),
    (["gru", "lstm", "rnn"], [5, 4, 3], ["sum", "concat", "mul"], True),
    (["lstm", "gru", "lstm"], [3, 6, 4], ["ave", "mul", "sum"], False),
])
def test_tagger_outputs_match_keras(tmp_path, cells, units, merges, mask):
    head = [softmax_dense(distributed=len(cells) % 2 == 0)]
    check_tagger(stack(cells, units, merges, mask, head), tmp_path, mask)


def test_tagger_with_an_unmerged_last_layer_matches_keras(tmp_path):
    # merge_mode=None then Concatenate: birnn's `none` (one projection per direction);
    # an inner merge_mode=None then Add: birnn's `sum`
    inputs = keras.Input((None,), dtype="int32")
    x = L.Embedding(VOCAB, DIM, mask_zero=True)(inputs)
    x = L.Add()(bidirectional("lstm", 4, None)(x))
    x = L.Concatenate()(bidirectional("gru", 3, None)(x))
    model = randomize(keras.Model(inputs, softmax_dense()(x)))
    module = convert_saved(model, tmp_path)
    assert module.encoder.merges == ["sum", "none"]
    check_tagger(model, tmp_path, mask=True)


def test_a_softmax_activation_after_a_linear_dense_is_the_head(tmp_path):
    model = stack(["gru"], [4], ["concat"], True, [L.Dense(3), L.Activation("softmax")])
    check_tagger(model, tmp_path, mask=True)


def test_dropout_layers_and_training_only_settings_convert_with_a_warning(tmp_path):
    layers = [keras.Input((None,), dtype="int32"), L.Embedding(VOCAB, DIM, mask_zero=True),
              L.SpatialDropout1D(0.2),
              bidirectional("lstm", 4, "sum", dropout=0.3, recurrent_dropout=0.1),
              L.Dropout(0.4), bidirectional("gru", 4, "concat"), L.Dropout(0.2),
              softmax_dense()]
    model = randomize(keras.Sequential(layers))
    with pytest.warns(ConversionWarning, match="dropout, recurrent_dropout"):
        module = convert_saved(model, tmp_path)
    assert module.encoder.dropout == 0.4 and module.hparams.dropout_kind == "locked"
    ids, lengths = batch(True)
    real = np.arange(STEPS)[None, :] < lengths[:, None]
    assert relative_difference(keras_probs(model, ids)[real],
                               birnn_probs(module, ids, lengths)[real]) < TOLERANCE


# ----------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize(("cell", "merge", "mask"), [
    ("lstm", "concat", True), ("gru", "sum", False), ("rnn", "ave", True), ("gru", "mul", True),
])
def test_classifier_on_final_states_matches_keras(tmp_path, cell, merge, mask):
    model = stack(["lstm", cell], [3, 5], ["concat", merge], mask, [softmax_dense(3)],
                  last_sequences=False)
    check_classifier(model, tmp_path, mask, "final")


@pytest.mark.parametrize(("pool", "pooling", "mask"), [
    (L.GlobalAveragePooling1D, "mean", True),  # Keras averages over the mask's real tokens
    (L.GlobalAveragePooling1D, "mean", False),
    (L.GlobalMaxPooling1D, "max", False),
])
def test_classifier_with_pooling_matches_keras(tmp_path, pool, pooling, mask):
    model = stack(["gru", "lstm"], [4, 4], ["sum", "concat"], mask, [pool(), softmax_dense(3)])
    check_classifier(model, tmp_path, mask, pooling)


def test_masked_max_pooling_warns_and_matches_on_unpadded_rows(tmp_path):
    model = stack(["lstm"], [4], ["concat"], True, [L.GlobalMaxPooling1D(), softmax_dense(3)])
    with pytest.warns(ConversionWarning, match="ignores the mask"):
        module = convert_saved(model, tmp_path)
    ids, lengths = batch(False)
    ids = np.maximum(ids, 1)  # no padding anywhere: Keras' max sees real tokens only
    assert relative_difference(keras_probs(model, ids), birnn_probs(module, ids, lengths)) \
        < TOLERANCE


def test_sigmoid_and_unmerged_final_states_match_keras(tmp_path):
    inputs = keras.Input((None,), dtype="int32")
    x = L.Embedding(VOCAB, DIM, mask_zero=True)(inputs)
    x = L.Concatenate()(bidirectional("gru", 4, None, sequences=False)(x))
    model = randomize(keras.Model(inputs, L.Dense(1, activation="sigmoid")(x)))
    check_classifier(model, tmp_path, True, "final")


# ------------------------------------------------------------------------------- refusals


def refused(model) -> str:
    with pytest.raises(ConfigError) as info:
        from_keras(model)
    message = str(info.value)
    assert "\n" not in message
    return message


def sequential(*layers):
    return keras.Sequential([keras.Input((None,), dtype="int32"),
                             L.Embedding(VOCAB, DIM, mask_zero=True), *layers])


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: sequential(L.Bidirectional(L.GRU(3, return_sequences=True, reset_after=False),
                                        name="bi"), softmax_dense()), "'bi'.*reset_after"),
    (lambda: sequential(L.Bidirectional(L.LSTM(3, return_sequences=True, activation="relu"),
                                        name="bi"), softmax_dense()), "'bi'.*activation='relu'"),
    (lambda: sequential(L.Bidirectional(L.LSTM(3, return_sequences=True,
                                               recurrent_activation="hard_sigmoid"),
                                        name="bi"), softmax_dense()),
     "'bi'.*recurrent_activation='hard_sigmoid'"),
    (lambda: sequential(L.Bidirectional(L.SimpleRNN(3, return_sequences=True,
                                                    use_bias=False), name="bi"),
                        softmax_dense()), "'bi'.*use_bias=False"),
    (lambda: sequential(L.Bidirectional(L.LSTM(3, return_sequences=True, go_backwards=True),
                                        backward_layer=L.LSTM(3, return_sequences=True),
                                        name="bi"), softmax_dense()), "'bi'.*go_backwards"),
    (lambda: sequential(L.Bidirectional(L.LSTM(3), name="bi1"),
                        L.RepeatVector(2), softmax_dense()), "'repeat_vector.*"),
    (lambda: sequential(L.Bidirectional(L.LSTM(3, return_sequences=True)),
                        L.Dense(4, activation="relu", name="out")), "'out'.*activation='relu'"),
    (lambda: sequential(L.Conv1D(4, 3, name="conv"), softmax_dense()), "'conv'.*Conv1D"),
    (lambda: sequential(L.Bidirectional(L.LSTM(3, return_sequences=True)),
                        L.LayerNormalization(name="norm"), softmax_dense()), "'norm'"),
])
def test_what_has_no_exact_equivalent_is_refused_naming_the_layer(build, expected):
    assert re.search(expected, refused(build()))


def test_a_quantized_model_is_refused():
    model = sequential(L.Bidirectional(L.LSTM(3, return_sequences=True)), softmax_dense())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' note on quantizing layers it leaves float
        model.quantize("int8")
    assert "quantized (int8)" in refused(model)


def test_an_unmerged_pair_birnn_cannot_express_is_refused():
    inputs = keras.Input((None,), dtype="int32")
    x = L.Embedding(VOCAB, DIM)(inputs)
    x = L.Concatenate(axis=1, name="time_concat")(bidirectional("lstm", 3, None)(x))
    model = keras.Model(inputs, softmax_dense()(x))
    assert "'time_concat'" in refused(model) and "axis=1" in refused(model)


def test_stateful_and_branching_models_are_refused():
    inputs = keras.Input(batch_shape=(2, 5), dtype="int32")
    x = L.Embedding(VOCAB, DIM)(inputs)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True, stateful=True), name="bi")(x)
    assert "'bi'" in refused(keras.Model(inputs, softmax_dense()(x)))
    inputs = keras.Input((None,), dtype="int32")
    x = L.Embedding(VOCAB, DIM, name="emb")(inputs)
    y = L.Add(name="skip")([bidirectional("lstm", 3, "sum")(x), L.Dense(3)(x)])
    assert "reads emb, not the layer before it" in refused(keras.Model(inputs,
                                                                       softmax_dense()(y)))


# ----------------------------------------------------------------------------- vocabularies


def test_vocabulary_files_map_padding_and_the_oov_entry(tmp_path):
    entries = ["", "[UNK]"] + [f"w{i}" for i in range(VOCAB - 2)]
    vocab = word_vocab(entries, VOCAB, mask_zero=True, source="words.txt")
    assert vocab.encode(["w3", "never-seen"]) == [entries.index("w3"), 1]
    assert vocab.itos[0] == "<pad>" and vocab.itos[1] == "<unk>"
    with pytest.raises(DataError, match="16 entries but the Embedding has input_dim=17"):
        word_vocab(entries[:-1], VOCAB, True, "words.txt")
    with pytest.raises(DataError, match="no out-of-vocabulary entry"):
        word_vocab(["<pad>"] + entries[2:] + ["x"], VOCAB, True, "words.txt")


class FakeVectorizer:
    """What `vectorizer_vocab` reads of a TextVectorization (which needs TensorFlow)."""

    name = "text_vectorization"

    def __init__(self, vocabulary, **config):
        self.vocabulary = vocabulary
        self.config = {"output_mode": "int", "split": "whitespace",
                       "standardize": "lower", **config}

    def get_config(self):
        return self.config

    def get_vocabulary(self, include_special_tokens=True):
        return list(self.vocabulary)


def test_a_text_vectorization_vocabulary_keeps_keras_ids():
    vocabulary = ["", "[UNK]", "the", "cat"]
    vocab = vectorizer_vocab(FakeVectorizer(vocabulary), 4)
    assert vocab.encode(["The", "cat", "dog"]) == [2, 3, 1]  # lower-cased, as Keras does
    with pytest.raises(ConfigError, match="'text_vectorization'.*split='character'"):
        vectorizer_vocab(FakeVectorizer(vocabulary, split="character"), 4)


def test_labels_must_fit_the_head(tmp_path):
    model = stack(["lstm"], [3], ["concat"], True, [softmax_dense(3)])
    with pytest.raises(DataError, match="2 labels but the model's head has 3 outputs"):
        from_keras(model, labels=["O", "B-X"])
    with pytest.raises(DataError, match="do not fit a birnn tagger"):
        from_keras(model, labels=["O", "NN", "VB"])


# ------------------------------------------------------------------------------ run folder


def test_the_run_folder_is_a_checkpoint_predict_and_lightning_read(tmp_path):
    import lightning as pl

    model = stack(["gru", "lstm"], [4, 3], ["sum", "concat"], True,
                  [softmax_dense(3, distributed=True)])
    model.save(tmp_path / "tagger.keras")
    words = ["", "[UNK]"] + [f"w{i}" for i in range(VOCAB - 2)]
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n")
    (tmp_path / "labels.txt").write_text("O\nB-X\nI-X\n")
    out = tmp_path / "run"
    assert convert_main([str(tmp_path / "tagger.keras"), str(out), "--vocab",
                         str(tmp_path / "words.txt"), "--labels",
                         str(tmp_path / "labels.txt")]) == 0
    torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    module, vocabularies = load_model(out)
    assert vocabularies["labels"]["itos"] == ["O", "B-X", "I-X"]

    sentences = ["w1 w2 w3 unknown w5", "w7"]
    (tmp_path / "input.txt").write_text("\n".join(sentences) + "\n")
    result = subprocess.run([sys.executable, "predict.py", f"ckpt={out}",
                             f"input={tmp_path / 'input.txt'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tagged = [line.split() for line in result.stdout.splitlines() if line.strip()]
    ids = [[words.index(w) if w in words else 1 for w in s.split()] for s in sentences]
    expected = [["O", "B-X", "I-X"][int(k)] for s in ids
                for k in keras_probs(model, np.array([s])).argmax(-1)[0]]
    assert [tag for _, tag in tagged] == expected

    # the train.py overrides the converter prints rebuild the same architecture
    from conftest import make_config
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    overrides = OmegaConf.load(out / "config.yaml").train_overrides.split()
    cfg = make_config(tmp_path / "train", *overrides)
    rebuilt = instantiate(cfg.model, vocab_size=VOCAB, labels=["O", "B-X", "I-X"],
                          encoder=OmegaConf.to_container(cfg.encoder, resolve=True),
                          _convert_="all")
    rebuilt.load_state_dict(module.state_dict())

    # fine-tuning: Lightning resumes from it (a fresh optimiser, weights as converted)
    data = torch.utils.data.DataLoader(
        [{"words": torch.tensor([[2, 3, 4]]), "lengths": torch.tensor([3]),
          "tags": torch.tensor([[0, 1, 2]])}], batch_size=None)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=data,
                ckpt_path=str(out / "checkpoints" / "best.ckpt"))
    assert trainer.global_step == 1


def test_the_cli_reports_a_missing_vocabulary_in_one_line(tmp_path, capsys):
    model = stack(["lstm"], [3], ["concat"], True, [softmax_dense(2)])
    model.save(tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("O\nB-X\n")
    assert convert_main([str(tmp_path / "m.keras"), str(tmp_path / "run"), "--labels",
                         str(tmp_path / "labels.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --vocab is required") and "\n" not in err


def test_a_legacy_h5_file_converts(tmp_path):
    model = stack(["lstm", "gru"], [3, 4], ["ave", "sum"], True, [softmax_dense(3)])
    path = tmp_path / "model.h5"
    model.save(path)
    module = from_keras(path)
    ids, lengths = batch(True)
    real = np.arange(STEPS)[None, :] < lengths[:, None]
    assert relative_difference(keras_probs(model, ids)[real],
                               birnn_probs(module, ids, lengths)[real]) < TOLERANCE


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # `import keras` raises ImportError
    with pytest.raises(ConfigError, match=re.escape("pip install -e '.[keras]'")):
        from_keras("model.keras")


def test_the_cli_reports_a_refused_layer_in_one_line_and_writes_nothing(tmp_path, capsys):
    model = sequential(L.Bidirectional(L.GRU(3, return_sequences=True, reset_after=False),
                                       name="old_gru"), softmax_dense(2))
    model.save(tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("O\nB-X\n")
    assert convert_main([str(tmp_path / "m.keras"), str(tmp_path / "run"), "--labels",
                         str(tmp_path / "labels.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: keras layer 'old_gru'") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_a_missing_keras_model_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="Keras model not found"):
        from_keras(tmp_path / "absent.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)  # nothing to warn about here
        from_keras(stack(["rnn"], [2], ["sum"], False, [softmax_dense(2)]))


def test_the_benchmark_times_a_keras_model_and_its_twin(tmp_path, capsys):
    from birnn.bench.cli import main as bench_main

    model = stack(["gru"], [4], ["sum"], True, [softmax_dense(3)])
    model.save(tmp_path / "m.keras")
    assert bench_main(["--keras-model", str(tmp_path / "m.keras"), "--keras-backend", "torch",
                       "--steps", "1", "--warmup", "0", "--batch", "4", "--seq", "6",
                       "--ragged", "--threads", "1", "--out", str(tmp_path / "bench")]) == 0
    table = (tmp_path / "bench" / "keras_model.md").read_text()
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| full")
            or line.startswith("| ragged")]
    assert [[c.strip() for c in r] for r in rows] == [["full", "keras"], ["full", "birnn"],
                                                      ["ragged", "keras"], ["ragged", "birnn"]]
    assert (tmp_path / "bench" / "keras_model.png").stat().st_size > 0
    assert "birnn / Keras" in capsys.readouterr().out


# --------------------------------------------------------------------- the docs' example


def example_blocks() -> list[tuple[str, str]]:
    """The (language, text) of docs/keras.md's fenced blocks (the docs-commands test leaves
    this page's blocks to this file)."""
    text = (ROOT / "docs" / "keras.md").read_text()
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


@pytest.mark.slow
def test_the_docs_worked_example_runs_as_written(tmp_path):
    demo = str(tmp_path / "keras-demo")
    blocks = [(lang, body.replace("outputs/keras-demo", demo)) for lang, body in example_blocks()]
    assert [lang for lang, _ in blocks] == ["python", "bash", "python", "python"]
    exec(compile(blocks[0][1], "docs/keras.md", "exec"), {"__name__": "__docs__"})
    printed = []
    for line in blocks[1][1].splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            assert argv[0] == "python"
            result = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode == 0, result.stderr
            printed.append(result.stdout)
    for _, block in blocks[2:]:
        exec(compile(block, "docs/keras.md", "exec"), {"__name__": "__docs__"})

    model = keras.saving.load_model(f"{demo}/tagger.keras")
    words = (Path(demo) / "words.txt").read_text().split("\n")[:-1]
    labels = (Path(demo) / "labels.txt").read_text().split()
    tagged = [line.split() for line in printed[-1].splitlines() if line.strip()]
    expected = []
    for sentence in (Path(demo) / "text.txt").read_text().splitlines():
        ids = np.array([[words.index(w) if w in words else 1 for w in sentence.split()]])
        expected += [[w, labels[k]] for w, k in
                     zip(sentence.split(), keras_probs(model, ids).argmax(-1)[0], strict=True)]
    assert tagged == expected
