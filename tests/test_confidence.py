"""Confidence scores: the NumPy lattice (Viterbi, marginals, span probabilities) against
brute-force enumeration of every label sequence and against the PyTorch CRF; calibration
against a hand computation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from seqeval.metrics.sequence_labeling import get_entities

from birnn.decoding import (
    Lattice,
    decode,
    forward_backward,
    marginals,
    span_probabilities,
    viterbi,
)
from birnn.metrics.calibration import calibration, model_confidences, reliability
from birnn.models import SentenceClassifier, TokenTagger
from birnn.models.crf import CRF, iob2_constraints, is_valid_iob2

LABEL_SETS = {
    2: ["B-X", "I-X"],
    3: ["O", "B-X", "I-X"],
    4: ["O", "B-X", "I-X", "B-Y"],
    5: ["O", "B-X", "I-X", "B-Y", "I-Y"],
}
LENGTHS = [5, 1, 3, 2, 4]  # one padded batch of mixed lengths


def random_crf(labels: list[str], constrained: bool, seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(len(labels), iob2_constraints(labels) if constrained else None)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def enumerate_paths(crf: CRF, emissions: np.ndarray, n: int, labels: list[str],
                    constrained: bool) -> dict[tuple[int, ...], float]:
    """Every allowed label sequence of one sentence and its probability, by brute force over
    the raw (unpenalised) CRF scores; constraints drop the invalid IOB2 sequences."""
    trans = crf.transitions.detach().double().numpy()
    start = crf.start.detach().double().numpy()
    end = crf.end.detach().double().numpy()
    scores = {}
    for path in itertools.product(range(len(labels)), repeat=n):
        if constrained and not is_valid_iob2([labels[i] for i in path]):
            continue
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, y] for t, y in enumerate(path))
        s += sum(trans[a, b] for a, b in zip(path[:-1], path[1:], strict=False))
        scores[path] = s
    top = max(scores.values())
    total = sum(np.exp(v - top) for v in scores.values())
    return {p: float(np.exp(v - top) / total) for p, v in scores.items()} | {
        "log_z": top + np.log(total)}


def chunks(labels: list[str], path: tuple[int, ...]) -> set[tuple[str, int, int]]:
    """The chunks of a path read by seqeval (conlleval's rules), end made exclusive."""
    return {(t, s, e + 1) for t, s, e in get_entities([labels[i] for i in path])}


def batch_emissions(num_labels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=2.0, size=(len(LENGTHS), max(LENGTHS), num_labels))


CASES = [(n, c, s) for n in LABEL_SETS for c in (False, True) for s in range(2)]


@pytest.mark.parametrize(("num_labels", "constrained", "seed"), CASES)
def test_lattice_matches_brute_force(num_labels, constrained, seed):
    labels = LABEL_SETS[num_labels]
    crf = random_crf(labels, constrained, seed)
    lattice = Lattice.from_crf(crf)
    emissions = batch_emissions(num_labels, seed)
    lengths = np.array(LENGTHS)
    probs = marginals(emissions, lengths, lattice)
    _, _, log_z = forward_backward(emissions, lengths, lattice)
    paths = viterbi(emissions, lengths, lattice)
    for b, n in enumerate(LENGTHS):
        enumerated = enumerate_paths(crf, emissions[b], n, labels, constrained)
        expected_z = enumerated.pop("log_z")
        assert log_z[b] == pytest.approx(expected_z, abs=1e-9)
        assert tuple(paths[b]) == max(enumerated, key=enumerated.get)
        expected = np.zeros((n, num_labels))
        for path, p in enumerated.items():
            expected[np.arange(n), path] += p
        np.testing.assert_allclose(probs[b, :n], expected, atol=1e-9)
        assert not probs[b, n:].any()  # zero at padding
        # every chunk any path holds, and one no path holds
        candidates = set().union(*(chunks(labels, p) for p in enumerated)) | {("X", 0, n + 1)}
        candidates = sorted(candidates)
        got = span_probabilities(emissions[b:b + 1, :n], [n], lattice, labels, [candidates])[0]
        for span, p in zip(candidates, got, strict=True):
            want = sum(q for path, q in enumerated.items() if span in chunks(labels, path))
            assert p == pytest.approx(want, abs=1e-9), span


@pytest.mark.parametrize("constrained", [False, True])
def test_viterbi_matches_the_torch_crf(constrained):
    labels = LABEL_SETS[5]
    crf = random_crf(labels, constrained, seed=3)
    emissions = torch.randn(6, 9, 5) * 3
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    expected = crf.viterbi(emissions, lengths)
    assert viterbi(emissions.double().numpy(), lengths.numpy(), Lattice.from_crf(crf)) == expected


def test_independent_lattice_is_the_softmax():
    emissions = torch.randn(3, 4, 5)
    lengths = np.array([4, 2, 3])
    probs = marginals(emissions.numpy(), lengths, Lattice.independent(5))
    expected = emissions.double().softmax(-1).numpy()
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(probs[b, :n], expected[b, :n], atol=1e-12)
    assert viterbi(emissions.numpy(), lengths, Lattice.independent(5)) == [
        emissions[b, :n].argmax(-1).tolist() for b, n in enumerate(lengths)]


def test_decode_scores_the_predicted_chunks():
    labels = LABEL_SETS[5]
    crf = random_crf(labels, True, seed=7)
    emissions = batch_emissions(5, seed=7)
    [first, *_] = decode(emissions[:1, :5], [5], Lattice.from_crf(crf), labels)
    enumerated = enumerate_paths(crf, emissions[0], 5, labels, True)
    enumerated.pop("log_z")
    best = max(enumerated, key=enumerated.get)
    assert tuple(first.tags) == best
    for t, (label, score) in enumerate(zip(first.tags, first.token_scores, strict=True)):
        want = sum(q for path, q in enumerated.items() if path[t] == label)
        assert score == pytest.approx(want, abs=1e-9)
    assert [s[:3] for s in first.spans] == sorted(chunks(labels, best), key=lambda s: s[1])
    for type_, s, e, p in first.spans:
        want = sum(q for path, q in enumerated.items() if (type_, s, e) in chunks(labels, path))
        assert p == pytest.approx(want, abs=1e-9)
    named = first.named(labels)
    assert named["tags"] == [labels[i] for i in best] and named["scores"] == first.token_scores
    assert [(s["type"], s["start"], s["end"], s["score"]) for s in named["spans"]] == first.spans


def test_labels_without_chunks_give_token_scores_only():
    labels = ["NN", "VB", "DT"]
    out = decode(np.zeros((1, 2, 3)), [2], Lattice.independent(3), labels)[0]
    assert out.spans == [] and out.token_scores == pytest.approx([1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="IOB2"):
        span_probabilities(np.zeros((1, 2, 3)), [2], Lattice.independent(3), labels, [[]])


def test_lattice_round_trips_through_json():
    lattice = Lattice.from_crf(random_crf(LABEL_SETS[3], True, seed=0))
    again = Lattice.from_dict(json.loads(json.dumps(lattice.to_dict())))
    for name in ("transitions", "start", "end"):
        np.testing.assert_array_equal(getattr(again, name), getattr(lattice, name))


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="lengths"):
        marginals(np.zeros((2, 3, 2)), [3, 4], Lattice.independent(2))


# ------------------------------------------------------------------------------ calibration


def test_expected_calibration_error_by_hand():
    confidences = [0.05, 0.15, 0.95, 0.97, 0.55, 0.58, 0.0, 1.0]
    correct = [0, 1, 1, 0, 1, 1, 0, 1]
    stats = reliability(confidences, correct, bins=10)
    # bin 0: 0.05, 0.0 (conf 0.025, acc 0); bin 1: 0.15 (acc 1); bin 5: 0.55, 0.58 (conf
    # 0.565, acc 1); bin 9: 0.95, 0.97, 1.0 (conf 2.92 / 3, acc 2 / 3)
    assert stats.counts.tolist() == [2, 1, 0, 0, 0, 2, 0, 0, 0, 3]
    gaps = 2 * 0.025 + 1 * 0.85 + 2 * 0.435 + 3 * abs(2 / 3 - 2.92 / 3)
    assert stats.ece == pytest.approx(gaps / 8)
    assert np.isnan(stats.accuracy[2]) and stats.accuracy[9] == pytest.approx(2 / 3)
    assert reliability([], []).ece == 0.0


def test_a_calibrated_predictor_has_a_small_error():
    rng = np.random.default_rng(0)
    confidences = rng.uniform(size=200_000)
    correct = rng.uniform(size=confidences.size) < confidences  # right with that probability
    assert reliability(confidences, correct).ece < 0.01
    assert reliability(confidences, ~correct).ece > 0.3


def tiny_batch(labels_or_classes: int, task: str) -> dict:
    torch.manual_seed(0)
    lengths = torch.tensor([5, 3, 1])
    words = torch.randint(2, 20, (3, 5)) * (torch.arange(5) < lengths[:, None])
    batch = {"words": words, "lengths": lengths}
    if task == "tagging":
        batch["tags"] = torch.randint(0, labels_or_classes, (3, 5))
    else:
        batch["label"] = torch.randint(0, labels_or_classes, (3,))
    return batch


def test_model_confidences_of_a_softmax_tagger_and_a_classifier(tmp_path):
    labels = LABEL_SETS[5]
    tagger = TokenTagger(20, labels, {"hidden_size": 4}, embedding_dim=6).eval()
    batch = tiny_batch(5, "tagging")
    confidences, correct = model_confidences(tagger, [batch])
    with torch.no_grad():
        probs = tagger(batch["words"], batch["lengths"]).softmax(-1)
    best, predicted = probs.max(-1)
    real = torch.arange(5) < batch["lengths"][:, None]
    np.testing.assert_allclose(confidences, best[real].numpy(), atol=1e-6)
    assert correct.tolist() == (predicted == batch["tags"])[real].tolist()
    chart = tmp_path / "test_calibration.png"
    ece = calibration(tagger, [batch], chart)
    assert ece == pytest.approx(reliability(confidences, correct).ece)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    classifier = SentenceClassifier(20, ["neg", "pos"], {"hidden_size": 4},
                                    embedding_dim=6).eval()
    batch = tiny_batch(2, "classification")
    confidences, correct = model_confidences(classifier, [batch])
    with torch.no_grad():
        best, predicted = classifier(batch["words"], batch["lengths"]).softmax(-1).max(-1)
    np.testing.assert_allclose(confidences, best.numpy(), atol=1e-6)
    assert correct.tolist() == (predicted == batch["label"]).tolist()
