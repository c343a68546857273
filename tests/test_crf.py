"""The CRF head: log partition and Viterbi against brute-force enumeration, IOB2 constraints,
and training on the embedded sample."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import SAMPLE_NER
from seqeval.metrics import f1_score

from birnn.cli.train import train
from birnn.data import read_column_file
from birnn.inference import Predictor
from birnn.models.crf import CRF, iob2_constraints, is_valid_iob2

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def make_crf(num_tags: int, constraints=None, seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags, constraints)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def brute_force(crf: CRF, emissions: torch.Tensor, length: int):
    """(log Z, best path, best score) of one sentence by enumerating all tag sequences."""
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        tags = torch.tensor([path])
        scores[path] = crf.score(emissions[None, :length], tags, torch.tensor([length]))[0]
    all_scores = torch.stack(list(scores.values()))
    best = max(scores, key=lambda p: scores[p].item())
    return torch.logsumexp(all_scores, 0), list(best)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_log_partition_and_viterbi_match_brute_force(constrained, seed):
    labels = ["O", "B-X", "I-X"] if constrained else ["a", "b", "c"]
    crf = make_crf(3, iob2_constraints(labels), seed)
    if constrained:
        assert crf.trans_penalty[0, 2] < 0 and crf.start_penalty[2] < 0  # O -> I-X, start I-X
    lengths = torch.tensor([4, 1, 3, 2])  # mixed lengths, padding in the batch
    emissions = torch.randn(4, 4, 3) * 2
    log_z = crf.log_partition(emissions, lengths)
    paths = crf.viterbi(emissions, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected_z, expected_path = brute_force(crf, emissions[b], n)
        torch.testing.assert_close(log_z[b], expected_z, rtol=1e-5, atol=1e-5)
        assert paths[b] == expected_path
        if constrained:
            assert is_valid_iob2([labels[t] for t in paths[b]])


def test_nll_is_a_normalised_distribution():
    """exp(-nll) summed over every tag sequence of a sentence is 1; padding is ignored."""
    crf = make_crf(3, seed=5)
    emissions = torch.randn(1, 3, 3)
    total = sum(torch.exp(-crf.nll(emissions, torch.tensor([p]), torch.tensor([3])))
                for p in itertools.product(range(3), repeat=3))
    torch.testing.assert_close(total, torch.tensor(1.0))
    padded = torch.cat([emissions, torch.randn(1, 2, 3)], 1)
    tags = torch.tensor([[0, 1, 2, -100, -100]])
    torch.testing.assert_close(crf.nll(padded, tags, torch.tensor([3])),
                               crf.nll(emissions, tags[:, :3], torch.tensor([3])))


def test_iob2_constraints():
    allowed, start = iob2_constraints(LABELS)
    ix = {t: i for i, t in enumerate(LABELS)}
    assert not allowed[ix["O"], ix["I-PER"]]
    assert not allowed[ix["B-LOC"], ix["I-PER"]] and not allowed[ix["I-LOC"], ix["I-PER"]]
    assert allowed[ix["B-PER"], ix["I-PER"]] and allowed[ix["I-PER"], ix["I-PER"]]
    assert allowed[ix["I-PER"], ix["O"]] and allowed[ix["O"], ix["B-LOC"]]
    assert start.tolist() == [True, True, False, True, False]
    assert iob2_constraints(["NN", "VB"]) is None  # not IOB2: unconstrained
    assert not is_valid_iob2(["I-PER"]) and not is_valid_iob2(["O", "I-PER"])
    assert not is_valid_iob2(["B-LOC", "I-PER"]) and is_valid_iob2(["B-PER", "I-PER", "O"])


def test_constrained_viterbi_never_invalid_even_with_adversarial_scores():
    crf = make_crf(len(LABELS), iob2_constraints(LABELS), seed=1)
    emissions = torch.randn(16, 7, len(LABELS)) * 5
    emissions[:, :, 2] += 20  # I-PER everywhere would win without constraints
    lengths = torch.randint(1, 8, (16,))
    for path in crf.viterbi(emissions, lengths):
        assert is_valid_iob2([LABELS[t] for t in path])


def test_crf_trains_on_sample_with_valid_predictions(cfg_factory, tmp_path):
    metrics = train(cfg_factory("model.head=crf", "trainer.max_epochs=3",
                                "encoder.hidden_size=64", "model.embedding_dim=64"))
    assert metrics["val"]["f1"] > 0.8 and metrics["test"]["f1"] > 0.8, metrics
    preds = list(read_column_file(tmp_path / "test_predictions.conll", tag_column=2))
    assert all(is_valid_iob2(p["tags"]) for p in preds)
    # the predictor decodes with Viterbi too: same tags, same F1
    test = list(read_column_file(SAMPLE_NER / "test.txt"))
    predictor = Predictor.from_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    predicted = predictor.predict([s["tokens"] for s in test], batch_size=50)
    assert predicted == [p["tags"] for p in preds]
    assert f1_score([s["tags"] for s in test], predicted) == pytest.approx(
        metrics["test"]["f1"], abs=1e-6)
