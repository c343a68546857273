"""Lightning data modules: token classification (tagging) and sentence classification.

Both read their splits through `birnn.data.sources` (local files or the Hub), build the
vocabularies on the training split only, hold each split in memory as id tensors, and batch
with the length-bucketed sampler. The vocabularies travel in the checkpoint
(`vocabularies()`), so evaluation and prediction label text exactly as training did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from birnn.data.sampler import BucketBatchSampler
from birnn.data.sources import load_hub, load_local_split
from birnn.data.vocab import PAD, UNK, Vocab, casing_ids, char_ids, label_vocab, pad_chars
from birnn.errors import ConfigError, DataError
from birnn.tags import IGNORE_INDEX, SCHEMES, convert_tags

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
UNKNOWN_LABELS = ("error", "outside")


@dataclass
class EncodedSplit(Dataset):
    """One split held in memory; items are indices, batches come from the module's collate.

    `gold` holds the gold labels as strings: a tag list per sentence, or one label per sentence.
    """

    tokens: list[list[str]]
    gold: list
    word_ids: list[torch.Tensor]
    targets: list[torch.Tensor] | torch.Tensor
    casing: list[torch.Tensor] | None = None  # word-shape ids (T,) per sentence (tagging)
    char_ids: list[torch.Tensor] | None = None  # character ids (T, W) per sentence
    lengths: list[int] = field(init=False)

    def __post_init__(self):
        self.lengths = [len(t) for t in self.tokens]

    def __len__(self) -> int:
        return len(self.word_ids)

    def __getitem__(self, index: int) -> int:
        return index


def _check_positive(key: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"data.{key}: must be an integer >= 1, got {value!r}")


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
        max_length: truncate longer sequences (with a warning counting them); None keeps all.
        validation_fraction: share of train held out when the source has no validation split.
        batch_size, eval_batch_size: sequences per training / evaluation batch.
        bucketing: length-bucketed batches (True) or random batches (False).
        num_workers: DataLoader worker processes.
        seed: seed of the batch order and of a carved validation split.
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
    ):
        super().__init__()
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                           ("min_freq", min_freq)):
            _check_positive(key, value)
        _check_positive("max_length", max_length, allow_none=True)
        if not 0.0 < validation_fraction < 1.0:
            raise ConfigError(f"data.validation_fraction: must be in (0, 1), got "
                              f"{validation_fraction!r}")
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
        if self.dir is not None:
            return {split: load_local_split(path, self.format, self.task, self.fields,
                                            self.token_column, self.tag_column)
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
            self.labels = self.build_labels(raw["train"][1])
        for split, (tokens, gold) in raw.items():
            gold = self.check_labels(split, gold)
            self.splits[split] = EncodedSplit(
                tokens=tokens,
                gold=gold,
                word_ids=[torch.tensor(self.words.encode(s), dtype=torch.int64) for s in tokens],
                targets=self.encode_targets(gold),
            )
        log.info(
            "data: %s | train/dev/test %d/%d/%d | vocab %d words, %d labels",
            self.source, *(len(self.splits[s]) for s in SPLITS), len(self.words),
            len(self.labels),
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
            **self.collate_targets(split, indices),
        }

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
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=lambda idx: self.collate(data, idx),
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
        if scheme not in SCHEMES:
            raise ConfigError(f"data.scheme: unknown {scheme!r} (valid: {', '.join(SCHEMES)})")
        if unknown_labels not in UNKNOWN_LABELS:
            raise ConfigError(f"data.unknown_labels: unknown {unknown_labels!r} "
                              f"(valid: {', '.join(UNKNOWN_LABELS)})")
        kwargs.setdefault("files", {"train": "train.txt", "validation": "dev.txt",
                                    "test": "test.txt"})
        if chars not in (True, False, None, "none", "cnn", "birnn"):
            raise ConfigError(f"data.chars: must be true, false or a model.char.kind (none, "
                              f"cnn, birnn), got {chars!r}")
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
