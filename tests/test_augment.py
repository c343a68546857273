"""Training augmentation (`data.augment`, `birnn.data.augment`): the perturbations against
hand-written expectations, the draws per kind, labels kept, batches that depend on (seed,
epoch, sentence) alone, an exact resume mid-epoch, and batches as read when it is off."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLE_NER, make_config, recased_copy
from hydra.utils import instantiate

from birnn.config.train import validate_data
from birnn.data import ClassificationDataModule, TaggingDataModule, read_column_file
from birnn.data.augment import (
    KEYBOARD_NEIGHBOURS,
    Augmentation,
    keyboard,
    lower,
    ocr,
    perturb,
    sentence_rng,
    title,
    typos,
    upper,
)
from birnn.errors import ConfigError

MIXED = {"lower": 0.2, "upper": 0.2, "title": 0.1, "typo": 0.1, "keyboard": 0.1, "ocr": 0.1}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A few hundred sentences of the NER sample: train, dev and test files."""
    folder = tmp_path_factory.mktemp("small")
    for name, lines in (("train.txt", 3000), ("dev.txt", 600), ("test.txt", 600)):
        text = (SAMPLE_NER / name).read_text().splitlines()[:lines]
        (folder / name).write_text("\n".join(text) + "\n\n")
    return folder


def module(folder: Path, **kwargs) -> TaggingDataModule:
    dm = TaggingDataModule(dir=str(folder), chars=True, batch_size=16, seed=3, **kwargs)
    dm.setup("fit")
    return dm


def epoch_batches(dm: TaggingDataModule, epoch: int) -> list[dict]:
    """The training batches of `epoch` as Lightning draws them (the trainer's epoch)."""
    dm.trainer = SimpleNamespace(current_epoch=epoch, world_size=1, global_rank=0)
    return list(dm.train_dataloader())


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k])
                                                                 for k in x)
                                    for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------- the perturbations


def test_casing_perturbations():
    tokens = ["o'neil", "1990s", "U.S.", "EU", "rejects"]
    assert lower(tokens) == ["o'neil", "1990s", "u.s.", "eu", "rejects"]
    assert upper(tokens) == ["O'NEIL", "1990S", "U.S.", "EU", "REJECTS"]
    # first character up, the rest down (str.title would give "O'Neil" and "1990S")
    assert title(tokens) == ["O'neil", "1990s", "U.s.", "Eu", "Rejects"]


def test_ocr_confusions_at_rate_one_and_zero():
    rng = random.Random(0)
    # m -> rn, o kept, d -> cl, e -> c, rn -> m (two characters tried first)
    assert ocr(["modern"], 1.0, rng) == ["rnoclcm"]
    assert ocr(["Bill", "S0", "vvest"], 1.0, rng) == ["8i11", "5O", "wcst"]
    assert ocr(["modern", "Bill"], 0.0, rng) == ["modern", "Bill"]


def test_keyboard_neighbours_are_adjacent_keys():
    # written out from a QWERTY keyboard
    assert set(KEYBOARD_NEIGHBOURS["g"]) == set("fhtyvb")
    assert set(KEYBOARD_NEIGHBOURS["s"]) == set("adwezx")
    assert set(KEYBOARD_NEIGHBOURS["a"]) == set("qwsz")
    assert set(KEYBOARD_NEIGHBOURS["p"]) == set("o0l")
    assert set(KEYBOARD_NEIGHBOURS["G"]) == set("FHTYVB")
    out = keyboard(["gas", "G-7"], 1.0, random.Random(1))
    assert [len(t) for t in out] == [3, 3]
    for got, near in zip(out[0], ("fhtyvb", "qwsz", "adwezx"), strict=True):
        assert got in near
    assert out[1][0] in "FHTYVB" and out[1][1] == "-" and out[1][2] in "6ytu8"
    assert keyboard(["gas"], 0.0, random.Random(1)) == ["gas"]


def levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_typos_change_the_given_share_of_characters():
    tokens = [t for s in read_column_file(SAMPLE_NER / "dev.txt") for t in s["tokens"]][:3000]
    noisy = perturb("typo", tokens, random.Random(7), rate=0.05)
    assert len(noisy) == len(tokens)
    assert all(t and " " not in t for t in noisy)
    cer = sum(levenshtein(a, b) for a, b in zip(tokens, noisy, strict=True)) / \
        sum(map(len, tokens))
    assert 0.04 < cer < 0.06
    # the generator alone decides
    assert perturb("typo", tokens, random.Random(7), rate=0.05) == noisy
    assert typos(tokens, 0.05, random.Random(8)) != typos(tokens, 0.05, random.Random(7))


def test_a_perturbation_never_leaves_a_token_empty():
    tokens = ["a", "I", ".", "ab"] * 50
    out = perturb("typo", tokens, random.Random(3), rate=0.5)
    assert len(out) == len(tokens) and all(out)


# ----------------------------------------------------------------------------- the draws


def test_each_kind_is_drawn_with_its_probability():
    aug = Augmentation({"lower": 0.2, "upper": 0.3, "title": 0.1}, seed=5)
    n = 20000
    seen = {"ab": 0, "AB": 0, "Ab": 0, "aB": 0}
    for i in range(n):
        seen[(aug(["aB"], 0, i) or ["aB"])[0]] += 1
    for key, p in (("ab", 0.2), ("AB", 0.3), ("Ab", 0.1), ("aB", 0.4)):
        assert abs(seen[key] / n - p) < 4 * (p * (1 - p) / n) ** 0.5, key


def test_draws_depend_on_seed_epoch_and_sentence_only():
    aug = Augmentation(MIXED, seed=1)
    tokens = ["Peter", "Blackburn", "visited", "Madrid", "."]
    random.seed(0)
    first = [aug(tokens, e, i) for e in range(3) for i in range(40)]
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert [aug(tokens, e, i) for e in range(3) for i in range(40)] == first
    assert first[:40] != first[40:80]  # another epoch, other draws
    assert [Augmentation(MIXED, seed=2)(tokens, 0, i) for i in range(40)] != first[:40]
    assert sentence_rng(1, 0, 5).random() == sentence_rng(1, 0, 5).random()


# ----------------------------------------------------------------------------- batches


def test_lower_casing_every_sentence_gives_the_batches_of_a_lower_cased_file(small, tmp_path):
    # re-encoding: word ids, casing features and characters as if the file had been lower
    # case all along (with the same vocabularies); tags and lengths unchanged
    augmented = module(small, augment={"lower": 1.0})
    lowered = recased_copy(small, tmp_path / "lower", str.lower)
    reference = TaggingDataModule(dir=str(lowered), chars=True, batch_size=16, seed=3)
    reference.use_vocabularies(augmented.vocabularies())
    reference.setup("fit")
    got, expected = epoch_batches(augmented, 2), epoch_batches(reference, 2)
    assert same_batches(got, expected)
    plain = epoch_batches(module(small), 2)
    assert not same_batches(got, plain)  # the sample is cased: lower-casing changes it


def test_labels_stay_aligned(small):
    plain = epoch_batches(module(small), 1)
    augmented = epoch_batches(module(small, augment=MIXED), 1)
    changed = 0
    for a, p in zip(augmented, plain, strict=True):
        for key in ("index", "lengths", "tags"):
            assert torch.equal(a[key], p[key]), key
        assert a["words"].shape == p["words"].shape and a["casing"].shape == p["casing"].shape
        changed += int((a["chars"].shape != p["chars"].shape) or
                       (a["chars"][..., : p["chars"].shape[-1]] != p["chars"]).any())
    assert changed > len(plain) // 2  # about 80% of sentences change: most batches differ


def test_augmentation_leaves_the_global_random_state_alone(small):
    dm = module(small, augment=MIXED)
    states = (random.getstate(), torch.get_rng_state(), np.random.get_state()[1].copy())
    epoch_batches(dm, 0)
    assert random.getstate() == states[0]
    assert torch.equal(torch.get_rng_state(), states[1])
    assert (np.random.get_state()[1] == states[2]).all()


def test_same_seed_same_batches_and_each_epoch_its_own(small):
    first = epoch_batches(module(small, augment=MIXED), 4)
    random.seed(12345)
    torch.manual_seed(12345)
    assert same_batches(epoch_batches(module(small, augment=MIXED), 4), first)
    later = epoch_batches(module(small, augment=MIXED), 5)
    by_index = {int(i): b["words"][j] for b in first for j, i in enumerate(b["index"])}
    differs = sum(not torch.equal(by_index[int(i)], b["words"][j])
                  for b in later for j, i in enumerate(b["index"]))
    assert differs > 0  # epoch 5 perturbs other sentences than epoch 4 did


def test_resumed_epoch_gets_the_batches_of_an_uninterrupted_one(small):
    uninterrupted = epoch_batches(module(small, augment=MIXED), 3)
    resumed = module(small, augment=MIXED)  # a new process: nothing carried over but this
    resumed.resume_at = (3, 5)  # what RunSafety restores: epoch 3, 5 batches already trained
    # Lightning draws the resumed epoch's iterator before the trainer's epoch moves on
    assert same_batches(epoch_batches(resumed, 2), uninterrupted[5:])


def test_off_by_default_batches_are_as_read(small, tmp_path):
    cfg = make_config(tmp_path, f"data.dir={small}", "data.batch_size=16", "seed=3")
    assert not any(cfg.data.augment[k] for k in ("lower", "upper", "title", "typo",
                                                  "keyboard", "ocr"))
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert dm.augmentation is None
    batches = epoch_batches(dm, 1)
    # each batch holds the file's sentences, encoded without any change
    sentences = list(read_column_file(small / "train.txt"))
    for b in batches:
        for j, i in enumerate(b["index"].tolist()):
            n = int(b["lengths"][j])
            assert b["words"][j, :n].tolist() == dm.words.encode(sentences[i]["tokens"])
    # and byte-identical to a module built without the augment argument at all
    bare = TaggingDataModule(dir=str(small), chars=cfg.data.chars, batch_size=16, seed=3)
    bare.setup("fit")
    assert same_batches(batches, epoch_batches(bare, 1))


def test_sentence_classification_batches_are_augmented_too(tmp_path):
    folder = ROOT / "data" / "sample_sentiment"
    dm = ClassificationDataModule(dir=str(folder), batch_size=16, seed=3,
                                  augment={"upper": 1.0})
    dm.setup("fit")
    plain = ClassificationDataModule(dir=str(folder), batch_size=16, seed=3)
    plain.setup("fit")
    batches = epoch_batches(dm, 0)
    for b, p in zip(batches, epoch_batches(plain, 0), strict=True):
        assert torch.equal(b["label"], p["label"]) and torch.equal(b["index"], p["index"])
        for j, i in enumerate(b["index"].tolist()):
            tokens = dm.splits["train"].tokens[i]
            assert b["words"][j, : len(tokens)].tolist() == \
                dm.words.encode([t.upper() for t in tokens])


# -------------------------------------------------------------------------------- config


@pytest.mark.parametrize(("augment", "message"), [
    ({"lower": 0.7, "upper": 0.5}, "data.augment: the probabilities of lower, upper, title, "
                                   "typo, keyboard, ocr add up to 1.2: at most 1 (a sentence gets "
                                   "one perturbation)"),
    ({"lower": 1.5}, "data.augment.lower: must be a number in [0, 1], got 1.5"),
    ({"typo": 0.1, "rate": 0.6}, "data.augment.rate: must be a number in (0, 0.5], got 0.6"),
    ({"lowercase": 0.1}, "data.augment.lowercase: unknown key (valid: rate, ocr_rate, lower, "
                         "upper, title, typo, keyboard, ocr)"),
])
def test_augment_config_errors_name_the_key(augment, message):
    with pytest.raises(ConfigError) as e:
        validate_data({"_target_": "birnn.data.TaggingDataModule", "dir": "x",
                       "augment": augment})
    assert str(e.value) == message
