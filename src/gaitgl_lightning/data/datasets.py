"""Torch datasets over a packed store: training clips and whole evaluation sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gaitgl_lightning.data.pretreatment import side_cut
from gaitgl_lightning.data.store import PackedStore
from gaitgl_lightning.errors import ConfigError

SAMPLE_TYPES = ("fixed_ordered", "fixed_unordered", "all")


def sample_frames(length: int, frames: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of one clip.

    ``fixed_ordered``: a contiguous window of ``frames`` from a random start, the sequence
    tiled first when it is shorter (OpenGait's ``fixed_ordered``); ``fixed_unordered``:
    ``frames`` random frames, with replacement only when the sequence is shorter; ``all``: every
    frame in order.
    """
    if mode == "all":
        return np.arange(length)
    if mode == "fixed_ordered":
        if length >= frames:
            start = int(rng.integers(0, length - frames + 1))
            return np.arange(start, start + frames)
        tiled = np.tile(np.arange(length), -(-frames // length))
        start = int(rng.integers(0, len(tiled) - frames + 1))
        return tiled[start : start + frames]
    if mode == "fixed_unordered":
        return rng.choice(length, size=frames, replace=length < frames)
    raise ConfigError(f"frame sampling {mode!r} is not one of {SAMPLE_TYPES}")


class TrainClips(Dataset[dict[str, Any]]):
    """Items are ``(position, item_seed)`` pairs from ``PKBatchSampler``."""

    def __init__(
        self,
        store: PackedStore,
        indices: Sequence[int],
        labels: Sequence[int],
        frames: int = 30,
        sample_type: str = "fixed_ordered",
    ) -> None:
        if sample_type not in SAMPLE_TYPES[:2]:
            raise ConfigError(f"train frame sampling must be one of {SAMPLE_TYPES[:2]}")
        self.store, self.indices, self.labels = store, list(indices), list(labels)
        self.frames, self.sample_type = int(frames), sample_type

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        pos, seed = item
        index = self.indices[pos]
        length = self.store.records[index].length
        rng = np.random.default_rng(seed)
        chosen = sample_frames(length, self.frames, self.sample_type, rng)
        if (
            len(chosen)
            and chosen[-1] - chosen[0] == len(chosen) - 1
            and bool((np.diff(chosen) == 1).all())
        ):
            # A contiguous window (fixed_ordered): a view of the store, copied once by collate.
            sils = self.store.clip(index, int(chosen[0]), len(chosen))
        else:
            sils = self.store.sequence(index)[chosen]
        return {"sils": side_cut(sils), "label": self.labels[pos], "index": pos}


class EvalSequences(Dataset[dict[str, Any]]):
    """Whole sequences (every frame, in order); ``index`` is the row of the eval metadata."""

    def __init__(
        self, store: PackedStore, indices: Sequence[int], max_frames: int | None = None
    ) -> None:
        self.store, self.indices, self.max_frames = store, list(indices), max_frames

    def __len__(self) -> int:
        return len(self.indices)

    def length(self, pos: int) -> int:
        n = self.store.records[self.indices[pos]].length
        return min(n, self.max_frames) if self.max_frames else n

    def __getitem__(self, pos: int) -> dict[str, Any]:
        seq = self.store.sequence(self.indices[pos])[: self.length(pos)]
        return {"sils": side_cut(np.asarray(seq)), "label": -1, "index": pos}


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Zero-pad clips at the end to the longest; ``lengths`` says how many frames are real."""
    lengths = [len(it["sils"]) for it in items]
    first = items[0]["sils"]
    out = np.zeros((len(items), max(lengths), *first.shape[1:]), dtype=np.uint8)
    for i, it in enumerate(items):
        out[i, : lengths[i]] = it["sils"]
    return {
        "sils": torch.from_numpy(out),
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "lengths": torch.tensor(lengths, dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }
