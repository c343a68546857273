"""Token classification data: tokens with one tag each, converted to IOB2."""

from __future__ import annotations

import logging

import torch
from torch.nn.utils.rnn import pad_sequence

from birnn.data.datamodule import EncodedSplit, SequenceDataModule
from birnn.data.vocab import PAD, UNK, Vocab, casing_ids, char_ids, label_vocab, pad_chars
from birnn.errors import DataError
from birnn.tags import IGNORE_INDEX, convert_tags

log = logging.getLogger(__name__)


class TaggingDataModule(SequenceDataModule):
    """Token classification (NER, chunking, POS): tokens with one tag each.

    Args (besides `SequenceDataModule`'s):
        scheme: tag scheme of the source (`iob1`, `iob2`, `iobes`); converted to IOB2.
        unknown_labels: what to do with a dev/test tag never seen in train: `error`, or
            `outside` (map it to O with a warning).
        chars: add character ids `chars` (B, T, W) to batches, with a character vocabulary
            built on the training split (and kept in `vocabularies()`): True, or the model's
            `char.kind` (`cnn`/`birnn` turn it on, `none` off). A checkpoint with a
            character vocabulary turns it on in `use_vocabularies`.

    Batches always carry `casing` (B, T): word-shape ids (see `birnn.tags.word_shape`).
    """

    task = "tagging"

    def __init__(self, *args, scheme: str = "iob2", unknown_labels: str = "error",
                 chars: bool | str = False, **kwargs):
        kwargs.setdefault("files", {"train": "train.txt", "validation": "dev.txt",
                                    "test": "test.txt"})
        super().__init__(*args, **kwargs)
        self.scheme = scheme
        self.unknown_labels = unknown_labels
        self.use_chars = chars not in (False, None, "none")
        self.chars: Vocab | None = None

    def setup(self, stage: str | None = None) -> None:
        fresh = not self.splits
        super().setup(stage)
        if not fresh:
            return
        if self.use_chars and self.chars is None:  # built on train only
            self.chars = Vocab.build(("".join(s) for s in self.splits["train"].tokens),
                                     specials=(PAD, UNK))
        for data in self.splits.values():
            if data.casing is None:
                self.add_features(data)

    def encode(self, tokens, gold=None):
        data = super().encode(tokens, gold)
        if self.chars is not None or not self.use_chars:  # else `setup` adds them
            self.add_features(data)
        return data

    def add_features(self, data: EncodedSplit) -> None:
        """The token features batches carry: word shapes and, with `chars`, character ids."""
        data.casing = [casing_ids(s) for s in data.tokens]
        if self.use_chars:
            data.char_ids = [char_ids(self.chars, s) for s in data.tokens]

    def collate(self, split, indices):
        batch = super().collate(split, indices)
        batch["casing"] = pad_sequence([split.casing[i] for i in indices], batch_first=True,
                                       padding_value=0)  # (B, T)
        if self.use_chars:
            batch["chars"] = pad_chars([split.char_ids[i] for i in indices])  # (B, T, W)
        return batch

    def use_vocabularies(self, state: dict) -> None:
        super().use_vocabularies(state)
        if state.get("chars"):
            self.chars = Vocab.from_state_dict(state["chars"])
            self.use_chars = True

    def gold_column(self, ds, split):
        tags = ds["tags"]
        for tokens, t in zip(ds["tokens"], tags, strict=True):
            if len(tokens) != len(t):
                raise DataError(f"{split} split: a sentence has {len(tokens)} tokens but "
                                f"{len(t)} tags", self.source)
        if self.scheme == "iob2":
            # kept as they are, but IOBES tags would leave E-/S- labels in an "iob2" model
            wrong = sorted({t for seq in tags for t in seq if t[:2] in ("E-", "S-")})
            if wrong:
                raise DataError(f"{split} split: tag {wrong[0]!r} is not valid in the iob2 "
                                f"scheme (data.scheme=iob2; IOBES data needs "
                                f"data.scheme=iobes)", self.source)
        else:
            try:
                tags = [convert_tags(t, self.scheme, "iob2") for t in tags]
            except ValueError as e:
                raise DataError(f"{split} split: {e} (data.scheme={self.scheme})",
                                self.source) from None
        return tags

    def build_labels(self, gold):
        return label_vocab(gold)

    def check_labels(self, split, gold):
        unseen = sorted({t for seq in gold for t in seq} - set(self.labels.itos))
        if not unseen:
            return gold
        if self.unknown_labels == "error" or "O" not in self.labels.stoi:
            raise DataError(f"{split} split has label(s) never seen in train: "
                            f"{', '.join(unseen)} (data.unknown_labels=outside maps them to O)",
                            self.source)
        log.warning("data: %s split: label(s) never seen in train mapped to O: %s",
                    split, ", ".join(unseen))
        known = self.labels.stoi
        return [[t if t in known else "O" for t in seq] for seq in gold]

    def encode_targets(self, gold):
        return [torch.tensor(self.labels.encode(s), dtype=torch.int64) for s in gold]

    def collate_targets(self, split, indices):
        return {"tags": pad_sequence([split.targets[i] for i in indices], batch_first=True,
                                     padding_value=IGNORE_INDEX)}  # (B, T)

    def vocabularies(self):
        extra = {"chars": self.chars.state_dict()} if self.chars is not None else {}
        return {**super().vocabularies(), "scheme": "iob2", **extra}
