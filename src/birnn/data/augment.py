"""Perturbations of tokenised text, and their use as training augmentation.

Perturbations change the tokens of a sentence and never their number, so the labels stay as
they are:

- `lower`, `upper`, `title`: the casing of every token (title: first character upper, the
  rest lower);
- `typo`: random typing errors, `rate` of the characters of each token: insertions,
  deletions, swaps of neighbours and substitutions, by `textnoisr` (its `noise_level` is
  the expected character error rate);
- `keyboard`: each letter or digit replaced, with probability `rate`, by a key next to it on
  a QWERTY keyboard (case kept);
- `ocr`: each place where an OCR confusion applies (`rn`/`m`, `l`/`1`, `O`/`0`, ... see
  `OCR_CONFUSIONS`) changed with probability `rate`.

A token that a perturbation would leave empty is kept as it was.

Why `textnoisr` and why the rest by hand: `textnoisr` is maintained, small, and draws from a
`random.Random` of its own seeded by the caller, so a perturbation depends on its seed alone
and never on (or changes) the global random state. The other libraries on PyPI that have
keyboard and OCR noise cannot be made deterministic that way: `nlpaug` (last release 2022)
draws from the global `random` and `numpy.random` states, `typo` reseeds the global `random`.
`textnoisr` has no keyboard or OCR noise, so those two are written here (a table and a loop
each).

Augmentation (`Augmentation`, `data.augment`): in each epoch, sentence i of the training split
gets at most one perturbation, drawn from a generator seeded by (data seed, epoch, i) alone,
so the batches do not depend on the batch order or on any global state: a run resumed
mid-epoch sees exactly the batches the interrupted run would have.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from torch.utils.data import Sampler

KINDS = ("lower", "upper", "title", "typo", "keyboard", "ocr")

# ------------------------------------------------------------------------- the perturbations

# QWERTY rows and how far each is shifted right, in key widths: neighbours are the keys
# beside a key in its row and the keys of the rows above and below less than a key away
_ROWS = (("1234567890", 0.0), ("qwertyuiop", 0.5), ("asdfghjkl", 0.75), ("zxcvbnm", 1.25))


def _keyboard_neighbours() -> dict[str, str]:
    where = {key: (row, shift + col) for row, (keys, shift) in enumerate(_ROWS)
             for col, key in enumerate(keys)}
    near = {}
    for key, (row, x) in where.items():
        near[key] = "".join(k for k, (r, kx) in where.items() if k != key and (
            (r == row and abs(kx - x) == 1) or (abs(r - row) == 1 and abs(kx - x) < 1)))
        if key.isalpha():
            near[key.upper()] = near[key].upper()
    return near


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()

# what OCR engines commonly read instead (two-character patterns are tried first)
OCR_CONFUSIONS = {
    "rn": "m", "m": "rn", "cl": "d", "d": "cl", "vv": "w", "w": "vv",
    "l": "1", "1": "l", "I": "l", "O": "0", "0": "O", "S": "5", "5": "S",
    "B": "8", "8": "B", "e": "c", "c": "e",
}


def lower(tokens: Sequence[str]) -> list[str]:
    return [t.lower() for t in tokens]


def upper(tokens: Sequence[str]) -> list[str]:
    return [t.upper() for t in tokens]


def title(tokens: Sequence[str]) -> list[str]:
    # not str.title(), which also capitalises after every non-letter ("1990S", "O'Neil")
    return [t[:1].upper() + t[1:].lower() for t in tokens]


def typos(tokens: Sequence[str], rate: float, rng: random.Random) -> list[str]:
    """Random insertions, deletions, swaps and substitutions, `rate` of the characters."""
    # imported here: textnoisr loads scipy and `datasets`, which prediction and runs without
    # typo noise do not need
    from textnoisr.noise import CharNoiseAugmenter

    noise = CharNoiseAugmenter(rate, seed=rng.getrandbits(64))
    # a single character cannot be swapped (textnoisr's rate correction fails to converge)
    single = CharNoiseAugmenter(rate, actions=("insert", "substitute", "delete"),
                                seed=rng.getrandbits(64))
    return [(noise if len(t) > 1 else single).add_noise(t) for t in tokens]


def keyboard(tokens: Sequence[str], rate: float, rng: random.Random) -> list[str]:
    """Each letter or digit replaced, with probability `rate`, by a neighbouring key."""
    def hit(c: str) -> str:
        near = KEYBOARD_NEIGHBOURS.get(c)
        return rng.choice(near) if near and rng.random() < rate else c

    return ["".join(hit(c) for c in t) for t in tokens]


def ocr(tokens: Sequence[str], rate: float, rng: random.Random) -> list[str]:
    """Each place an `OCR_CONFUSIONS` pattern matches changed with probability `rate`."""
    out = []
    for token in tokens:
        pieces, j = [], 0
        while j < len(token):
            pattern = token[j:j + 2] if token[j:j + 2] in OCR_CONFUSIONS else token[j]
            if pattern in OCR_CONFUSIONS and rng.random() < rate:
                pieces.append(OCR_CONFUSIONS[pattern])
                j += len(pattern)
            else:
                pieces.append(token[j])
                j += 1
        out.append("".join(pieces))
    return out


def perturb(kind: str, tokens: Sequence[str], rng: random.Random, rate: float = 0.05,
            ocr_rate: float = 0.3) -> list[str]:
    """`tokens` under the perturbation `kind` (one of `KINDS`); character noise draws from
    `rng`, at `rate` (`ocr_rate` for `ocr`). A token left empty is kept as it was."""
    if kind in ("lower", "upper", "title"):
        new = {"lower": lower, "upper": upper, "title": title}[kind](tokens)
    else:
        new = {"typo": typos, "keyboard": keyboard, "ocr": ocr}[kind](
            tokens, ocr_rate if kind == "ocr" else rate, rng)
    return [n or t for n, t in zip(new, tokens, strict=True)]


def sentence_rng(*parts: object) -> random.Random:
    """The generator of one sentence's draws, seeded by `parts` (e.g. seed, epoch, index) and
    nothing else; a text seed is hashed the same way on every machine and Python process."""
    return random.Random(":".join(map(str, parts)))


# ---------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """Which training sentences an epoch perturbs, and how (`data.augment`).

    Sentence i in epoch e gets perturbation k with probability `probabilities[k]` (at most
    one each: the probabilities add up to the fraction perturbed), drawn from
    `sentence_rng(seed, e, i)`.

    Args:
        probabilities: kind (one of `KINDS`) -> probability; they sum to at most 1.
        rate: the character error rate of `typo` and `keyboard`.
        ocr_rate: the share of OCR-confusable places `ocr` changes.
        seed: the data seed.
    """

    probabilities: dict[str, float]
    rate: float = 0.05
    ocr_rate: float = 0.3
    seed: int = 0

    @classmethod
    def from_config(cls, augment: dict | None, seed: int) -> Augmentation | None:
        """From `data.augment`: probabilities by kind, and optionally `rate`, `ocr_rate`;
        None when it perturbs nothing (no config, or every probability 0)."""
        if not augment or not any(augment.get(kind) for kind in KINDS):
            return None
        rates = {k: augment[k] for k in ("rate", "ocr_rate") if k in augment}
        return cls({k: p for k, p in augment.items() if k not in rates}, **rates, seed=seed)

    def __call__(self, tokens: Sequence[str], epoch: int, index: int) -> list[str] | None:
        """Sentence `index`'s tokens as epoch `epoch` sees them; None when left as it is."""
        rng = sentence_rng(self.seed, epoch, index)
        u = rng.random()
        for kind in KINDS:
            u -= self.probabilities.get(kind, 0.0)
            if u < 0:
                return perturb(kind, tokens, rng, self.rate, self.ocr_rate)
        return None

    def apply(self, data, pairs: list[tuple[int, int]], encode: Callable):
        """One training batch: `pairs` of (epoch, index) from `EpochBatches`. Returns `data`
        with the perturbed sentences of the batch re-encoded by `encode` (word ids and
        whatever features it adds), and the batch's indices, ready for the module's collate."""
        indices = [i for _, i in pairs]
        changed = {}
        for epoch, i in pairs:
            new = self(data.tokens[i], epoch, i)
            if new is not None:
                changed[i] = new
        if not changed:
            return data, indices
        fresh = encode(list(changed.values()))
        view = copy.copy(data)  # the split itself stays as read
        for name in ("tokens", "word_ids", "casing", "char_ids"):
            if getattr(data, name, None) is not None and getattr(fresh, name, None) is not None:
                setattr(view, name, _Overlay(getattr(data, name),
                                             dict(zip(changed, getattr(fresh, name), strict=True))))
        return view, indices


class _Overlay:
    """A sequence read through a few replaced items: `changed[i]` where given, else `base[i]`."""

    def __init__(self, base, changed: dict):
        self.base, self.changed = base, changed

    def __getitem__(self, i):
        return self.changed[i] if i in self.changed else self.base[i]

    def __len__(self) -> int:
        return len(self.base)


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batches of a `BucketBatchSampler`, each index paired with the epoch whose order
    the batch belongs to, so that the collate function (in a worker process too) knows which
    epoch's augmentation to apply, a resumed epoch's included."""

    def __init__(self, sampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # drawn now, not on the first batch: the order (and so its epoch) is fixed when the
        # loader creates its iterator, as with the plain sampler
        batches = iter(self.sampler)
        epoch = self.sampler.drawn_epoch
        return ([(epoch, i) for i in batch] for batch in batches)
