"""What the data modules of both tasks share (`birnn.data.tagging`,
`birnn.data.classification`).

Each reads its splits through `birnn.data.sources` (local files or the Hub), build the
vocabularies on the training split only, hold each split in memory as id tensors, and batch
with the length-bucketed sampler. The vocabularies travel in the checkpoint
(`vocabularies()`), so evaluation and prediction label text exactly as training did.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from birnn.data.augment import Augmentation, EpochBatches
from birnn.data.sampler import BucketBatchSampler
from birnn.data.vocab import Vocab
from birnn.errors import ConfigError, DataError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
UNKNOWN_LABELS = ("error", "outside")


@dataclass
class EncodedSplit(Dataset):
    """One split held in memory; items are indices, batches come from the module's collate.

    `gold` holds the gold labels as strings: a tag list per sentence, or one label per sentence.
    """

    tokens: list[list[str]]
    gold: list | None  # None for unlabelled text (prediction)
    word_ids: list[torch.Tensor]
    targets: list[torch.Tensor] | torch.Tensor | None
    casing: list[torch.Tensor] | None = None  # word-shape ids (T,) per sentence (tagging)
    char_ids: list[torch.Tensor] | None = None  # character ids (T, W) per sentence
    lengths: list[int] = field(init=False)

    def __post_init__(self):
        self.lengths = [len(t) for t in self.tokens]

    def __len__(self) -> int:
        return len(self.word_ids)

    def __getitem__(self, index: int) -> int:
        return index


class SequenceDataModule(L.LightningDataModule):
    """What tagging and sentence classification share; see the subclasses.

    Args:
        dir: folder of local split files; when unset, the Hub dataset `hub.path` is loaded.
        format: `auto` (from each file's extension), `conll`, `jsonl`, `csv`, `tsv`, `parquet`.
        files: file name per split (`train`, `validation`, `test`) inside `dir`.
        hub: `path`, `name`, `revision` of a HuggingFace Hub dataset.
        splits: Hub split name per split; a missing validation split is carved from train.
        fields: column names (`tokens`/`tags` for tagging, `text`/`label` for classification;
            `text` may be a list of candidates, the first present is used).
        token_column, tag_column: column indices in column files.
        lowercase, min_freq: word vocabulary options (built on train only).
        extra_words: words to add after the training words (the words of pretrained vectors,
            most frequent first; training passes them, see `birnn.cli.build`): dev, test and
            new text find them (exactly, else lower-cased) instead of <unk>.
        max_length: truncate longer sequences (with a warning counting them); None keeps all.
        validation_fraction: share of train held out when the source has no validation split.
        batch_size, eval_batch_size: sequences per training / evaluation batch.
        bucketing: length-bucketed batches (True) or random batches (False).
        num_workers: DataLoader worker processes.
        seed: seed of the batch order, of a carved validation split and of the augmentation.
        augment: perturb training sentences on the fly (`birnn.data.augment.Augmentation`):
            kind -> probability (`lower`, `upper`, `title`, `typo`, `keyboard`, `ocr`), and
            `rate`, `ocr_rate`; None (the default) leaves the batches as read.
        bad_lines: a malformed line of a column file: `error`, or `skip` its sentence (each
            counted, the first places named in a warning).
    """

    task = ""

    def __init__(
        self,
        dir: str | None = None,
        format: str = "auto",
        files: dict | None = None,
        hub: dict | None = None,
        splits: dict | None = None,
        fields: dict | None = None,
        token_column: int = 0,
        tag_column: int = -1,
        lowercase: bool = False,
        min_freq: int = 1,
        max_length: int | None = None,
        validation_fraction: float = 0.1,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        bucketing: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        extra_words: list[str] | None = None,
        augment: dict | None = None,
        bad_lines: str = "error",
    ):
        super().__init__()
        self.dir = Path(dir) if dir else None
        self.format = format
        self.files = dict(files or {})
        self.hub = dict(hub or {})
        self.hub_splits = dict(splits or {"train": "train", "validation": "validation",
                                          "test": "test"})
        self.fields = dict(fields or {})
        self.token_column = token_column
        self.tag_column = tag_column
        self.lowercase = lowercase
        self.min_freq = min_freq
        self.max_length = max_length
        self.validation_fraction = validation_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.bucketing = bucketing
        self.num_workers = num_workers
        self.seed = seed
        self.extra_words = extra_words
        self.augmentation = Augmentation.from_config(augment, seed)
        self.bad_lines = bad_lines
        self.splits: dict[str, EncodedSplit] = {}
        # (epoch, batches already trained in it) where a resumed run continues
        self.resume_at: tuple[int, int] | None = None
        self.words: Vocab | None = None
        self.labels: Vocab | None = None

    # ------------------------------------------------------------------------------ loading

    @property
    def source(self) -> str:
        """Where the data comes from, for messages."""
        if self.dir is not None:
            return str(self.dir)
        return self.hub.get("path") or "?"

    def paths(self) -> dict[str, Path]:
        """The local split files, checked to exist (DataError otherwise)."""
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

    def load_raw(self) -> dict[str, datasets.Dataset]:
        """Each split as a Dataset with standard columns (see `birnn.data.sources`)."""
        # imported here: `datasets` takes a second to import, and prediction encodes text
        # with a data module that never reads a split
        from birnn.data.sources import load_hub, load_local_split

        if self.dir is not None:
            return {split: load_local_split(path, self.format, self.task, self.fields,
                                            self.token_column, self.tag_column,
                                            self.bad_lines)
                    for split, path in self.paths().items()}
        if not self.hub.get("path"):
            raise ConfigError("data.dir is required (or data.hub.path for a Hub dataset)")
        raw = load_hub(self.hub["path"], self.hub.get("name"), self.hub.get("revision"),
                       self.task, self.fields, self.hub_splits)
        if "validation" not in raw:
            # no validation split: hold out part of train, deterministically
            parts = raw["train"].train_test_split(test_size=self.validation_fraction,
                                                  seed=self.seed)
            raw["train"], raw["validation"] = parts["train"], parts["test"]
            log.warning("data: no validation split in %s: held out %.0f%% of train",
                        self.source, 100 * self.validation_fraction)
        if "test" not in raw:
            raise ConfigError("data.splits.test: the Hub dataset needs a test split")
        return raw

    def clean(self, split: str, tokens: list[list[str]], gold: list) -> tuple[list, list]:
        """Skip empty and unlabelled sequences and truncate long ones, with counted warnings."""
        kept_tokens, kept_gold = [], []
        empty = unlabelled = truncated = 0
        for toks, g in zip(tokens, gold, strict=True):
            if not toks:
                empty += 1
                continue
            if g is None:
                unlabelled += 1
                continue
            if self.max_length is not None and len(toks) > self.max_length:
                truncated += 1
                toks = toks[: self.max_length]
                if isinstance(g, list):
                    g = g[: self.max_length]
            kept_tokens.append(toks)
            kept_gold.append(g)
        for count, what in ((empty, "empty sequences skipped"),
                            (unlabelled, "unlabelled examples skipped"),
                            (truncated, f"sequences truncated to data.max_length="
                                        f"{self.max_length} tokens")):
            if count:
                log.warning("data: %s split: %d %s", split, count, what)
        if not kept_tokens:
            raise DataError(f"{split} split has no usable examples", self.source)
        return kept_tokens, kept_gold

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = {}
        for split, ds in self.load_raw().items():
            if len(ds) == 0:
                raise DataError(f"{split} split is empty", self.source)
            raw[split] = self.clean(split, ds["tokens"], self.gold_column(ds, split))
        if self.words is None:  # unless given (`use_vocabularies`), built on train only
            self.words = Vocab.build(raw["train"][0], min_freq=self.min_freq,
                                     lower=self.lowercase)
            if self.extra_words:
                self.words = self.words.extended(self.extra_words)
            self.labels = self.build_labels(raw["train"][1])
        for split, (tokens, gold) in raw.items():
            self.splits[split] = self.encode(tokens, self.check_labels(split, gold))
        log.info(
            "data: %s | train/dev/test %d/%d/%d | vocab %d words, %d labels",
            self.source, *(len(self.splits[s]) for s in SPLITS), len(self.words),
            len(self.labels),
        )

    def encode(self, tokens: list[list[str]], gold: list | None = None) -> EncodedSplit:
        """Sentences (and their gold labels, when known) as ids with this data's
        vocabularies, ready for `collate`; unlabelled sentences batch without targets."""
        return EncodedSplit(
            tokens=tokens,
            gold=gold,
            word_ids=[torch.tensor(self.words.encode(s), dtype=torch.int64) for s in tokens],
            targets=None if gold is None else self.encode_targets(gold),
        )

    # -------------------------------------------------------------- what each task defines

    def gold_column(self, ds: datasets.Dataset, split: str) -> list:
        raise NotImplementedError

    def build_labels(self, gold: list) -> Vocab:
        raise NotImplementedError

    def check_labels(self, split: str, gold: list) -> list:
        raise NotImplementedError

    def encode_targets(self, gold: list):
        raise NotImplementedError

    def collate_targets(self, split: EncodedSplit, indices: list[int]) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ batches

    def collate(self, split: EncodedSplit, indices: list[int]) -> dict[str, torch.Tensor]:
        words = [split.word_ids[i] for i in indices]
        return {
            "index": torch.tensor(indices, dtype=torch.int64),
            "lengths": torch.tensor([len(w) for w in words], dtype=torch.int64),  # (B,)
            "words": pad_sequence(words, batch_first=True, padding_value=0),  # (B, T)
            **(self.collate_targets(split, indices) if split.targets is not None else {}),
        }

    def collate_augmented(self, split: EncodedSplit, pairs: list[tuple[int, int]]) -> dict:
        """`collate` of a training batch of (epoch, index) pairs: the sentences the
        augmentation perturbs in that epoch are re-encoded, their labels kept."""
        return self.collate(*self.augmentation.apply(split, pairs, self.encode))

    def batch_sampler(self, split: str, train: bool) -> BucketBatchSampler:
        # Under DDP the processes share the training batches and the validation batches (the
        # metrics sum their counts across processes). Each process scores the whole test
        # split: the test predictions written after it must all be in the first process.
        replicas, rank = 1, 0
        if self.trainer is not None and (train or split == "validation"):
            replicas, rank = self.trainer.world_size, self.trainer.global_rank
        return BucketBatchSampler(
            self.splits[split].lengths,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            pool_batches=100 if self.bucketing else 1,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            # the trainer's epoch when each pass starts: Lightning may draw an epoch's
            # iterator before it calls set_epoch (it does so on a resume)
            epoch_source=(lambda: self.trainer.current_epoch) if train and self.trainer else None,
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self.splits[split]
        sampler = self.batch_sampler(split, train)
        if train and self.resume_at is not None:
            (sampler.resume_epoch, sampler.skip_batches), self.resume_at = self.resume_at, None
        collate = functools.partial(self.collate, data)
        if train and self.augmentation is not None:
            # batches of (epoch, index) pairs: the collate perturbs that epoch's sentences
            sampler = EpochBatches(sampler)
            collate = functools.partial(self.collate_augmented, data)
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # its own generator: creating an iterator then draws no number from the global
            # RNG, so dropout's random stream does not depend on when loaders are iterated
            # (a resumed run creates its first iterator at another moment than the original)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        """Batches of any split in evaluation order (sorted by length, no shuffling)."""
        return self._loader(split, train=False)

    def predict_loader(self, split: str) -> DataLoader:
        """`eval_dataloader`'s batches for `trainer.predict`. The batch sampler is the
        loader's sampler here, each of its items a whole batch: for prediction Lightning
        re-creates a loader's batch sampler, which it cannot do for a custom one."""
        data = self.splits[split]
        return DataLoader(data, batch_size=None, sampler=self.batch_sampler(split, train=False),
                          collate_fn=lambda idx: self.collate(data, idx),
                          num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self.predict_loader("test")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def padded_fraction(self, split: str = "train", bucketing: bool | None = None) -> float:
        """Fraction of padding positions in one epoch of this split's batches."""
        saved = self.bucketing
        if bucketing is not None:
            self.bucketing = bucketing
        try:
            sampler = self.batch_sampler(split, train=split == "train")
        finally:
            self.bucketing = saved
        lengths = torch.tensor(self.splits[split].lengths)
        real = padded = 0
        for batch in sampler:
            batch_lengths = lengths[batch]
            real += int(batch_lengths.sum())
            padded += int(batch_lengths.max()) * len(batch)
        return 1.0 - real / padded

    # --------------------------------------------------------------------------- checkpoint

    def use_vocabularies(self, state: dict) -> None:
        """Encode with these vocabularies (a checkpoint's `vocabularies`) instead of building
        them on the training split; call before `setup`."""
        if state.get("task") != self.task:
            raise ConfigError(f"the checkpoint is a {state.get('task')} model but this is "
                              f"{self.task} data: pick data=... for its task")
        self.words = Vocab.from_state_dict(state["words"])
        labels = Vocab.from_state_dict(state["labels"])
        self.labels = Vocab([str(label) for label in labels.itos], unk=None)  # labels are text

    def vocabularies(self) -> dict:
        """What a checkpoint needs to read and label new text like this data."""
        return {"task": self.task, "words": self.words.state_dict(),
                "labels": self.labels.state_dict()}
