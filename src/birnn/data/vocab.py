"""Vocabularies built on the training split and stored in checkpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from birnn.tags import word_shape

PAD = "<pad>"
UNK = "<unk>"


@dataclass
class Vocab:
    """A string <-> id table. Words have PAD at 0 and UNK at 1; label tables have neither.
    `counts` (when built from data): how often each entry was seen, 0 for the specials.
    `extra`: how many entries, the last ones, were added after the training data (the words
    of pretrained vectors, `extended`); `lower_fallback`: a token missing as spelt takes the
    id of its lower-cased form when there is one (set by `extended`: GloVe is lower case)."""

    itos: list[str]
    unk: str | None = UNK
    lower: bool = False
    counts: list[int] | None = field(default=None, repr=False)
    extra: int = 0
    lower_fallback: bool = False
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary entries must be unique")
        if self.counts is not None and len(self.counts) != len(self.itos):
            raise ValueError("vocabulary counts must have one entry per token")

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        min_freq: int = 1,
        lower: bool = False,
        specials: tuple[str, ...] = (PAD, UNK),
    ) -> Vocab:
        """Count tokens and keep those seen at least `min_freq` times, most frequent first."""
        counts = Counter(t.lower() if lower else t for seq in sequences for t in seq)
        kept = [t for t, c in counts.items() if c >= min_freq]
        kept.sort(key=lambda t: (-counts[t], t))
        tokens = [t for t in kept if t not in specials]
        return cls(list(specials) + tokens, lower=lower,
                   counts=[0] * len(specials) + [counts[t] for t in tokens])

    def extended(self, words: Iterable[str]) -> Vocab:
        """This vocabulary followed by the `words` it lacks, in their order (the words of
        pretrained vectors, most frequent first), with `lower_fallback` on. A lower-casing
        vocabulary takes only lower-case words."""
        have, added = set(self.itos), []
        for word in words:
            if word not in have and not (self.lower and word != word.lower()):
                have.add(word)
                added.append(word)
        counts = None if self.counts is None else self.counts + [0] * len(added)
        return Vocab(self.itos + added, unk=self.unk, lower=self.lower, counts=counts,
                     extra=self.extra + len(added), lower_fallback=True)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        unk = self.stoi[self.unk] if self.unk is not None else None
        stoi = self.stoi
        if self.lower:
            tokens = (t.lower() for t in tokens)
        if unk is None:
            return [stoi[t] for t in tokens]
        if self.lower_fallback:
            return [stoi.get(t, stoi.get(t.lower(), unk)) for t in tokens]
        return [stoi.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def state_dict(self) -> dict:
        state = {"itos": list(self.itos), "unk": self.unk, "lower": self.lower}
        if self.counts is not None:
            state["counts"] = list(self.counts)
        if self.extra or self.lower_fallback:  # absent: a vocabulary of the training data only
            state.update(extra=self.extra, lower_fallback=self.lower_fallback)
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocab:
        counts = state.get("counts")  # absent in checkpoints written before counts were kept
        return cls(list(state["itos"]), unk=state["unk"], lower=state["lower"],
                   counts=None if counts is None else list(counts),
                   extra=state.get("extra", 0), lower_fallback=state.get("lower_fallback", False))


def label_vocab(sequences: Iterable[Iterable[str]], outside: str | None = "O") -> Vocab:
    """Labels sorted by name, with the outside tag (if present) first."""
    labels = sorted({t for seq in sequences for t in seq})
    if outside in labels:
        labels.remove(outside)
        labels.insert(0, outside)
    return Vocab(labels, unk=None)


# ------------------------------------------------------------------- token-level features


def casing_ids(tokens: list[str]):
    """Word-shape ids (T,) of a sentence (see `birnn.tags.word_shape`)."""
    import torch

    return torch.tensor([word_shape(t) for t in tokens], dtype=torch.int64)


def char_ids(chars: Vocab, tokens: list[str]):
    """Character ids (T, W) of a sentence, W its longest word, padded with 0."""
    import torch

    width = max(1, max((len(t) for t in tokens), default=1))
    # one tensor from padded lists: a tensor per word costs more than its characters
    rows = [chars.encode(token) + [0] * (width - len(token)) for token in tokens]
    return torch.tensor(rows, dtype=torch.int64).view(len(tokens), width)


def pad_chars(sentences: list):
    """(T_i, W_i) character id tensors -> one (B, T, W) tensor padded with 0."""
    import torch

    steps = max(s.size(0) for s in sentences)
    width = max(s.size(1) for s in sentences)
    out = torch.zeros(len(sentences), steps, width, dtype=torch.int64)
    for i, s in enumerate(sentences):
        out[i, : s.size(0), : s.size(1)] = s
    return out
