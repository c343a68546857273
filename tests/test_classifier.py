"""The sentence classifier's pooling, checked against hand computations on a tiny model:
padding never reaches the pooled vector, and `final` is the encoder's final state."""

from __future__ import annotations

import pytest
import torch

from birnn import BiRNN
from birnn.models import SentenceClassifier

EMBED, HIDDEN = 6, 4
POOLINGS = ["final", "mean", "max", "attention"]


def make_model(pooling: str = "final", merge="concat", num_layers: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    model = SentenceClassifier(
        vocab_size=30, labels=["neg", "neu", "pos"], pooling=pooling, embedding_dim=EMBED,
        dropout=0.0,
        encoder={"hidden_size": HIDDEN, "num_layers": num_layers, "merge": merge, "cell": "gru"},
    )
    return model.eval()


def batch(lengths=(5, 2, 3)):
    """Word ids (B, T) padded with 0 after each length, and the lengths."""
    torch.manual_seed(1)
    lengths = torch.tensor(lengths)
    words = torch.randint(2, 30, (len(lengths), int(lengths.max())))
    words[torch.arange(words.size(1))[None, :] >= lengths[:, None]] = 0
    return words, lengths


def crafted_outputs(lengths, width=5, padding=1000.0):
    """Outputs (B, T, W), all negative at real tokens (so a zero or a huge value at padding
    would win a max), `padding` everywhere else."""
    torch.manual_seed(2)
    lengths = torch.tensor(lengths)
    outputs = -torch.rand(len(lengths), int(lengths.max()), width) - 0.1
    outputs[torch.arange(outputs.size(1))[None, :] >= lengths[:, None]] = padding
    return outputs, lengths


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_mean_and_max_pool_real_tokens_only(pooling):
    model = make_model(pooling)
    outputs, lengths = crafted_outputs([4, 1, 2])
    pooled = model.pool(outputs, None, lengths)
    for i, n in enumerate(lengths.tolist()):
        real = outputs[i, :n]
        expected = real.mean(0) if pooling == "mean" else real.max(0).values
        torch.testing.assert_close(pooled[i], expected)
        # the same as the sequence alone, without padding
        torch.testing.assert_close(pooled[i], model.pool(real[None], None, lengths[i:i + 1])[0])
    assert (pooled < 0).all()  # neither the zeros nor the 1000s of padding got in


def test_attention_weights_are_zero_at_padding():
    model = make_model("attention")
    with torch.no_grad():  # make the learned scores vary a lot between tokens
        for p in model.attention.parameters():
            p.mul_(5)
    outputs, lengths = crafted_outputs([4, 1, 3], width=2 * HIDDEN)
    with torch.no_grad():
        pooled = model.pool(outputs, None, lengths)
        for i, n in enumerate(lengths.tolist()):
            real = outputs[i, :n]
            scores = model.attention(real).squeeze(-1)  # (n,)
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            torch.testing.assert_close(pooled[i], weights @ real)
        # any weight on padding would make the result depend on what the padding holds
        for value in (0.0, -1000.0, 3.0):
            other, _ = crafted_outputs([4, 1, 3], width=2 * HIDDEN, padding=value)
            torch.testing.assert_close(model.pool(other, None, lengths), pooled)
    assert not pooled.isnan().any()


def _merge(f, b, mode):
    return {"concat": lambda: torch.cat([f, b]), "sum": lambda: f + b, "mul": lambda: f * b,
            "ave": lambda: (f + b) / 2}[mode]()


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
def test_final_pooling_is_the_encoders_final_state(merge):
    """The forward direction's output at each sequence's last real token merged with the
    backward direction's output at its first token (read off an unmerged twin encoder)."""
    model = make_model("final", merge)
    twin = BiRNN(EMBED, HIDDEN, cell="gru", num_layers=1, merge="none")
    twin.load_state_dict(model.encoder.state_dict())
    words, lengths = batch()
    with torch.no_grad():
        forward, backward = twin(model.embedding(words), lengths)[0]
        expected = torch.stack([_merge(forward[i, n - 1], backward[i, 0], merge)
                                for i, n in enumerate(lengths.tolist())])
        outputs, final = model.encode(words, lengths)
        torch.testing.assert_close(final, expected)
        assert model.pool(outputs, final, lengths) is final
        torch.testing.assert_close(model(words, lengths), model.head(expected))


@pytest.mark.parametrize("merge", ["concat", "[concat,none]"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_sequence_scores_the_same_alone_and_padded(pooling, merge):
    layers = 2 if merge.startswith("[") else 1
    merge = merge.strip("[]").split(",") if layers == 2 else merge
    model = make_model(pooling, merge, num_layers=layers)
    words, lengths = batch((5, 2, 3, 5))
    with torch.no_grad():
        together = model(words, lengths)
        assert together.shape == (4, 3)
        for i, n in enumerate(lengths.tolist()):
            alone = model(words[i:i + 1, :n], lengths[i:i + 1])
            torch.testing.assert_close(together[i], alone[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_unmerged_last_layer_equals_concat(pooling):
    """Merge `none` on the last layer puts the two directions side by side before pooling,
    which is what `concat` does: same weights, same scores."""
    concat = make_model(pooling, "concat", num_layers=2)
    unmerged = make_model(pooling, ["concat", "none"], num_layers=2, seed=1)
    unmerged.load_state_dict(concat.state_dict())
    words, lengths = batch()
    with torch.no_grad():
        torch.testing.assert_close(unmerged(words, lengths), concat(words, lengths))


def test_pooling_width_follows_the_merge():
    assert make_model("mean", "sum").head.in_features == HIDDEN
    assert make_model("mean", "concat").head.in_features == 2 * HIDDEN
    assert make_model("attention", ["sum", "none"], 2).head.in_features == 2 * HIDDEN
