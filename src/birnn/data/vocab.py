"""Vocabularies built on the training split and stored in checkpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

PAD = "<pad>"
UNK = "<unk>"


@dataclass
class Vocab:
    """A string <-> id table. Words have PAD at 0 and UNK at 1; label tables have neither."""

    itos: list[str]
    unk: str | None = UNK
    lower: bool = False
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary entries must be unique")

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
        return cls(list(specials) + [t for t in kept if t not in specials], lower=lower)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        unk = self.stoi[self.unk] if self.unk is not None else None
        stoi = self.stoi
        if self.lower:
            tokens = (t.lower() for t in tokens)
        if unk is None:
            return [stoi[t] for t in tokens]
        return [stoi.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def state_dict(self) -> dict:
        return {"itos": list(self.itos), "unk": self.unk, "lower": self.lower}

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocab:
        return cls(list(state["itos"]), unk=state["unk"], lower=state["lower"])


def label_vocab(sequences: Iterable[Iterable[str]], outside: str | None = "O") -> Vocab:
    """Labels sorted by name, with the outside tag (if present) first."""
    labels = sorted({t for seq in sequences for t in seq})
    if outside in labels:
        labels.remove(outside)
        labels.insert(0, outside)
    return Vocab(labels, unk=None)
