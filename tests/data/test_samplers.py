"""P x K sampler properties and the evaluation shard sampler."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from gaitgl_lightning.data.datasets import collate, sample_frames
from gaitgl_lightning.data.samplers import EvalShardSampler, PKBatchSampler

# 10 identities with 1..10 sequences each (identity i has i+1 sequences).
LABELS = [i for i in range(10) for _ in range(i + 1)]


def _take(sampler: PKBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    return list(itertools.islice(iter(sampler), n))


def test_batches_hold_p_ids_with_k_sequences_each() -> None:
    for batch in _take(PKBatchSampler(LABELS, p=4, k=3, seed=1), 50):
        labels = Counter(LABELS[pos] for pos, _ in batch)
        assert len(labels) == 4 and set(labels.values()) == {3}
        by_id: dict[int, list[int]] = {}
        for pos, _ in batch:
            by_id.setdefault(LABELS[pos], []).append(pos)
        for ident, positions in by_id.items():
            if ident + 1 >= 3:  # enough sequences: drawn without replacement
                assert len(set(positions)) == 3


def test_two_ranks_are_disjoint_and_complete() -> None:
    full = _take(PKBatchSampler(LABELS, 4, 4, seed=7), 20)
    r0 = _take(PKBatchSampler(LABELS, 4, 4, seed=7, rank=0, world_size=2), 20)
    r1 = _take(PKBatchSampler(LABELS, 4, 4, seed=7, rank=1, world_size=2), 20)
    for whole, a, b in zip(full, r0, r1, strict=True):
        assert len(a) == len(b) == 8
        assert sorted(a + b) == sorted(whole)
        # disjoint as slots of the global batch (the same sequence may be drawn twice for an
        # identity with fewer than K sequences, but never as the same slot)
        assert len(a) + len(b) == len(whole)


def test_resume_continues_the_same_stream_and_seeds_differ() -> None:
    stream = _take(PKBatchSampler(LABELS, 3, 2, seed=5), 12)
    resumed = _take(PKBatchSampler(LABELS, 3, 2, seed=5, start_step=6), 6)
    assert resumed == stream[6:]
    s = PKBatchSampler(LABELS, 3, 2, seed=5)
    _take(s, 4)
    restored = PKBatchSampler(LABELS, 3, 2, seed=0)
    restored.load_state_dict(s.state_dict())
    assert _take(restored, 3) == stream[4:7]
    assert _take(PKBatchSampler(LABELS, 3, 2, seed=6), 12) != stream


@pytest.mark.parametrize(
    ("p", "k", "world", "message"),
    [
        (11, 2, 1, "set dataset.P <= 10"),
        (3, 3, 2, "not divisible by the world size"),
        (1, 4, 1, "P >= 2"),
    ],
)
def test_bad_settings_fail_with_what_to_change(p: int, k: int, world: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PKBatchSampler(LABELS, p, k, world_size=world)


def test_eval_shards_are_disjoint_complete_and_length_sorted() -> None:
    lengths = np.random.default_rng(0).integers(5, 80, 37).tolist()
    shards = [list(EvalShardSampler(lengths, 4, r, 3)) for r in range(3)]
    seen = [i for shard in shards for batch in shard for i in batch]
    assert sorted(seen) == list(range(37))
    for shard in shards:
        for batch in shard:
            assert len(batch) <= 4
            assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_batches_waste_at_most_the_padding_bound(world: int) -> None:
    """Every batch (so the whole pass) pads at most 10% of its frames; each index once."""
    lengths = np.random.default_rng(1).integers(1, 400, 251).tolist()
    shards = [EvalShardSampler(lengths, 16, r, world, max_padding=0.1) for r in range(world)]
    seen = sorted(i for s in shards for b in s for i in b)
    assert seen == list(range(251))
    for shard in shards:
        assert shard.padding(lengths) <= 0.1
        for batch in shard:
            lens = [lengths[i] for i in batch]
            assert len(batch) == 1 or 1 - sum(lens) / (max(lens) * len(lens)) <= 0.1
    # On few, spread lengths the bound is what keeps the waste low.
    few = np.random.default_rng(2).integers(1, 400, 40).tolist()
    assert EvalShardSampler(few, 16, max_padding=0.99).padding(few) > 0.1
    assert EvalShardSampler(few, 16).padding(few) <= 0.1
    with pytest.raises(ValueError, match="max_padding"):
        EvalShardSampler(lengths, 4, max_padding=1.0)


def test_frame_sampling_and_collate() -> None:
    rng = np.random.default_rng(0)
    window = sample_frames(50, 30, "fixed_ordered", rng)
    assert len(window) == 30 and np.all(np.diff(window) == 1) and window[-1] < 50
    short = sample_frames(7, 30, "fixed_ordered", rng)
    assert len(short) == 30 and set(short) == set(range(7))  # tiled, in order modulo 7
    assert np.all((np.diff(short) == 1) | (np.diff(short) == -6))
    assert sorted(sample_frames(5, 5, "fixed_unordered", rng)) == list(range(5))
    batch = collate(
        [
            {"sils": np.ones((3, 4, 2), np.uint8), "label": 1, "index": 0},
            {"sils": np.ones((5, 4, 2), np.uint8), "label": 2, "index": 1},
        ]
    )
    assert batch["sils"].shape == (2, 5, 4, 2) and batch["lengths"].tolist() == [3, 5]
    assert batch["sils"][0, 3:].sum() == 0
