"""Torch datasets over a packed store: training clips and whole evaluation sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from gaitgl_lightning.data.pretreatment import side_cut
from gaitgl_lightning.data.store import PackedStore
from gaitgl_lightning.errors import ConfigError

SAMPLE_TYPES = ("fixed_ordered", "fixed_unordered", "all")


def sample_clip(length: int, frames: int, mode: str, rng: np.random.Generator) -> int | np.ndarray:
    """One clip of a sequence: the ``int`` start of the contiguous window ``start .. start +
    frames`` when the clip is one, else its frame indices (``sample_frames`` says which clips).

    Why: a window is one slice of the store (no gather, no check of the indices afterwards);
    the random draws are those of ``sample_frames``, so a seed gives the same frames either way.
    """
    if mode == "fixed_ordered" and length >= frames:
        return int(rng.integers(0, length - frames + 1))
    return sample_frames(length, frames, mode, rng)


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
        clip = sample_clip(length, self.frames, self.sample_type, np.random.default_rng(seed))
        if isinstance(clip, int):
            # A contiguous window (fixed_ordered): a view of the store, copied once by collate.
            sils = self.store.clip(index, clip, self.frames)
        else:
            sils = self.store.sequence(index)[clip]
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
    """Zero-pad clips at the end to the longest; ``lengths`` says how many frames are real.

    In a data-loader worker the batch is written straight into shared memory (as torch's own
    ``default_collate`` does): a batch in private memory is copied into shared memory again to
    reach the main process. Only the padding is zeroed, not the whole batch first.
    """
    lengths = [len(it["sils"]) for it in items]
    first = items[0]["sils"]
    shape = (len(items), max(lengths), *first.shape[1:])
    sils = _batch_tensor(shape)
    out = sils.numpy()
    for i, it in enumerate(items):
        copy_frames(out[i, : lengths[i]], it["sils"])
        if lengths[i] < shape[1]:
            out[i, lengths[i] :] = 0
    return {
        "sils": sils,
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "lengths": torch.tensor(lengths, dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in shared memory inside a data-loader worker."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def copy_frames(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for frame arrays of one dtype, a row of pixels at a time.

    Why: a side-cut clip is a strided view (rows of 44 of 64 bytes); numpy copies it element by
    element, while the same rows viewed as one 44-byte item each are copied by ``memcpy``
    (measured: 12 vs 16 us per 30-frame 64x44 clip). Any other pair falls back to numpy.
    """
    row = src.shape[-1] * src.itemsize if src.ndim else 0
    if (
        row
        and src.dtype == dst.dtype
        and src.shape == dst.shape
        and src.strides[-1] == src.itemsize
        and dst.strides[-1] == dst.itemsize
    ):
        dst.view(f"V{row}")[...] = src.view(f"V{row}")
    else:
        dst[...] = src
