"""Silhouette pretreatment: the field's alignment of raw frames (GaitSet / OpenGait style).

Per frame: drop near-empty frames; crop to the rows that hold the body; resize to the target
height keeping the aspect ratio (bicubic); centre on the horizontal median of the silhouette
mass; cut a ``height x height`` window (zero-padding the sides when the body is near a border).
Training then removes ``height * 10 // 64`` columns on each side (64x64 -> 64x44, 128x128 ->
128x88, 32x32 -> 32x22), see ``side_cut``.

Frames that cannot be aligned are skipped with a reason instead of failing the sequence, and the
reasons are counted so that a user sees what was dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

#: OpenGait drops a frame whose pixel sum is at most 10000 (~40 pixels at 255).
DEFAULT_MIN_SUM = 10_000


class FrameSkipped(Exception):
    """A frame that pretreatment drops; ``reason`` is a short key for the skip report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: What a skip report counts, in the order it prints them. ``files`` (a frame file or pickle that
#: cannot be used: unreadable, foreign, wrongly shaped or typed) and ``layout`` (frames at the
#: wrong depth, stray files, empty folders) mean the copy of the dataset is damaged;
#: ``frames`` (blank or centreless frames the pretreatment drops, as OpenGait does) and
#: ``sequences`` (a sequence left with no usable frame, or very few) are what real data holds.
KINDS = ("files", "layout", "sequences", "frames")
#: The kinds that ``dataset.strict=true`` refuses.
DAMAGE = ("files", "layout")


@dataclass
class SkipReport:
    """Skipped items by kind and reason: counts, and every item named (for the report file)."""

    counts: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    items: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def add(self, kind: str, reason: str, where: str) -> None:
        """Count one skipped item of ``kind`` (one of ``KINDS``) and remember where it is."""
        self.counts[kind][reason] += 1
        self.items[kind].setdefault(reason, []).append(where)

    def add_frame(self, reason: str, where: str) -> None:
        self.add("frames", reason, where)

    def add_sequence(self, reason: str, where: str) -> None:
        self.add("sequences", reason, where)

    @property
    def frames(self) -> Counter[str]:
        return self.counts["frames"]

    @property
    def sequences(self) -> Counter[str]:
        return self.counts["sequences"]

    @property
    def damage(self) -> int:
        """How many damaged files and layout mistakes were met (what strict mode refuses)."""
        return sum(sum(self.counts[k].values()) for k in DAMAGE)

    def merge(self, other: SkipReport) -> None:
        for kind in KINDS:
            self.counts[kind].update(other.counts[kind])
            for reason, where in other.items[kind].items():
                self.items[kind].setdefault(reason, []).extend(where)

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts by kind and reason (what ``index.json`` keeps)."""
        return {k: dict(self.counts[k]) for k in KINDS if self.counts[k]}

    def to_dict(self) -> dict[str, dict[str, dict[str, object]]]:
        """Every skipped item by kind and reason (the report file)."""
        return {
            kind: {r: {"count": len(w), "items": w} for r, w in sorted(self.items[kind].items())}
            for kind in KINDS
            if self.items[kind]
        }

    def lines(self, examples: int = 1) -> list[str]:
        """Human-readable summary, one reason per line, naming the first ``examples`` items."""
        out = []
        for kind in KINDS:
            for reason, where in sorted(self.items[kind].items()):
                shown = ", ".join(where[:examples])
                more = f", ... ({len(where) - examples} more)" if len(where) > examples else ""
                out.append(f"{kind}: {reason}: {len(where)} ({shown}{more})")
        return out or ["nothing skipped"]


def align_frame(frame: np.ndarray, height: int = 64, min_sum: int = DEFAULT_MIN_SUM) -> np.ndarray:
    """Align one grayscale silhouette frame into a ``height x height`` uint8 image.

    Raises ``FrameSkipped`` with the reason when the frame is empty or has no centre.
    """
    if frame.ndim != 2:
        raise FrameSkipped(f"not a 2-D grayscale frame (shape {tuple(frame.shape)})")
    if int(frame.sum(dtype=np.int64)) <= min_sum:
        raise FrameSkipped("empty (pixel sum below threshold)")
    rows = np.flatnonzero(frame.any(axis=1))
    body = frame[rows[0] : rows[-1] + 1]
    h, w = body.shape
    new_w = max(1, int(height * w / h))
    resized = np.asarray(
        Image.fromarray(body.astype(np.uint8)).resize((new_w, height), Image.Resampling.BICUBIC)
    )
    col_mass = resized.sum(axis=0, dtype=np.int64)
    total = int(col_mass.sum())
    if total == 0:
        raise FrameSkipped("no centre (empty after resize)")
    x_center = int(np.argmax(np.cumsum(col_mass) > total / 2))
    if x_center == 0:
        # OpenGait drops a frame whose median column is 0 (`if not x_center`).
        raise FrameSkipped("no centre (median column at the border)")
    half = height // 2
    left = x_center - half
    right = x_center + half
    if left <= 0 or right >= new_w:
        resized = np.pad(resized, ((0, 0), (half, half)))
        left += half
        right += half
    return np.ascontiguousarray(resized[:, left:right], dtype=np.uint8)


def align_sequence(
    frames: list[np.ndarray] | np.ndarray,
    height: int = 64,
    min_sum: int = DEFAULT_MIN_SUM,
    where: str = "",
    report: SkipReport | None = None,
) -> np.ndarray:
    """Align every frame; skipped frames are counted in ``report``. Returns uint8 [T, h, h]."""
    out = []
    for i, frame in enumerate(frames):
        try:
            out.append(align_frame(np.asarray(frame), height, min_sum))
        except FrameSkipped as skip:
            if report is not None:
                report.add_frame(skip.reason, f"{where}#{i}")
    if not out:
        return np.zeros((0, height, height), dtype=np.uint8)
    return np.stack(out)


def side_cut_width(width: int) -> int:
    """Columns removed on each side for training (10 of 64, as OpenGait's transform)."""
    return width * 10 // 64


def side_cut(frames: np.ndarray) -> np.ndarray:
    """[..., H, W] -> [..., H, W - 2 * cut]: 64x64 -> 64x44, 128x128 -> 128x88."""
    cut = side_cut_width(frames.shape[-1])
    return frames[..., cut : frames.shape[-1] - cut] if cut else frames
