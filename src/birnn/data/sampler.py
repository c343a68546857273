"""Length-bucketed batches: sequences of similar length share a batch, so little is padding."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Yield batches of indices whose sequences have similar lengths.

    Training order (``shuffle=True``): the indices are shuffled, cut into pools of
    ``batch_size * pool_batches``, each pool is sorted by length and cut into batches, and the
    batches are shuffled. Randomness comes from ``seed + epoch`` (call ``set_epoch``), so every
    process of a distributed run draws the same batches and takes every ``num_replicas``-th
    one: each sample is seen once per epoch across processes.

    Evaluation order (``shuffle=False``): all indices sorted by length, then batched; with
    several processes each takes every ``num_replicas``-th batch, without padding, so each
    sample is scored exactly once across processes (the counts may differ by one batch). With
    fewer batches than processes every process takes them all: a process without a batch would
    skip the metric synchronisation the others wait in at the end of the epoch.

    Args:
        lengths: length of each sequence.
        batch_size: sequences per batch.
        shuffle: training order as above; otherwise sorted.
        pool_batches: batches per sorting pool; 1 gives random batches (no bucketing).
        seed: base seed of the shuffles.
        num_replicas, rank: process count and this process's rank (1 and 0 without DDP).
        epoch_source: returns the current epoch when an iteration starts (the trainer's);
            without it, the epoch is what `set_epoch` last set.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        pool_batches: int = 100,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        epoch_source: Callable[[], int] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = torch.as_tensor(lengths, dtype=torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pool_batches = max(1, pool_batches)
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.epoch_source = epoch_source
        # for the next iteration only, a resumed run's place: its epoch, and the batches to
        # leave out because the checkpointed run had trained on them
        self.resume_epoch: int | None = None
        self.skip_batches = 0
        self.drawn_epoch: int | None = None  # the epoch of the last training order drawn

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = torch.sort(self.lengths, stable=True).indices
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        if self.resume_epoch is not None:
            epoch, self.resume_epoch = self.resume_epoch, None
        self.drawn_epoch = epoch
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(n, generator=g)
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, n, pool):
            chunk = perm[start : start + pool]
            if self.pool_batches > 1:  # sort the pool by length; pool_batches=1 keeps it random
                chunk = chunk[torch.sort(self.lengths[chunk], stable=True).indices]
            batches += [chunk[i : i + self.batch_size].tolist()
                        for i in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in order]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        if not self.shuffle:
            return iter(batches[self._eval_shard()])
        if self.num_replicas > 1:
            # pad by repeating the first batches so every process runs the same number of steps
            total = len(self) * self.num_replicas
            batches = (batches * math.ceil(total / max(1, len(batches))))[:total]
            batches = batches[self.rank :: self.num_replicas]
        skip, self.skip_batches = self.skip_batches, 0
        return iter(batches[skip:])

    def _eval_shard(self) -> slice:
        """This process's evaluation batches: every `num_replicas`-th one, or all of them when
        there are fewer batches than processes."""
        count = math.ceil(len(self.lengths) / self.batch_size)
        if count < self.num_replicas:
            return slice(None)
        return slice(self.rank, None, self.num_replicas)

    def __len__(self) -> int:
        count = math.ceil(len(self.lengths) / self.batch_size)
        if not self.shuffle:
            return len(range(count)[self._eval_shard()])
        if self.pool_batches > 1:
            # pools are cut separately, so the last batch of each pool may be short
            pool = self.batch_size * self.pool_batches
            full, rest = divmod(len(self.lengths), pool)
            count = full * self.pool_batches + math.ceil(rest / self.batch_size)
        return math.ceil(count / self.num_replicas)
