"""Lightning data module for token classification (tagging) on local column files.

Splits are read through HuggingFace `datasets` (`Dataset.from_generator` over the column
reader, fingerprinted by file path, size and modification time, so a changed file is re-read
and an unchanged one comes from the Arrow cache). Vocabularies are built on the training split
only and travel in the checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from birnn.data.columns import read_column_file
from birnn.data.sampler import BucketBatchSampler
from birnn.data.vocab import Vocab, label_vocab
from birnn.errors import BirnnError, ConfigError, DataError
from birnn.metrics.spans import SCHEMES, convert_tags

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100  # target value for padding positions (cross-entropy's ignore_index)

datasets.disable_progress_bars()


@dataclass
class EncodedSplit(Dataset):
    """One split held in memory as id tensors; items are indices, batches come from collate."""

    tokens: list[list[str]]
    tags: list[list[str]]
    word_ids: list[torch.Tensor]
    tag_ids: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.word_ids)

    def __getitem__(self, index: int) -> int:
        return index

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.tokens]


class TaggingDataModule(L.LightningDataModule):
    """Token classification data from a folder of CoNLL-style column files.

    Args:
        dir: folder holding the split files.
        files: file name per split (`train`, `validation`, `test`).
        token_column, tag_column: column indices (negative counts from the end).
        scheme: tag scheme of the files (`iob1`, `iob2`, `iobes`); converted to IOB2.
        lowercase: lower-case words before the vocabulary lookup.
        min_freq: words seen fewer times in train map to UNK.
        batch_size: sentences per training batch; evaluation uses `eval_batch_size`.
        bucketing: length-bucketed batches (True) or random batches (False).
        num_workers: DataLoader worker processes (0: load in the training process).
        seed: seed of the batch order.
    """

    task = "tagging"

    def __init__(
        self,
        dir: str,
        files: dict | None = None,
        token_column: int = 0,
        tag_column: int = -1,
        scheme: str = "iob2",
        lowercase: bool = False,
        min_freq: int = 1,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        bucketing: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if scheme not in SCHEMES:
            raise ConfigError(f"data.scheme: unknown {scheme!r} (valid: {', '.join(SCHEMES)})")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                           ("min_freq", min_freq)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key}: must be an integer >= 1, got {value!r}")
        self.dir = Path(dir)
        self.files = dict(files or {"train": "train.txt", "validation": "dev.txt",
                                    "test": "test.txt"})
        self.token_column = token_column
        self.tag_column = tag_column
        self.scheme = scheme
        self.lowercase = lowercase
        self.min_freq = min_freq
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.bucketing = bucketing
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, EncodedSplit] = {}
        self.words: Vocab | None = None
        self.labels: Vocab | None = None

    # ------------------------------------------------------------------------------ loading

    def paths(self) -> dict[str, Path]:
        """The split files, checked to exist (DataError otherwise)."""
        if not self.dir.is_dir():
            raise DataError("data folder not found (set data.dir)", self.dir)
        missing = set(SPLITS) - set(self.files)
        if missing:
            raise ConfigError(f"data.files: no file named for split(s) {sorted(missing)}")
        paths = {split: self.dir / self.files[split] for split in SPLITS}
        for split, path in paths.items():
            if not path.is_file():
                raise DataError(f"{split} split file not found (data.files.{split})", path)
        return paths

    def load_split(self, path: Path) -> datasets.Dataset:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.token_column}|" \
              f"{self.tag_column}"
        try:
            return datasets.Dataset.from_generator(
                read_column_file,
                gen_kwargs={"path": str(path), "token_column": self.token_column,
                            "tag_column": self.tag_column},
                features=datasets.Features({
                    "tokens": datasets.Sequence(datasets.Value("string")),
                    "tags": datasets.Sequence(datasets.Value("string")),
                }),
                fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
            )
        except Exception as e:  # datasets wraps the reader's error: surface ours as is
            cause = e
            while cause is not None and not isinstance(cause, BirnnError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = {}
        for split, path in self.paths().items():
            ds = self.load_split(path)
            if len(ds) == 0:
                raise DataError(f"{split} split is empty", path)
            tags = [convert_tags(t, self.scheme, "iob2") if self.scheme != "iob2" else t
                    for t in ds["tags"]]
            raw[split] = (ds["tokens"], tags, path)

        self.words = Vocab.build(raw["train"][0], min_freq=self.min_freq, lower=self.lowercase)
        self.labels = label_vocab(raw["train"][1])
        for split, (tokens, tags, path) in raw.items():
            unseen = sorted({t for seq in tags for t in seq} - set(self.labels.itos))
            if unseen:
                raise DataError(
                    f"{split} split has label(s) never seen in train: {', '.join(unseen)}", path
                )
            self.splits[split] = EncodedSplit(
                tokens=tokens,
                tags=tags,
                word_ids=[torch.tensor(self.words.encode(s), dtype=torch.int64) for s in tokens],
                tag_ids=[torch.tensor(self.labels.encode(s), dtype=torch.int64) for s in tags],
            )
        log.info(
            "data: %s | train/dev/test sentences %d/%d/%d | vocab %d words, %d labels",
            self.dir, *(len(self.splits[s]) for s in SPLITS), len(self.words), len(self.labels),
        )

    # ------------------------------------------------------------------------------ batches

    def collate(self, split: EncodedSplit, indices: list[int]) -> dict[str, torch.Tensor]:
        words = [split.word_ids[i] for i in indices]
        return {
            "index": torch.tensor(indices, dtype=torch.int64),
            "lengths": torch.tensor([len(w) for w in words], dtype=torch.int64),  # (B,)
            "words": pad_sequence(words, batch_first=True, padding_value=0),  # (B, T)
            "tags": pad_sequence([split.tag_ids[i] for i in indices], batch_first=True,
                                 padding_value=IGNORE_INDEX),  # (B, T)
        }

    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self.splits[split]
        replicas, rank = 1, 0
        if train and self.trainer is not None:
            replicas, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = BucketBatchSampler(
            data.lengths,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            pool_batches=100 if self.bucketing else 1,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
        )
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=lambda idx: self.collate(data, idx),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    # --------------------------------------------------------------------------- checkpoint

    def vocabularies(self) -> dict:
        """What a checkpoint needs to read and label new text like this data."""
        return {
            "task": self.task,
            "words": self.words.state_dict(),
            "labels": self.labels.state_dict(),
            "scheme": "iob2",
        }

    def padded_fraction(self, split: str = "train") -> float:
        """Fraction of padding positions in one epoch of this split's batches."""
        data = self.splits[split]
        loader = self._loader(split, train=split == "train")
        lengths = torch.tensor(data.lengths)
        real = padded = 0
        for batch in loader.batch_sampler:
            batch_lengths = lengths[batch]
            real += int(batch_lengths.sum())
            padded += int(batch_lengths.max()) * len(batch)
        return 1.0 - real / padded
