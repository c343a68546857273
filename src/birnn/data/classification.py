"""Sentence classification data: a whitespace-tokenised text and one label."""

from __future__ import annotations

import torch

from birnn.data.datamodule import SequenceDataModule
from birnn.data.vocab import label_vocab
from birnn.errors import DataError


class ClassificationDataModule(SequenceDataModule):
    """Sentence classification (sentiment): a whitespace-tokenised text and one label."""

    task = "classification"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("files", {"train": "train.tsv", "validation": "dev.tsv",
                                    "test": "test.tsv"})
        kwargs.setdefault("fields", {"text": ["sentence", "text", "content"], "label": "label"})
        super().__init__(*args, **kwargs)

    def gold_column(self, ds, split):
        return ds["label"]

    def build_labels(self, gold):
        return label_vocab([gold], outside=None)

    def check_labels(self, split, gold):
        unseen = sorted(set(gold) - set(self.labels.itos))
        if unseen:
            raise DataError(f"{split} split has label(s) never seen in train: "
                            f"{', '.join(unseen)}", self.source)
        return gold

    def encode_targets(self, gold):
        return torch.tensor(self.labels.encode(gold), dtype=torch.int64)

    def collate_targets(self, split, indices):
        return {"label": split.targets[indices]}  # (B,)
