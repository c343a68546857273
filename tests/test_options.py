"""The encoder and model options: residual connections, locked (variational) dropout,
orthogonal init and forget-gate bias, pretrained word vectors, embedding dropout,
learning-rate schedules and gradient clipping; and that each option set in a composed config
reaches the model (or trainer) the training recipe builds.

Every check compares against a computation written here: hand-built stacks of PyTorch RNN
modules with copied weights, masks read back through a memoryless layer, vectors read back
from the files the tests write, learning-rate formulas written out from the documented
rules, torch's clipping definitions, and models constructed here from the arguments an
option stands for.
"""

from __future__ import annotations

import copy
import logging
import math
import re

import lightning as L
import pytest
import torch
from conftest import SAMPLE_NER, make_config, needs_cpu_bf16, write_vectors_file
from test_features import CORPUS, TINY, build_model, check_option_reaches_model, corpus_config
from torch import nn

from birnn import BiRNN
from birnn.cli.train import train
from birnn.data import read_column_file
from birnn.encoder import dropout as encoder_dropout
from birnn.encoder.dropout import SequenceDropout
from birnn.errors import ConfigError
from birnn.models import TokenTagger
from birnn.models.vectors import init_embedding, read_vectors

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
LENGTHS = [5, 1, 7, 3]  # unsorted, with a length-1 sequence and a full-length one
T = 7
LABELS = ["O", "B-X", "I-X"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tagger(vocab_size=30, embedding_dim=6, encoder=None, **kwargs):
    kwargs.setdefault("dropout", 0.0)
    return TokenTagger(vocab_size, LABELS, encoder or {"hidden_size": 4, "num_layers": 1},
                       embedding_dim=embedding_dim, **kwargs)


# ============================================================================ 1. residual


def hand_merge(f, b, mode):
    if mode == "concat":
        return torch.cat([f, b], -1)
    if mode == "sum":
        return f + b
    if mode == "ave":
        return (f + b) / 2
    raise AssertionError(mode)


@torch.no_grad()
def residual_reference(model, cells, hidden, merge, x, lengths):
    """Outputs (B, T, W) and final (B, W) of a stack of independent bidirectional modules
    with the BiRNN's weights, run one sequence at a time on its real tokens, merged by hand,
    with the layer input added wherever widths match from the second layer on."""
    modules, width = [], x.size(-1)
    for layer, cell in zip(model.layers, cells, strict=True):
        ref = CELLS[cell](width, hidden, batch_first=True, bidirectional=True)
        ref.load_state_dict(layer.state_dict())  # same names: *_l0 and *_l0_reverse
        modules.append(ref.eval())
        width = 2 * hidden if merge == "concat" else hidden
    outputs = torch.zeros(x.size(0), x.size(1), width)
    finals = []
    for i, n in enumerate(lengths):
        seq = x[i, :n]
        for k, ref in enumerate(modules):
            out, state = ref(seq.unsqueeze(0))
            out = out[0]
            merged = hand_merge(out[:, :hidden], out[:, hidden:], merge)
            seq = merged + seq if k > 0 and merged.shape == seq.shape else merged
        h = state[0] if isinstance(state, tuple) else state  # (2, 1, H)
        finals.append(hand_merge(h[0, 0], h[1, 0], merge))
        outputs[i, :n] = seq
    return outputs, torch.stack(finals)


@pytest.mark.parametrize(("cells", "input_size", "hidden", "merge"), [
    (["lstm", "lstm", "lstm"], 5, 4, "sum"),   # layer 1: 5 -> 4, no residual; 2, 3: yes
    (["gru", "gru", "gru"], 4, 4, "ave"),      # layer 1 has equal widths but is the first
    (["gru", "lstm", "rnn"], 3, 4, "sum"),     # mixed cells
    (["lstm", "lstm", "lstm"], 5, 3, "concat"),  # 5 -> 6, then 6 -> 6 twice
    (["gru", "gru"], 6, 3, "concat"),          # 6 -> 6 at the first layer: still no residual
])
def test_residual_matches_hand_built_stack(cells, input_size, hidden, merge):
    model = BiRNN(input_size, hidden, cells, merge=merge, residual=True).eval()
    assert model.residuals == [False] + [True] * (len(cells) - 1)
    for lengths in (LENGTHS, [T] * 3):
        x = torch.randn(len(lengths), T, input_size)  # random padding too: must not leak
        outputs, final = model(x, torch.tensor(lengths))
        expected, expected_final = residual_reference(model, cells, hidden, merge, x, lengths)
        torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(final, expected_final, atol=1e-5, rtol=0)
        for i, n in enumerate(lengths):
            assert (outputs[i, n:] == 0).all()


def test_residual_changes_the_output():
    # the same weights without the residual give other numbers: the comparison above can fail
    plain = BiRNN(4, 4, "lstm", num_layers=2, merge="sum").eval()
    res = BiRNN(4, 4, "lstm", num_layers=2, merge="sum", residual=True).eval()
    res.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 4)
    assert not torch.allclose(plain(x)[0], res(x)[0], atol=1e-3)


@pytest.mark.parametrize("kwargs", [
    {"input_size": 4, "hidden_size": 4, "merge": "sum", "num_layers": 1},
    {"input_size": 4, "hidden_size": 2, "merge": "concat", "num_layers": 1},
    {"input_size": 5, "hidden_size": [4, 3], "merge": "concat"},  # 5 -> 8 -> 6
    {"input_size": 4, "hidden_size": [4, 6], "merge": "sum"},  # 4 -> 4 -> 6
    {"input_size": 4, "hidden_size": 4, "merge": ["sum", "none"]},  # none: never a residual
])
def test_residual_needs_a_layer_of_equal_widths(kwargs):
    with pytest.raises(ConfigError, match=r"^encoder\.residual:"):
        BiRNN(residual=True, **kwargs)


def test_residual_cannot_be_fused():
    with pytest.raises(ConfigError, match=r"^encoder\.impl:"):
        BiRNN(6, 3, num_layers=2, merge="concat", residual=True, impl="fused")
    assert not BiRNN(6, 3, num_layers=2, merge="concat", residual=True).fusable
    with pytest.raises(ConfigError, match=r"^encoder\.residual:"):
        BiRNN(6, 3, num_layers=2, residual="yes")


# ======================================================================= 2. locked dropout


def second_layer_inputs(model, x, lengths):
    """The inputs (B, T, W) the second layer of `model` received in one forward call, read
    back from its outputs: the layer is set to a memoryless RNN (no recurrent weights, input
    weights 0.5 * identity, no bias), so each of its outputs is tanh(x_t / 2) and
    x_t = 2 * atanh(output). `model` is a two-layer stack whose second layer is an `rnn`
    with `concat` and as many units as its input width."""
    layer = model.layers[1]
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("weight_ih"):
                p.copy_(0.5 * torch.eye(p.size(0)))
            else:
                p.zero_()
        outputs, _ = model(x, lengths)
    width = outputs.size(-1) // 2
    forward, backward = outputs[..., :width], outputs[..., width:]
    torch.testing.assert_close(forward, backward)  # both directions see the same input
    return 2 * torch.atanh(forward.double().clamp(-1 + 1e-12, 1 - 1e-12))


def mask_is_locked(dropped, clean, lengths, p):
    """Whether `dropped` is `clean` times one {0, 1/(1-p)} mask per sequence and feature,
    the same at every real time step. Returns (locked, masks (B, W))."""
    masks = []
    for i, n in enumerate(lengths):
        mask = torch.where(dropped[i, 0].abs() < 1e-9, 0.0, 1 / (1 - p))  # from step 0
        masks.append(mask)
        if not torch.allclose(dropped[i, :n], clean[i, :n] * mask, atol=1e-4, rtol=1e-3):
            return False, None
    return True, torch.stack(masks)


@pytest.mark.parametrize(("lengths", "ragged"),
                         [(LENGTHS, "pack"), (LENGTHS, "reverse"), ([T] * 4, "auto")],
                         ids=["packed", "reversed", "full"])
@pytest.mark.parametrize("kind", ["locked", "standard"])
def test_encoder_locked_dropout_mask_is_constant_over_time(lengths, ragged, kind):
    p, hidden = 0.5, 3
    model = BiRNN(4, [hidden, 2 * hidden], ["lstm", "rnn"], merge="concat", dropout=p,
                  dropout_kind=kind, ragged=ragged)
    x, lens = torch.randn(len(lengths), T, 4), torch.tensor(lengths)
    clean = second_layer_inputs(model.eval(), x, lens)  # the first layer's outputs
    dropped = second_layer_inputs(model.train(), x, lens)
    real = torch.arange(T) < lens.unsqueeze(1)  # (B, T)
    assert (clean[real].abs() > 1e-7).all()  # so a zero at step 0 is a dropped feature
    locked, masks = mask_is_locked(dropped, clean, lengths, p)
    if kind == "standard":  # control: a new mask per token is not locked
        assert not locked
        return
    assert locked
    # one mask per sequence, not one for the whole batch; about a fraction p dropped
    assert len({tuple(m.tolist()) for m in masks}) > 1
    assert 0.2 < (masks == 0).float().mean() < 0.8


def test_encoder_locked_dropout_eval_is_deterministic():
    model = BiRNN(3, 5, "gru", num_layers=2, merge="sum", dropout=0.5, dropout_kind="locked")
    plain = BiRNN(3, 5, "gru", num_layers=2, merge="sum")
    plain.load_state_dict(model.state_dict())
    x, lens = torch.randn(4, T, 3), torch.tensor(LENGTHS)
    model.eval()
    first = model(x, lens)[0]
    torch.testing.assert_close(first, model(x, lens)[0], atol=0, rtol=0)
    torch.testing.assert_close(first, plain.eval()(x, lens)[0], atol=1e-6, rtol=0)
    model.train()
    assert not torch.allclose(model(x, lens)[0], first, atol=1e-4)  # dropout is on


def test_sequence_dropout_locked_on_sequences():
    p = 0.25
    drop = SequenceDropout(p, "locked").train()
    out = drop(torch.ones(64, 9, 32))
    assert ((out == 0) | torch.isclose(out, torch.tensor(1 / (1 - p)))).all()
    assert (out == out[:, :1]).all()  # the same mask at every time step
    assert len({tuple(row.tolist()) for row in out[:, 0]}) > 1  # per sequence
    assert abs((out[:, 0] == 0).float().mean().item() - p) < 0.06
    assert abs(out[:, 0].mean().item() - 1) < 0.1  # the 1/(1-p) scaling keeps the mean
    x = torch.randn(3, 4, 5)
    assert torch.equal(drop.eval()(x), x)


def test_sequence_dropout_standard_and_pooled_vectors():
    p = 0.5
    for kind in ("standard", "locked"):
        drop = SequenceDropout(p, kind).train()
        # pooled (B, W) vectors: an independent mask per element, not per feature
        out = drop(torch.ones(200, 40))
        assert ((out == 0) | (out == 2)).all()
        assert abs((out == 0).float().mean().item() - p) < 0.05
        zero_columns = (out == 0).all(0) | (out != 0).all(0)
        assert not zero_columns.all()
    # standard on (B, T, W): masks vary over time
    out = SequenceDropout(p, "standard").train()(torch.ones(8, 20, 16))
    assert not (out == out[:, :1]).all()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(p, dtype):
    """The CPU dropout against its definition: zeros with probability p (a binomial count
    within 5 standard deviations), survivors x / (1 - p), gradient mask / (1 - p)."""
    x = (torch.rand(200, 50, 20) + 0.5).to(dtype).requires_grad_(True)
    out = encoder_dropout.dropout(x, p, True)
    assert out.dtype == dtype
    kept = out != 0
    n = x.numel()
    assert abs((n - kept.sum().item()) - p * n) < 5 * math.sqrt(n * p * (1 - p))
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    torch.testing.assert_close(out[kept], x.detach()[kept] * scale, rtol=0, atol=0)
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(dtype) * scale, rtol=0, atol=0)
    assert encoder_dropout.dropout(x, p, False) is x
    assert encoder_dropout.dropout(x, 0.0, True) is x


# ================================================================= 3. orthogonal, forget


def lstm_or_gru_params(layer):
    for suffix in ("_l0", "_l0_reverse"):
        yield {name: getattr(layer, f"{name}{suffix}")
               for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


@pytest.mark.parametrize("cells", [["lstm", "lstm"], ["gru", "lstm", "rnn"]])
def test_orthogonal_init(cells):
    hidden, input_size = 5, 3
    model = BiRNN(input_size, hidden, cells, merge="concat", init="orthogonal")
    width = input_size
    for layer, cell in zip(model.layers, cells, strict=True):
        gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
        bound = math.sqrt(6 / (width + hidden))  # Xavier-uniform for one (H, in) block
        for p in lstm_or_gru_params(layer):
            assert p["weight_hh"].shape == (gates * hidden, hidden)
            for block in p["weight_hh"].detach().split(hidden, 0):
                torch.testing.assert_close(block.T @ block, torch.eye(hidden), atol=1e-5,
                                           rtol=0)
            assert (p["weight_ih"].abs() <= bound + 1e-6).all()
            assert p["weight_ih"].abs().max() > bound / 4
            assert (p["bias_ih"] == 0).all() and (p["bias_hh"] == 0).all()
        width = 2 * hidden


def test_default_init_is_not_orthogonal():
    # control: PyTorch's uniform init fails the check above
    block = BiRNN(3, 5).layers[0].weight_hh_l0.detach()[:5]
    assert not torch.allclose(block.T @ block, torch.eye(5), atol=1e-2)


@pytest.mark.parametrize("init", ["default", "orthogonal"])
def test_forget_bias_on_lstm_layers_only(init):
    hidden, cells = 4, ["gru", "lstm", "lstm"]
    torch.manual_seed(3)
    before = BiRNN(3, hidden, cells, merge="sum", init=init)
    torch.manual_seed(3)
    after = BiRNN(3, hidden, cells, merge="sum", init=init, forget_bias=1.0)
    for old, new, cell in zip(before.layers, after.layers, cells, strict=True):
        for o, n in zip(lstm_or_gru_params(old), lstm_or_gru_params(new), strict=True):
            for name in ("weight_ih", "weight_hh"):
                assert torch.equal(o[name], n[name])
            if cell == "gru":
                assert torch.equal(o["bias_ih"], n["bias_ih"])
                assert torch.equal(o["bias_hh"], n["bias_hh"])
                continue
            forget = slice(hidden, 2 * hidden)  # gate order: input, forget, cell, output
            assert (n["bias_ih"][forget] == 1.0).all()
            assert (n["bias_hh"][forget] == 0.0).all()
            rest = torch.ones(4 * hidden, dtype=torch.bool)
            rest[forget] = False
            assert torch.equal(o["bias_ih"][rest], n["bias_ih"][rest])
            assert torch.equal(o["bias_hh"][rest], n["bias_hh"][rest])


def test_init_and_forget_bias_errors():
    with pytest.raises(ConfigError, match=r"^encoder\.init:"):
        BiRNN(3, 4, init="xavier")
    for bad in ("one", True):
        with pytest.raises(ConfigError, match=r"^encoder\.forget_bias:"):
            BiRNN(3, 4, forget_bias=bad)
    with pytest.raises(ConfigError, match=r"^encoder\.dropout_kind:"):
        BiRNN(3, 4, dropout_kind="variational")


# ====================================================================== 4. pretrained


VECTORS = {  # the file's words and vectors (3 wide)
    "the": [0.1, -0.2, 0.3],
    "Paris": [1.5, 2.5, -3.5],
    "london": [4.0, 5.0, 6.0],   # the vocabulary has "London": lower-case fallback
    "London2": [9.0, 9.0, 9.0],  # not in the vocabulary
    "<unk>": [7.0, 7.0, 7.0],    # the specials' rows must not be touched
    "<pad>": [8.0, 8.0, 8.0],
    "cat": [-1.0, 0.0, 1.0],
}
ITOS = ["<pad>", "<unk>", "the", "Paris", "London", "cat", "Cat", "missing", "THE"]
# vocabulary word -> the file vector it must take (exact spelling first, else lower case)
EXPECTED = {"the": "the", "Paris": "Paris", "London": "london", "cat": "cat", "Cat": "cat",
            "THE": "the"}


def write_vectors(path, vectors=VECTORS, header=False, extra=""):
    return write_vectors_file(path, vectors.items(), header=header, extra=extra)


@pytest.mark.parametrize(("name", "header"), [
    ("glove.txt", False), ("word2vec.txt", True), ("glove.txt.gz", False),
    ("word2vec.txt.gz", True),
])
def test_pretrained_rows(tmp_path, name, header):
    path = write_vectors(tmp_path / name, header=header)
    model = tagger(vocab_size=len(ITOS), embedding_dim=3,
                   embeddings={"pretrained": str(path), "freeze": False})
    model.vocabularies = {"words": {"itos": ITOS}}
    before = model.embedding.weight.detach().clone()
    hits = model.init_pretrained()
    weight = model.embedding.weight.detach()
    assert hits == len(EXPECTED)
    for i, word in enumerate(ITOS):
        if word in EXPECTED:
            assert weight[i].tolist() == pytest.approx(VECTORS[EXPECTED[word]]), word
        else:  # <pad>, <unk>, and words the file lacks keep their rows
            assert torch.equal(weight[i], before[i]), word
    assert model.embedding.weight.requires_grad


def test_read_vectors_words_with_spaces_and_first_occurrence(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("the 3 4\nnew york 1 2\nthe 5 6\n\nsolo 7 8 \n")
    found = read_vectors(path, {"new york", "the", "solo", "absent"}, 2)
    assert {w: v.tolist() for w, v in found.items()} == {
        "new york": [1.0, 2.0], "the": [3.0, 4.0], "solo": [7.0, 8.0]}


def test_read_vectors_first_word_with_a_space(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("new york 1 2\nthe 3 4\n")
    found = read_vectors(path, {"new york", "the"}, 2)
    assert {w: v.tolist() for w, v in found.items()} == {
        "new york": [1.0, 2.0], "the": [3.0, 4.0]}


def test_pretrained_dimension_mismatch(tmp_path):
    for header in (False, True):
        path = write_vectors(tmp_path / f"v{header}.txt", header=header)
        embedding = nn.Embedding(len(ITOS), 4)
        with pytest.raises(ConfigError, match=r"model\.embedding_dim") as info:
            init_embedding(embedding, ITOS, path)
        assert "3-dimensional" in str(info.value)


def test_pretrained_missing_file(tmp_path):
    missing = tmp_path / "nowhere.txt"
    model = tagger(vocab_size=len(ITOS), embedding_dim=3, embeddings={"pretrained": str(missing)})
    model.vocabularies = {"words": {"itos": ITOS}}
    with pytest.raises(ConfigError, match=r"^model\.embeddings\.pretrained: .*nowhere\.txt"):
        model.init_pretrained()


@pytest.mark.parametrize("extra", [
    "cat 1.0 2.0\n",          # too few numbers
    "Paris 1.0 zwei 3.0\n",   # not a number, for a vocabulary word
])
def test_pretrained_malformed_line_names_its_number(tmp_path, extra):
    vectors = {w: v for w, v in VECTORS.items() if w != extra.split()[0]}
    path = write_vectors(tmp_path / "v.txt", vectors, extra=extra)
    body = path.read_text().splitlines()
    line = len(body)  # the malformed line is the last one
    assert body[line - 1] == extra.strip()
    with pytest.raises(ConfigError, match=rf"line {line}\b"):
        init_embedding(nn.Embedding(len(ITOS), 3), ITOS, path)
    # the same with a word2vec header: the header counts as line 1
    path = write_vectors(tmp_path / "w.txt", vectors, header=True, extra=extra)
    with pytest.raises(ConfigError, match=rf"line {line + 1}\b"):
        init_embedding(nn.Embedding(len(ITOS), 3), ITOS, path)


def test_pretrained_needs_the_vocabulary_and_known_keys(tmp_path):
    model = tagger(embeddings={"pretrained": str(write_vectors(tmp_path / "v.txt"))})
    with pytest.raises(ConfigError, match="vocabulary"):
        model.init_pretrained()
    assert tagger(embeddings={"pretrained": None}).init_pretrained() is None


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_keeps_the_table_out_of_the_optimizer(tmp_path, freeze):
    path = write_vectors(tmp_path / "v.txt")
    model = tagger(vocab_size=len(ITOS), embedding_dim=3,
                   embeddings={"pretrained": str(path), "freeze": freeze})
    model.vocabularies = {"words": {"itos": ITOS}}
    model.init_pretrained()
    assert model.embedding.weight.requires_grad is not freeze
    optimizer = model.configure_optimizers()
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert (id(model.embedding.weight) in in_optimizer) is not freeze
    others = [p for n, p in model.named_parameters() if n != "embedding.weight"]
    assert others and all(id(p) in in_optimizer for p in others)


# --- end to end on the sample


def sample_vectors(dim):
    """Vectors for a few words of the sample's training split (chosen from the file), plus
    one the data never has."""
    counts = {}
    for sent in read_column_file(SAMPLE_NER / "train.txt"):
        for token in sent["tokens"]:
            counts[token] = counts.get(token, 0) + 1
    words = ["the", "said", "minister", "market"]
    assert all(counts.get(w, 0) >= 5 for w in words), "pick words of the sample"
    assert "The" in counts  # takes "the" by the lower-case fallback
    gen = torch.Generator().manual_seed(7)
    vectors = {w: (torch.randn(dim, generator=gen) * 3).tolist() for w in words}
    vectors["zzyzx-not-in-data"] = [1.0] * dim
    return vectors


def without(options, *keys):
    """`options` less the overrides of `keys` (so that a test can set them again)."""
    return tuple(o for o in options if o.split("=")[0] not in keys)


PRETRAINED_RUN = (*without(TINY, "model.embedding_dim"), "model.embedding_dim=8",
                  "+trainer.limit_train_batches=8", "+trainer.limit_val_batches=2",
                  "+trainer.limit_test_batches=2")  # a few steps move the trained rows


def expected_rows(itos, vectors):
    return {w: vectors[w] if w in vectors else vectors[w.lower()]
            for w in itos[2:] if w in vectors or w.lower() in vectors}


def word_table(state_dict):
    """The rows of every word id: the trained table, then the fixed rows of the words the
    vocabulary was extended with (the vectors' words outside the training data)."""
    weight = state_dict["embedding.weight"]
    return torch.cat([weight, state_dict.get("fixed_embedding", weight[:0])])


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_end_to_end(tmp_path, caplog, freeze):
    vectors = sample_vectors(8)
    path = write_vectors(tmp_path / "vectors.txt.gz", vectors, header=True)
    caplog.set_level(logging.INFO, logger="birnn")
    metrics = train(make_config(tmp_path / "run", *PRETRAINED_RUN,
                                f"model.embeddings.pretrained={path}",
                                f"model.embeddings.freeze={str(freeze).lower()}"))
    assert math.isfinite(metrics["test"]["f1"])
    saved = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)
    itos = saved["vocabularies"]["words"]["itos"]
    rows = expected_rows(itos, vectors)
    assert {"the", "The", "said", "minister", "market"} <= set(rows)
    # the vocabulary is extended with the vectors' word the data lacks, after the trained ones
    trained = len(itos) - saved["vocabularies"]["words"]["extra"]
    assert itos[trained:] == ["zzyzx-not-in-data"]
    coverage = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("pretrained vectors:")]
    assert coverage, "no coverage line logged"
    match = re.match(r"pretrained vectors: ([\d,]+) of ([\d,]+) vocabulary words from training",
                     coverage[0])
    assert match and int(match[1].replace(",", "")) == len(rows) - 1
    assert int(match[2].replace(",", "")) == trained - 2
    weight = word_table(saved["state_dict"])
    same = [torch.allclose(weight[itos.index(w)], torch.tensor(v)) for w, v in rows.items()]
    if freeze:
        assert all(same)
        assert (weight[0] == 0).all()
    else:  # trained: the frequent words moved away from their initial vectors
        assert not same[list(rows).index("the")]


def test_frozen_pretrained_run_resumes(tmp_path):
    vectors = sample_vectors(8)
    path = write_vectors(tmp_path / "vectors.txt", vectors)
    run = tmp_path / "run"
    options = (*without(PRETRAINED_RUN, "trainer.max_epochs"),
               f"model.embeddings.pretrained={path}", "model.embeddings.freeze=true")
    train(make_config(run, *options, "trainer.max_epochs=1"))
    resumed = train(make_config(run, *options, "trainer.max_epochs=2", "resume=true"))
    assert resumed["epochs"] == 2
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    itos = saved["vocabularies"]["words"]["itos"]
    weight = word_table(saved["state_dict"])
    for w, v in expected_rows(itos, vectors).items():
        torch.testing.assert_close(weight[itos.index(w)], torch.tensor(v))


# ================================================================ 5. embedding dropout


def test_embedding_dropout_drops_word_types():
    p, vocab = 0.5, 40
    model = tagger(vocab_size=vocab, embedding_dim=5, embedding_dropout=p)
    words = torch.randint(2, 12, (6, 15))  # few types, many repeats
    words[0, 10:] = 0  # padding
    weight = model.embedding.weight.detach()
    model.train()
    out = model.embed(words).detach()
    dropped = kept = 0
    for w in words.unique().tolist():
        rows = out[words == w]
        if w == 0:
            assert (rows == 0).all()
        elif (rows == 0).all():
            dropped += 1
        else:
            torch.testing.assert_close(rows, (weight[w] / (1 - p)).expand_as(rows))
            kept += 1
    assert dropped and kept  # both happen with 10 types at p=0.5 (seeded)
    # a new draw per batch: another call drops other types
    again = model.embed(words).detach()
    assert not torch.equal(again, out)
    model.eval()
    torch.testing.assert_close(model.embed(words), weight[words], atol=0, rtol=0)


# ===================================================================== 6. schedulers


def expected_lr(name, step, base, total, warmup, min_lr):
    """The learning rate of optimizer step `step` (0-based) of `total`: a linear warm-up over
    `warmup` steps (step s takes base * (s+1) / warmup), then constant, or a linear or
    half-cosine decay from base at step `warmup` to min_lr at step `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    if name == "constant":
        return base
    t = min((step - warmup) / (total - warmup), 1.0)
    if name == "linear":
        return base - (base - min_lr) * t
    return min_lr + (base - min_lr) * (1 + math.cos(math.pi * t)) / 2


class LrRecorder(L.Callback):
    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize(("name", "warmup", "min_lr"), [
    ("linear", 3, 0.01), ("cosine", 3, 0.01), ("cosine", 0, 0.0), ("constant", 4, 0.0),
])
def test_step_schedulers_follow_the_formula(tmp_path, name, warmup, min_lr):
    """`model/scheduler=NAME` from the config, in training: the rate of every step."""
    base, epochs, batch_size = 0.2, 3, 2
    cfg = corpus_config(tmp_path, "model/optimizer=sgd", f"model.optimizer.lr={base}",
                        f"model/scheduler={name}", f"model.scheduler.warmup_steps={warmup}",
                        f"model.scheduler.min_lr={min_lr}", f"data.batch_size={batch_size}")
    datamodule, model = build_model(cfg)
    recorder = LrRecorder()
    trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[recorder],
                        default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    total = epochs * math.ceil(len(CORPUS) / batch_size)
    expected = [expected_lr(name, s, base, total, warmup, min_lr) for s in range(total)]
    assert recorder.lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)
    final = trainer.optimizers[0].param_groups[0]["lr"]  # after the last step's update
    assert final == pytest.approx(base if name == "constant" else min_lr, abs=1e-12)


def scheduled(tmp_path, *overrides):
    """A model built from the config with these scheduler overrides, its scheduler config
    completed with a plain SGD optimizer."""
    _, model = build_model(corpus_config(tmp_path, *overrides))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, model.lr_scheduler(optimizer)


def test_plateau_scheduler(tmp_path):
    base, factor, patience, min_lr = 0.1, 0.5, 2, 0.02
    model, optimizer, config = scheduled(
        tmp_path, "model/scheduler=plateau", f"model.scheduler.factor={factor}",
        f"model.scheduler.patience={patience}", f"model.scheduler.min_lr={min_lr}")
    assert config["monitor"] == "val/f1" and config["interval"] == "epoch"
    plateau = config["scheduler"]
    scores = [0.1, 0.2, 0.3, 0.3, 0.29, 0.3, 0.25, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
    # independently: reduce once more than `patience` epochs in a row failed to improve on
    # the best, then count afresh; never below min_lr
    lr, best, bad, expected = base, -math.inf, 0, []
    for s in scores:
        if s > best * (1 + 1e-4):
            best, bad = s, 0
        else:
            bad += 1
        if bad > patience:
            lr, bad = max(lr * factor, min_lr), 0
        expected.append(lr)
    got = []
    for s in scores:
        plateau.step(s)
        got.append(optimizer.param_groups[0]["lr"])
    assert got == pytest.approx(expected)
    assert base * factor in got and min_lr in got  # both a reduction and the floor happen
    # mode min: a rising score is no improvement
    _, optimizer, config = scheduled(
        tmp_path, "model/scheduler=plateau", f"model.scheduler.factor={factor}",
        "model.scheduler.patience=0", "model.scheduler.mode=min")
    plateau = config["scheduler"]
    plateau.step(1.0)
    plateau.step(2.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(base * factor)


@pytest.mark.parametrize(("overrides", "reference"), [
    (["model/optimizer=adam", "model.optimizer.lr=0.01", "model.optimizer.weight_decay=0.1"],
     lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=0.1, foreach=False)),
    (["model/optimizer=adamw", "model.optimizer.lr=0.01", "model.optimizer.weight_decay=0.1"],
     lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1, foreach=False)),
    (["model/optimizer=sgd", "model.optimizer.lr=0.1", "model.optimizer.momentum=0.9",
      "model.optimizer.weight_decay=0.01"],
     lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01,
                                    foreach=False)),
], ids=["adam", "adamw", "sgd"])
def test_fused_optimizer_matches_the_reference_loop(tmp_path, overrides, reference):
    """The optimizer a config names, fused by default, against PyTorch's per-parameter loop
    (`foreach=False`, the reference implementation) with the hyper-parameters written here,
    from the same weights and gradients, over three steps."""
    _, model = build_model(corpus_config(tmp_path, *overrides))
    fused = model.configure_optimizers()
    assert fused.defaults["fused"] is True
    twin = copy.deepcopy(model)
    looped = reference(list(twin.parameters()))
    start = [p.detach().clone() for p in model.parameters()]
    for step in range(3):
        for m in (model, twin):
            torch.manual_seed(step)
            for p in m.parameters():
                p.grad = torch.randn_like(p)
        fused.step()
        looped.step()
    for (name, got), want in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=name)
    for p, before in zip(model.parameters(), start, strict=True):
        assert not torch.equal(p, before)  # every tensor was updated


def test_fused_optimizer_can_be_turned_off(tmp_path):
    _, model = build_model(corpus_config(tmp_path, "model.optimizer.fused=false"))
    assert not model.configure_optimizers().defaults["fused"]


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipping_without_loss_scaling_matches_torch(algorithm):
    """With no loss scaling (fp32, bf16) the module clips the fused optimizer's gradients
    itself; the result equals torch's clipping of the same gradients."""
    model = tagger()
    optimizer = model.configure_optimizers()
    torch.manual_seed(0)
    grads = [torch.randn_like(p) * 10 for p in model.parameters()]
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    model.configure_gradient_clipping(optimizer, 0.5, algorithm)
    twins = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for t, g in zip(twins, grads, strict=True):
        t.grad = g.clone()
    clip = nn.utils.clip_grad_norm_ if algorithm == "norm" else nn.utils.clip_grad_value_
    clip(twins, 0.5)
    for p, t in zip(model.parameters(), twins, strict=True):
        torch.testing.assert_close(p.grad, t.grad)
    assert not torch.equal(twins[0].grad, grads[0])  # clipping changed something


def test_fp16_loss_scaling_with_clipping_takes_the_unfused_optimizer(monkeypatch):
    model = tagger()
    monkeypatch.setattr(type(model), "_loss_scaling", lambda self: True)
    monkeypatch.setattr(type(model), "trainer", property(
        lambda self: type("T", (), {"gradient_clip_val": 1.0})()))
    assert model.configure_optimizers().defaults["fused"] is False


def test_no_scheduler(tmp_path):
    assert scheduled(tmp_path)[2] is None  # the default: a constant rate
    assert isinstance(tagger().configure_optimizers(), torch.optim.Optimizer)


class EndlessTrainer:
    """What Lightning reports for trainer.max_epochs=-1 (allowed by the config rules) and no
    max_steps: an unknown number of steps."""

    estimated_stepping_batches = float("inf")


def test_schedulers_with_endless_training(tmp_path):
    model = build_model(corpus_config(tmp_path, "model/scheduler=constant",
                                      "model.scheduler.warmup_steps=2"))[1]
    model.trainer = EndlessTrainer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = model.lr_scheduler(optimizer)["scheduler"]
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    for name in ("linear", "cosine"):
        model = build_model(corpus_config(tmp_path, f"model/scheduler={name}"))[1]
        model.trainer = EndlessTrainer()
        with pytest.raises(ConfigError, match=r"model\.scheduler"):
            model.lr_scheduler(torch.optim.SGD(model.parameters(), lr=0.1))


# ============================================================= 7. config validation


# The bad values of these options are rows of tests/test_config_validation.py's table.


# ============================================================ 8. options reach the model


@pytest.mark.parametrize(("overrides", "changes"), [
    (["encoder.residual=true", "encoder.merge=sum"],
     {"encoder": {"residual": True, "merge": "sum"}}),
    (["encoder.dropout_kind=locked", "encoder.dropout=0.4"],
     {"encoder": {"dropout_kind": "locked", "dropout": 0.4}}),
    (["model.dropout_kind=locked", "model.dropout=0.3"],
     {"dropout_kind": "locked", "dropout": 0.3}),
    (["encoder.init=orthogonal"], {"encoder": {"init": "orthogonal"}}),
    (["encoder.forget_bias=1.0"], {"encoder": {"forget_bias": 1.0}}),
    (["model.embedding_dropout=0.2"], {"embedding_dropout": 0.2}),
    (["encoder.cell=[gru,lstm]", "encoder.hidden_size=[6,4]", "encoder.merge=[concat,sum]"],
     {"encoder": {"cell": ["gru", "lstm"], "hidden_size": [6, 4], "merge": ["concat", "sum"]}}),
    (["encoder.merge=[concat,none]"], {"encoder": {"merge": ["concat", "none"]}}),
], ids=["residual", "encoder-locked-dropout", "model-locked-dropout", "orthogonal",
        "forget-bias", "embedding-dropout", "mixed-stack", "unmerged-last-layer"])
def test_options_reach_the_built_model(tmp_path, overrides, changes):
    check_option_reaches_model(tmp_path, overrides, changes)


def gradients(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


class GradientProbe(L.Callback):
    """Each step's gradients before clipping (Lightning's hook, which comes before it) and as
    the optimizer's step used them (a step post-hook: Lightning's closure computes them
    inside the step, and the next step's zero_grad comes later)."""

    def __init__(self):
        self.before, self.after = [], []

    def on_train_start(self, trainer, pl_module):
        trainer.optimizers[0].register_step_post_hook(
            lambda *_: self.after.append(gradients(pl_module)))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append(gradients(pl_module))


@pytest.mark.parametrize(("overrides", "algorithm"), [
    ([], "norm"),
    pytest.param(["trainer.precision=bf16-mixed"], "norm",  # the fused optimizer, clipped
                 marks=needs_cpu_bf16),                    # by the module
    (["model.optimizer.fused=false", "+trainer.gradient_clip_algorithm=value"], "value"),
], ids=["fp32", "bf16", "value"])
def test_gradient_clipping_reaches_the_optimizer_step(tmp_path, overrides, algorithm):
    """The trainer config's clipping, in a trainer built from it: the step gets the
    gradients clipped as torch's definition says (scaled to norm `clip` when their norm
    exceeds it; each value clamped to [-clip, clip])."""
    from birnn.cli.build import make_trainer
    clip = 0.05
    cfg = corpus_config(tmp_path, f"trainer.gradient_clip_val={clip}", "data.batch_size=4",
                        *overrides)
    datamodule, model = build_model(cfg)
    probe = GradientProbe()
    trainer = make_trainer(cfg, [probe], [], max_steps=3, limit_val_batches=0,
                           enable_checkpointing=False)
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
    assert len(probe.before) == len(probe.after) == 3
    for before, after in zip(probe.before, probe.after, strict=True):
        if algorithm == "norm":
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in before]))
            assert norm > clip  # clipping has work to do
            expected = [g * (clip / (norm + 1e-6)) for g in before]
        else:
            assert max(g.abs().max() for g in before) > clip
            expected = [g.clamp(-clip, clip) for g in before]
        for got, want in zip(after, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
