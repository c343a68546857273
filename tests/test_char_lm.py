"""The co-trained character language model (`model.char_lm`, birnn.models.char_lm).

The stream, the boundary features and the loss are checked against a per-sentence Python
loop over plain nn.LSTM calls on unpadded single sentences (same weights); padding is
checked by a sentence alone against the same sentence beside a longer one; the option is
checked end to end (a composed config trains, the loss falls), off by default with the
state-dict keys and shapes of a checkpoint written before the option existed, refused with
one line where it cannot work, and exported to ONNX with the same emissions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_config
from torch import nn

from birnn.cli.app import EXIT_USER_ERROR, user_errors_exit
from birnn.cli.build import make_datamodule, make_model
from birnn.cli.train import train
from birnn.config import validate
from birnn.errors import ConfigError
from birnn.models import TokenTagger
from birnn.models.char_lm import CharLM, char_stream

NUM_CHARS = 9  # the vocabulary's ids 0..8; the separator is 9
DIM, HIDDEN = 4, 3
TINY = ("encoder.hidden_size=16", "model.embedding_dim=16", "model.char.kind=cnn",
        "model.char.dim=8", "model.char.filters=8")
FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention
    yield
    torch.set_num_threads(threads)


RAGGED = ["pack", "reverse"]  # packed rows, or padded (the backward stream reversed)


def lm_and_table(seed: int = 0, ragged: str = "auto") -> tuple[CharLM, nn.Embedding]:
    torch.manual_seed(seed)
    lm = CharLM(DIM, HIDDEN, NUM_CHARS + 1)
    lm.ragged = ragged
    return lm, nn.Embedding(NUM_CHARS + 1, DIM, padding_idx=0)


# Sentences as lists of words, a word a list of character ids (a real word may have none).
SENTENCES = [
    [[2, 3], [4], [5, 6, 7, 8]],
    [[8, 1, 2, 3, 4]],
    [[3], [], [6, 6], [7]],
    [],
]


def batch_of(sentences: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Character ids (B, T, W) padded with 0, and lengths (B,)."""
    steps = max(1, max(len(s) for s in sentences))
    width = max(1, max((len(w) for s in sentences for w in s), default=1))
    chars = torch.zeros(len(sentences), steps, width, dtype=torch.int64)
    for i, sentence in enumerate(sentences):
        for t, word in enumerate(sentence):
            chars[i, t, : len(word)] = torch.tensor(word, dtype=torch.int64)
    return chars, torch.tensor([len(s) for s in sentences])


def reference(lm: CharLM, table: nn.Embedding, sentence: list) -> dict:
    """One sentence by hand: separator, then each word and a separator; two plain LSTM calls
    on the unpadded stream, the backward one on it reversed."""
    separator = NUM_CHARS
    stream, separators = [separator], [0]
    for word in sentence:
        stream += word + [separator]
        separators.append(len(stream) - 1)
    ids = torch.tensor(stream)
    forward, _ = lm.forward_rnn(table(ids)[None])  # (1, L, H)
    backward, _ = lm.backward_rnn(table(ids.flip(0))[None])  # (1, L, H), right to left
    in_order = backward[0].flip(0)  # position i: the state after reading L-1 .. i
    features = [torch.cat([forward[0, separators[t + 1]], in_order[separators[t]]])
                for t in range(len(sentence))]
    logits = torch.cat([lm.forward_out(forward[0, :-1]), lm.backward_out(backward[0, :-1])])
    targets = torch.cat([ids[1:], ids.flip(0)[1:]])
    return {"stream": stream, "features": features, "logits": logits, "targets": targets}


@pytest.mark.parametrize("ragged", RAGGED)
def test_stream_and_boundary_states_match_a_per_sentence_loop(ragged):
    lm, table = lm_and_table(0, ragged)
    chars, lengths = batch_of(SENTENCES)
    stream, stream_lengths, _, _ = char_stream(chars, lengths, NUM_CHARS)
    with torch.no_grad():
        features, loss = lm(table, chars, lengths)
        for i, sentence in enumerate(SENTENCES):
            want = reference(lm, table, sentence)
            n = len(want["stream"])
            assert stream_lengths[i] == n
            assert stream[i, :n].tolist() == want["stream"]
            assert not stream[i, n:].any()
            for t, expected in enumerate(want["features"]):
                torch.testing.assert_close(features[i, t], expected, atol=1e-6, rtol=0)
            assert not features[i, len(sentence):].any()  # padding words: zeros
    assert loss is None  # only asked for in training


@pytest.mark.parametrize("ragged", RAGGED)
def test_loss_is_the_mean_cross_entropy_of_both_directions(ragged):
    lm, table = lm_and_table(1, ragged)
    chars, lengths = batch_of(SENTENCES)
    _, loss = lm(table, chars, lengths, with_loss=True)
    parts = [reference(lm, table, s) for s in SENTENCES]
    logits = torch.cat([p["logits"] for p in parts])
    targets = torch.cat([p["targets"] for p in parts])
    expected = F.cross_entropy(logits, targets, reduction="sum") / len(targets)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    loss.backward()  # the shared table learns from the language model
    assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("ragged", RAGGED)
def test_padding_never_leaks(ragged):
    lm, table = lm_and_table(2, ragged)
    short = SENTENCES[0]
    long = [[7, 7, 7, 7, 7, 7, 7], [2], [3, 4], [5], [6]]
    alone_chars, alone_lengths = batch_of([short])
    chars, lengths = batch_of([short, long])
    alone, alone_loss = lm(table, alone_chars, alone_lengths, with_loss=True)
    both, both_loss = lm(table, chars, lengths, with_loss=True)
    _, long_loss = lm(table, *batch_of([long]), with_loss=True)
    torch.testing.assert_close(both[0, : len(short)], alone[0], atol=1e-6, rtol=0)
    # the batch's loss: the mean over both sentences' predictions (2 (L - 1) each)
    n_short, n_long = 2 * (1 + 3 + 7 - 1), 2 * (1 + 5 + 12 - 1)
    expected = (alone_loss * n_short + long_loss * n_long) / (n_short + n_long)
    torch.testing.assert_close(both_loss, expected, atol=1e-6, rtol=0)

    # the whole tagger, in evaluation: the same emissions alone and beside a longer sentence
    torch.manual_seed(0)
    tagger = TokenTagger(20, ["O", "B-X", "I-X"], {"hidden_size": 5}, embedding_dim=6,
                         char={"kind": "cnn", "dim": DIM, "filters": 5}, num_chars=NUM_CHARS,
                         char_lm={"hidden_size": HIDDEN, "weight": 1.0}).eval()
    tagger.char_lm.ragged = ragged
    words = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    with torch.no_grad():
        pair = tagger(words, lengths, chars=chars)
        single = tagger(words[:1, :3], alone_lengths, chars=alone_chars)
    torch.testing.assert_close(pair[0, :3], single[0], atol=1e-6, rtol=0)


def lm_loss(model, batches) -> float:
    """The language model's mean loss over `batches` (it has no dropout: train mode is
    only what makes the model compute it)."""
    model.train()
    with torch.no_grad():
        values = []
        for batch in batches:
            model(batch["words"], batch["lengths"], **model.features(batch))
            values.append(float(model.char_lm_loss))
    return sum(values) / len(values)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer here
@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_training_lowers_the_language_model_loss_only_with_a_weight(tmp_path, weight):
    cfg = make_config(tmp_path, *TINY, "data.batch_size=16", "model.optimizer.lr=0.01",
                      f"model.char_lm={{hidden_size:16,weight:{weight}}}")
    validate(cfg)
    torch.manual_seed(0)
    datamodule = make_datamodule(cfg)
    model = make_model(cfg, datamodule)
    # the table has the vocabulary's rows and one for the separator
    assert model.char_encoder.embedding.num_embeddings == len(datamodule.chars) + 1
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(30)]
    held_out = batches[-5:]
    before = lm_loss(model, held_out)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step, batch in enumerate(batches[:25]):
        optimizer.zero_grad()
        model.training_step(batch, step).backward()
        optimizer.step()
    after = lm_loss(model, held_out)
    if weight > 0:
        assert after < before - 0.5, (before, after)  # from ~log(classes) towards the text
    else:
        # no gradient reaches the language model's softmax: it cannot learn the characters
        assert after > before - 0.2, (before, after)


def test_off_by_default_keeps_the_state_dict_of_older_checkpoints():
    """A checkpoint from before the option: the same hyper-parameters with `char_lm=None`
    (what the default config passes) build exactly its keys and shapes."""
    saved = torch.load(FIXTURES / "tagger.ckpt", weights_only=True)
    hparams = dict(saved["hyper_parameters"])
    assert "char_lm" not in hparams and hparams["char"]["kind"] != "none"
    model = TokenTagger(**hparams, char_lm=None)
    assert {k: v.shape for k, v in model.state_dict().items()} \
        == {k: v.shape for k, v in saved["state_dict"].items()}
    cfg = make_config(Path("/nonexistent"), "model.char.kind=cnn")
    assert cfg.model.char_lm is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.char.kind=cnn", "model.char_lm={hidden_size:8,weight:-1}"],
     "model.char_lm.weight: must be a number >= 0, got -1"),
    (["model.char.kind=cnn", "model.char_lm={hidden_size:0,weight:1.0}"],
     "model.char_lm.hidden_size: must be an integer >= 1, got 0"),
    (["model.char.kind=cnn", "model.char_lm={hidden_size:8}"],
     "model.char_lm.weight: required, but not given"),
    (["model.char_lm={hidden_size:8,weight:1.0}"],
     "model.char_lm: needs character features: set model.char.kind=cnn or birnn"),
    (["task=classification", "+model.char_lm={hidden_size:8,weight:1.0}"],
     "model.char_lm: must be null, got"),
])
def test_bad_config_exits_with_one_line(tmp_path, capsys, overrides, message):
    cfg = make_config(tmp_path, *overrides)
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        validate(cfg)
    with pytest.raises(SystemExit) as info:
        user_errors_exit(train)(cfg)
    assert info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_onnx_export_gives_the_same_emissions(tmp_path):
    pytest.importorskip("onnxruntime")
    from test_export import CHARS, batch, check_parity, tagger

    model = tagger({"cell": "lstm", "merge": "concat"}, head="crf", num_chars=CHARS,
                   char={"kind": "cnn", "dim": 4, "filters": 5, "max_length": 5},
                   char_lm={"hidden_size": 3, "weight": 1.0})
    inputs = batch(True)
    inputs["chars"][0, 3] = 0  # a real word without characters
    check_parity(model, inputs, tmp_path, "tagging")
