"""Batch samplers: the P x K training sampler and the evaluation shard sampler.

The P x K sampler is a pure function of ``(seed, step)``: every DDP rank computes the same
global batch without any collective and keeps its own disjoint slice, and a resumed run restarts
the stream at its step. It yields ``(position, item_seed)`` pairs so that the frames drawn for an
item do not depend on which data-loader worker loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from gaitgl_lightning.errors import BatchError, CheckpointError, ConfigError


class PKBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite P x K batches: P distinct identities, K sequences each.

    K sequences of an identity are drawn without replacement when it has at least K, with
    replacement otherwise (as OpenGait's sampler). Rank ``r`` of ``world_size`` takes elements
    ``r, r + world_size, ...`` of the shuffled global batch.
    """

    def __init__(
        self,
        labels: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = np.unique(self.labels)
        self.p, self.k = int(p), int(k)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.step = int(start_step)
        self.shuffle = shuffle
        check_pk(self.p, self.k, len(self.ids), self.world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.by_id = {int(i): np.flatnonzero(self.labels == i) for i in self.ids}

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """The whole P x K batch of ``step`` as (position, item seed) pairs."""
        rng = np.random.default_rng([self.seed, step])
        chosen = rng.choice(self.ids, size=self.p, replace=False)
        positions = []
        for ident in chosen:
            pool = self.by_id[int(ident)]
            positions.append(rng.choice(pool, size=self.k, replace=len(pool) < self.k))
        batch = np.concatenate(positions)
        if self.shuffle:
            batch = rng.permutation(batch)
        seeds = rng.integers(0, 2**62, size=len(batch))
        return [(int(b), int(s)) for b, s in zip(batch, seeds, strict=True)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            batch = self.global_batch(self.step)
            self.step += 1
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        # Infinite: training stops at Trainer(max_steps); Lightning needs a finite length.
        return sys.maxsize // 2

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step, "p": self.p, "k": self.k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("p"), state.get("k")) != (self.p, self.k):
            raise CheckpointError(
                f"sampler state is for P x K = {state.get('p')} x {state.get('k')}, "
                f"this run uses {self.p} x {self.k}"
            )
        self.seed, self.step = int(state["seed"]), int(state["step"])


def check_pk(p: int, k: int, num_ids: int, world_size: int) -> None:
    """Fail before training, saying what to change, when P x K cannot be served."""
    if p < 2 or k < 1:
        raise BatchError(f"P x K = {p} x {k}: the triplet loss needs P >= 2 identities and K >= 1")
    if p > num_ids:
        raise BatchError(
            f"P = {p} identities per batch, but the train partition has only {num_ids}: "
            f"set dataset.P <= {num_ids}"
        )
    if (p * k) % world_size:
        raise BatchError(
            f"P x K = {p} x {k} = {p * k} is not divisible by the world size {world_size}: "
            "choose P, K or the number of devices so that it is"
        )


class EvalShardSampler(Sampler[list[int]]):
    """Evaluation batches for one rank: a disjoint share of the sequences, no duplicates.

    Sequences are sorted by length and dealt round-robin to ranks (balanced work; across the
    ranks every index appears exactly once). Each rank's batches hold neighbours in length
    order, so zero-padding to the longest is small. A batch is closed at ``batch_size``
    sequences, at ``max_frames`` padded frames, or before the next sequence would make padding
    more than ``max_padding`` of the batch's padded frames.

    Why the padding bound: padded frames cost as much convolution as real ones, so a batch of
    mixed lengths can be slower than the same sequences one at a time; at <= 10% waste the
    batch is faster (fewer, larger kernels) and the results are the same (the network is
    length-aware).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int = 8,
        rank: int = 0,
        world_size: int = 1,
        max_frames: int | None = None,
        max_padding: float = 0.1,
    ) -> None:
        if not 0.0 <= max_padding < 1.0:
            raise ConfigError(f"max_padding must lie in [0, 1), got {max_padding}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        lens = np.asarray(lengths, dtype=np.int64)
        order = np.argsort(-lens, kind="stable")
        mine = order[rank::world_size]
        self.batches: list[list[int]] = []
        current: list[int] = []
        real = 0
        for pos in mine:
            n = int(lens[pos])
            longest = int(lens[current[0]]) if current else n
            slots = longest * (len(current) + 1)
            too_many = max_frames is not None and slots > max_frames
            too_sparse = slots - (real + n) > max_padding * slots
            if current and (len(current) >= batch_size or too_many or too_sparse):
                self.batches.append(current)
                current, real = [], 0
            current.append(int(pos))
            real += n
        if current:
            self.batches.append(current)
        if not self.batches and len(order):
            # Fewer sequences than ranks: a rank with no share still evaluates one sequence, a
            # repeat that the index gather drops, so that every rank runs the evaluation loop
            # and joins its collectives (Lightning also refuses an empty loader on one rank).
            self.batches = [[int(order[0])]]

    def padding(self, lengths: Sequence[int]) -> float:
        """Fraction of this rank's padded frames that are padding."""
        lens = np.asarray(lengths, dtype=np.int64)
        slots = sum(int(lens[b].max()) * len(b) for b in self.batches)
        return 1.0 - sum(int(lens[b].sum()) for b in self.batches) / max(slots, 1)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
