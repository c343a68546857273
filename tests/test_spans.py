"""Tests for birnn.tags (span extraction, scheme conversion) and birnn.metrics.spans (SpanF1).

SpanF1 is checked against seqeval in its default mode, which follows conlleval and is an
implementation independent of ours.
"""

import random

import pytest
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from birnn.metrics.spans import SpanF1
from birnn.tags import SCHEMES, convert_tags, get_spans

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-geo-loc", "I-geo-loc"]
TYPES = ("LOC", "ORG", "PER", "geo-loc")
IGNORE = -100


# --- get_spans --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], []),
        (["O", "O", "O"], []),
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        # A stray I- starts a span, after O and at sentence start.
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),
        (["I-LOC"], [("LOC", 0, 1)]),
        # An I- of another type ends the open span and starts its own.
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
        (["B-PER", "I-PER", "I-ORG", "I-PER"], [("PER", 0, 2), ("ORG", 2, 3), ("PER", 3, 4)]),
        # B- always starts a span, even right after the same type.
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        # IOB1: B- separates adjacent chunks of one type.
        (["I-PER", "I-PER", "B-PER"], [("PER", 0, 2), ("PER", 2, 3)]),
        # IOBES.
        (["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], [("PER", 0, 1), ("LOC", 1, 4)]),
        (["B-LOC", "E-LOC", "E-LOC"], [("LOC", 0, 2), ("LOC", 2, 3)]),
        (["S-PER", "S-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 2), ("PER", 2, 3)]),
        (["E-ORG", "O", "B-ORG", "E-PER"], [("ORG", 0, 1), ("ORG", 2, 3), ("PER", 3, 4)]),
        (["B-PER", "E-PER", "I-PER", "E-PER"], [("PER", 0, 2), ("PER", 2, 4)]),
        # Types may contain hyphens after the first one.
        (["B-geo-loc", "I-geo-loc", "I-geo"], [("geo-loc", 0, 2), ("geo", 2, 3)]),
        # The sentence end closes an open span.
        (["O", "B-ORG", "I-ORG"], [("ORG", 1, 3)]),
    ],
)
def test_get_spans_hand_written(tags, expected):
    assert get_spans(tags) == expected


@pytest.mark.parametrize("bad", ["X-PER", "B", "BPER", "B-", "o", "", "Q-geo-loc", "I_PER"])
def test_get_spans_bad_tag_names_it(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[")):
        get_spans(["O", "B-PER", bad])


def test_span_f1_bad_label_raises():
    with pytest.raises(ValueError, match="'PER'"):
        SpanF1(["O", "PER"])


# --- convert_tags -----------------------------------------------------------------------


def random_iob2(rng: random.Random, length: int) -> list[str]:
    """A well-formed IOB2 sentence: every I-X follows B-X or I-X."""
    tags: list[str] = []
    while len(tags) < length:
        if rng.random() < 0.4:
            tags.append("O")
            continue
        type_ = rng.choice(TYPES)
        span = rng.randint(1, 4)
        tags.append(f"B-{type_}")
        tags.extend(f"I-{type_}" for _ in range(span - 1))
    return tags[:length]


@pytest.mark.parametrize("seed", range(5))
def test_convert_round_trips_and_keeps_spans(seed):
    rng = random.Random(seed)
    for _ in range(200):
        tags = random_iob2(rng, rng.randint(0, 25))
        spans = get_spans(tags)
        for scheme in SCHEMES:
            converted = convert_tags(tags, "iob2", scheme)
            assert len(converted) == len(tags)
            assert get_spans(converted) == spans
            assert convert_tags(converted, scheme, "iob2") == tags
        iob1 = convert_tags(tags, "iob2", "iob1")
        assert convert_tags(iob1, "iob1", "iobes") == convert_tags(tags, "iob2", "iobes")


def test_convert_iob1_hand_written():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG"]
    assert convert_tags(iob1, "iob1") == [
        "B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG",
    ]  # fmt: skip
    assert convert_tags(iob1, "iob1", "iobes") == [
        "B-PER", "E-PER", "S-PER", "O", "S-LOC", "S-ORG", "B-ORG", "E-ORG",
    ]  # fmt: skip
    # And back: B- appears in IOB1 only between adjacent chunks of one type.
    assert convert_tags(convert_tags(iob1, "iob1"), "iob2", "iob1") == iob1


def test_convert_repairs_ill_formed_iob2():
    assert convert_tags(["O", "I-PER", "I-LOC"], "iob2") == ["O", "B-PER", "B-LOC"]


def test_convert_bad_scheme_lists_valid_ones():
    with pytest.raises(ValueError, match="iob1, iob2, iobes"):
        convert_tags(["O"], "bio")
    with pytest.raises(ValueError, match="iob1, iob2, iobes"):
        convert_tags(["O"], "iob2", "IOBES")


def test_convert_rejects_tags_foreign_to_source_scheme():
    with pytest.raises(ValueError, match="'S-PER'"):
        convert_tags(["S-PER"], "iob2", "iobes")
    with pytest.raises(ValueError, match="'X-PER'"):
        convert_tags(["X-PER"], "iobes", "iob2")


# --- SpanF1 against seqeval -------------------------------------------------------------

LABEL_ID = {label: i for i, label in enumerate(LABELS)}


def batch_of(pairs, rng: random.Random, extra: int = 3):
    """Pads (gold, pred) tag-sequence pairs into id tensors; padding is random garbage."""
    steps = max((len(gold) for gold, _ in pairs), default=0) + extra
    preds = torch.randint(-1000, 1000, (len(pairs), steps))
    target = torch.randint(-1000, 1000, (len(pairs), steps))
    for row, (gold, pred) in enumerate(pairs):
        target[row, : len(gold)] = torch.tensor([LABEL_ID[t] for t in gold], dtype=torch.long)
        preds[row, : len(pred)] = torch.tensor([LABEL_ID[t] for t in pred], dtype=torch.long)
    lengths = torch.tensor([len(gold) for gold, _ in pairs], dtype=torch.long)
    return preds, target, lengths


def assert_matches_seqeval(result, golds, preds):
    assert result["precision"].item() == pytest.approx(precision_score(golds, preds), abs=1e-6)
    assert result["recall"].item() == pytest.approx(recall_score(golds, preds), abs=1e-6)
    assert result["f1"].item() == pytest.approx(f1_score(golds, preds), abs=1e-6)
    report = classification_report(golds, preds, output_dict=True, zero_division=0)
    for type_ in TYPES:
        if type_ in report:
            expected = report[type_]
            assert result[f"f1/{type_}"].item() == pytest.approx(expected["f1-score"], abs=1e-6)
            assert result[f"precision/{type_}"].item() == pytest.approx(
                expected["precision"], abs=1e-6
            )
            assert result[f"recall/{type_}"].item() == pytest.approx(expected["recall"], abs=1e-6)
        else:
            # No gold and no predicted span of this type: every ratio is 0/0, defined as 0.
            assert result[f"f1/{type_}"].item() == 0.0


HAND_PAIRS = [
    (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "O", "O", "B-ORG"]),
    (["O", "B-ORG", "I-ORG", "I-ORG"], ["O", "I-ORG", "I-ORG", "I-ORG"]),  # stray I- matches
    (["B-LOC", "B-LOC", "O"], ["B-LOC", "I-LOC", "O"]),
    (["O", "O", "O"], ["B-PER", "O", "I-geo-loc"]),
    (["B-geo-loc", "I-geo-loc", "O"], ["B-geo-loc", "I-geo-loc", "O"]),
    (["B-PER"], ["O"]),
    ([], []),
]


def test_span_f1_hand_written_matches_seqeval():
    metric = SpanF1(LABELS)
    metric.update(*batch_of(HAND_PAIRS, random.Random(0)))
    result = metric.compute()
    golds = [gold for gold, _ in HAND_PAIRS]
    preds = [pred for _, pred in HAND_PAIRS]
    assert_matches_seqeval(result, golds, preds)
    # Written out too, so a mistake shared with seqeval would still show.
    assert metric.span_counts() == {
        "LOC": (1, 2, 4),
        "ORG": (1, 2, 1),
        "PER": (1, 3, 3),
        "geo-loc": (1, 2, 1),
    }
    assert result["precision"].item() == pytest.approx(4 / 9)
    assert result["recall"].item() == pytest.approx(4 / 9)
    assert result["f1/LOC"].item() == pytest.approx(2 * 1 / (2 + 4))


def random_tags(rng: random.Random, length: int) -> list[str]:
    """Uniformly random tags from the label set, so invalid transitions (O I-X) are common."""
    return [rng.choice(LABELS) for _ in range(length)]


def random_pairs(rng: random.Random, n: int):
    pairs = []
    for _ in range(n):
        length = rng.randint(0, 20)
        gold = random_tags(rng, length)
        # Predictions partly copy the gold, so there are true positives to count.
        pred = [g if rng.random() < 0.7 else rng.choice(LABELS) for g in gold]
        pairs.append((gold, pred))
    return pairs


@pytest.mark.parametrize("seed", range(3))
def test_span_f1_random_matches_seqeval(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    pairs = random_pairs(rng, 300)
    metric = SpanF1(LABELS)
    for start in range(0, len(pairs), 32):
        metric.update(*batch_of(pairs[start : start + 32], rng, extra=rng.randint(0, 5)))
    result = metric.compute()
    assert 0.0 < result["f1"].item() < 1.0
    assert_matches_seqeval(result, [g for g, _ in pairs], [p for _, p in pairs])


def test_span_f1_accumulation_equals_one_update():
    rng = random.Random(7)
    torch.manual_seed(7)
    pairs = random_pairs(rng, 120)
    whole = SpanF1(LABELS)
    whole.update(*batch_of(pairs, rng))
    pieces = SpanF1(LABELS)
    for start, stop in [(0, 1), (1, 40), (40, 41), (41, 100), (100, 120)]:
        pieces.update(*batch_of(pairs[start:stop], rng, extra=rng.randint(0, 7)))
    assert pieces.span_counts() == whole.span_counts()
    a, b = whole.compute(), pieces.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_span_f1_padding_is_not_read():
    rng = random.Random(3)
    pairs = random_pairs(rng, 50)
    results = []
    for seed in range(3):
        torch.manual_seed(seed)  # different garbage each time
        metric = SpanF1(LABELS)
        metric.update(*batch_of(pairs, rng, extra=4))
        results.append(metric.span_counts())
    assert results[0] == results[1] == results[2]


def test_span_f1_ignore_index_drops_positions():
    # Word-level tags with a "subword" marked ignore in the gold; the prediction there is garbage.
    gold = ["B-PER", "I-PER", "O", "B-LOC"]
    pred = ["B-PER", "O", "O", "B-LOC"]
    target = torch.tensor([[1, IGNORE, 2, 0, 3]])
    preds = torch.tensor([[1, 12345, 0, 0, 3]])
    metric = SpanF1(LABELS)
    metric.update(preds, target, torch.tensor([5]))
    assert_matches_seqeval(metric.compute(), [gold], [pred])


def test_span_f1_reset_and_empty():
    metric = SpanF1(LABELS)
    metric.update(*batch_of(HAND_PAIRS, random.Random(0)))
    metric.reset()
    metric.update(*batch_of([([], [])], random.Random(0)))
    result = metric.compute()
    assert {k: v.item() for k, v in result.items()} == dict.fromkeys(result, 0.0)
    assert set(result) == {"precision", "recall", "f1"} | {
        f"{m}/{t}" for m in ("precision", "recall", "f1") for t in TYPES
    }


def test_span_f1_rejects_bad_input():
    metric = SpanF1(LABELS)
    with pytest.raises(ValueError, match="not in"):
        metric.update(torch.tensor([[1, -1]]), torch.tensor([[1, 0]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="not in"):
        metric.update(torch.tensor([[1, 0]]), torch.tensor([[1, 99]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.tensor([[1, 0]]), torch.tensor([[1, 0]]), torch.tensor([3]))
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.tensor([[1, 0]]), torch.tensor([[1, 0, 0]]), torch.tensor([2]))


def test_span_f1_lengths_default_to_full():
    gold, pred = ["B-PER", "I-PER", "B-LOC"], ["B-PER", "I-PER", "I-LOC"]
    metric = SpanF1(LABELS)
    metric.update(
        torch.tensor([[LABEL_ID[t] for t in pred]]), torch.tensor([[LABEL_ID[t] for t in gold]])
    )
    assert_matches_seqeval(metric.compute(), [gold], [pred])
    assert metric.compute()["f1"].item() == pytest.approx(1.0)
