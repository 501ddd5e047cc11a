"""The packed store: every aligned frame of a dataset in one uint8 file, read by memory map.

Layout of a store directory::

    frames.u8     raw uint8 frames, [total_frames, height, width], C order
    index.json    {"format", "dataset", "height", "width", "partition", "skipped",
                   "sequences": [[subject, type, view, offset, length], ...]}

Why: training reads random sequences thousands of times per second; one memory-mapped file
turns each read into a slice (no file open, no unpickling), and the OS page cache shares it
between data-loader workers and ranks.

Writing is crash-safe: frames go to ``frames.u8.partial`` and every finished sequence is logged
in ``progress.jsonl`` after its bytes are flushed; an interrupted build resumes from the log
(truncating any half-written tail), and ``index.json`` plus the final rename happen last, so a
directory with ``index.json`` is always complete.

Opening checks every record against the data file (offset, length, frame shape): a store damaged
after the fact (an index cut short, a data file shorter than its index, a record past the end)
raises ``StoreDamaged`` naming the file and the damage, never a shape error later in training.
``salvage`` turns a damaged store back into a resumable build that keeps every intact record, so
``prepare`` rewrites only what is damaged or missing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.errors import StoreError
from gaitgl_lightning.fileio import atomic_write_text

FORMAT = "gaitgl-packed-v1"
FRAMES = "frames.u8"
INDEX = "index.json"
PARTIAL = "frames.u8.partial"
PROGRESS = "progress.jsonl"


class StoreDamaged(StoreError):
    """A finished store whose files disagree (the message names the file and the damage)."""


@dataclass(frozen=True)
class Record:
    """One sequence of the store."""

    subject: str
    type: str
    view: str
    offset: int
    length: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.subject, self.type, self.view)


class StoreWriter:
    """Append aligned sequences to a store under construction; resumable after a crash."""

    def __init__(self, root: str | Path, height: int, width: int) -> None:
        self.root = Path(root)
        self.height, self.width = int(height), int(width)
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / INDEX).exists():
            raise StoreError(f"{self.root / INDEX}: the store is already complete")
        self.records: list[Record] = self._recover()
        self._frames = open(self.root / PARTIAL, "ab")  # noqa: SIM115 - closed in finish()
        self._progress = open(self.root / PROGRESS, "a")  # noqa: SIM115

    def _recover(self) -> list[Record]:
        """Read the progress log and cut ``frames.u8.partial`` back to its last logged byte
        (records the data no longer holds are dropped: they are redone)."""
        records: list[Record] = []
        log = self.root / PROGRESS
        if log.exists():
            for line in log.read_text().splitlines():
                try:
                    records.append(Record(**json.loads(line)))
                except (json.JSONDecodeError, TypeError):
                    break  # a torn last line: everything after it is redone
        partial = self.root / PARTIAL
        if not partial.exists() and (self.root / FRAMES).exists():
            os.replace(self.root / FRAMES, partial)  # a salvage stopped before its last step
        frame_bytes = self.height * self.width
        if partial.exists():
            frames = partial.stat().st_size // frame_bytes
            end = 0
            kept = []
            for r in records:
                if r.offset != end or r.offset + r.length > frames:
                    break
                kept.append(r)
                end = r.offset + r.length
            records = kept
            with open(partial, "r+b") as fh:
                fh.truncate(end * frame_bytes)
        else:
            records = []
        atomic_write_text(log, "".join(json.dumps(r.__dict__) + "\n" for r in records))
        return records

    @property
    def done(self) -> set[tuple[str, str, str]]:
        """Keys of the sequences already written (a resumed build skips them)."""
        return {r.key for r in self.records}

    def append(self, subject: str, seq_type: str, view: str, frames: np.ndarray) -> None:
        """Write one aligned sequence (uint8 [T, height, width], T >= 1)."""
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width):
            raise StoreError(
                f"{subject}/{seq_type}/{view}: frames must be uint8 [T, {self.height}, "
                f"{self.width}], got {frames.dtype} {tuple(frames.shape)}"
            )
        if len(frames) == 0:
            raise StoreError(f"{subject}/{seq_type}/{view}: empty sequence")
        offset = (self.records[-1].offset + self.records[-1].length) if self.records else 0
        self._frames.write(np.ascontiguousarray(frames).tobytes())
        self._frames.flush()
        os.fsync(self._frames.fileno())
        record = Record(str(subject), str(seq_type), str(view), offset, len(frames))
        self._progress.write(json.dumps(record.__dict__) + "\n")
        self._progress.flush()
        self.records.append(record)

    def close(self) -> None:
        """Stop writing without finishing: the build stays resumable."""
        self._frames.close()
        self._progress.close()

    def finish(
        self,
        dataset: str,
        partition: Mapping[str, list[str]],
        skipped: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``index.json`` atomically and rename the frames into place."""
        self.close()
        if not self.records:
            raise StoreError(f"{self.root}: no sequence was written (nothing usable in the source)")
        ordered = sorted(self.records, key=lambda r: r.key)
        index = {
            "format": FORMAT,
            "dataset": dataset,
            "height": self.height,
            "width": self.width,
            "partition": {k: list(v) for k, v in partition.items()},
            "skipped": dict(skipped or {}),
            "sequences": [[r.subject, r.type, r.view, r.offset, r.length] for r in ordered],
        }
        os.replace(self.root / PARTIAL, self.root / FRAMES)
        atomic_write_text(self.root / INDEX, json.dumps(index))
        (self.root / PROGRESS).unlink(missing_ok=True)
        return self.root


class PackedStore:
    """Read-only view of a finished store. Opening maps the file; nothing is read eagerly."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index_path = self.root / INDEX
        if not index_path.is_file():
            hint = (
                " (an interrupted build: run prepare again to resume)"
                if (self.root / PARTIAL).exists()
                else ""
            )
            raise StoreError(f"{index_path}: no packed store here{hint}")
        index = _read_index(index_path)
        if index.get("format") != FORMAT:
            raise StoreError(f"{index_path}: unknown store format {index.get('format')!r}")
        try:
            self.dataset: str = str(index["dataset"])
            self.height, self.width = int(index["height"]), int(index["width"])
            self.partition: dict[str, list[str]] = dict(index["partition"])
            self.skipped: dict[str, Any] = index.get("skipped", {})
            self.records = [
                Record(str(s), str(t), str(v), int(o), int(n))
                for s, t, v, o, n in index["sequences"]
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise StoreDamaged(
                f"{index_path}: malformed index ({type(err).__name__}: {err}); {_REPAIR}"
            ) from err
        self._path = self.root / FRAMES
        _check_records(self.records, self._path, self.height, self.width)
        self._frames: np.ndarray | None = None

    @property
    def frames(self) -> np.ndarray:
        """The memory map, opened lazily (so the store pickles cheaply into worker processes)."""
        if self._frames is None:
            total = sum(r.length for r in self.records)
            mapped = np.memmap(
                self._path, dtype=np.uint8, mode="r", shape=(total, self.height, self.width)
            )
            # A plain ndarray view of the map: slicing a np.memmap subclass costs several
            # microseconds of bookkeeping per read, a plain view does not.
            self._frames = mapped.view(np.ndarray)
        return self._frames

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames"] = None
        return state

    def __len__(self) -> int:
        return len(self.records)

    def sequence(self, i: int) -> np.ndarray:
        """Frames of sequence ``i``: a read-only uint8 view [T, H, W]."""
        r = self.records[i]
        return self.frames[r.offset : r.offset + r.length]

    def clip(self, i: int, start: int, count: int) -> np.ndarray:
        """Frames ``start .. start + count`` of sequence ``i``: a read-only view, no copy.

        Why: a training clip of contiguous frames is one slice of the map; the batch collation
        then copies it once (a gather by frame indices would copy it twice).
        """
        r = self.records[i]
        if start < 0 or count < 0 or start + count > r.length:
            raise IndexError(
                f"clip [{start}, {start + count}) outside sequence {i} of {r.length} frames"
            )
        first = r.offset + start
        return self.frames[first : first + count]

    def meta(self, indices: Iterable[int] | None = None) -> SequenceMeta:
        rows = [self.records[i] for i in indices] if indices is not None else self.records
        return SequenceMeta.from_lists(
            [r.subject for r in rows], [r.type for r in rows], [r.view for r in rows]
        )

    def select(self, subjects: Iterable[str]) -> list[int]:
        """Indices of the sequences of ``subjects`` (store order)."""
        wanted = {str(s) for s in subjects}
        return [i for i, r in enumerate(self.records) if r.subject in wanted]


# ------------------------------------------------------------------------------ integrity
_REPAIR = "the store is damaged: run task=prepare with dataset.source=<the raw data> to repair it"


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreDamaged(f"{path}: cut short or not valid JSON ({err}); {_REPAIR}") from err
    if not isinstance(index, dict):
        raise StoreDamaged(f"{path}: not a JSON object; {_REPAIR}")
    return index


def _bad_records(records: list[Record], frames: int) -> np.ndarray:
    """A mask of records that are out of bounds or overlap an earlier one (by offset)."""
    offset = np.fromiter((r.offset for r in records), np.int64, len(records))
    length = np.fromiter((r.length for r in records), np.int64, len(records))
    bad = (offset < 0) | (length < 1) | (offset + length > frames)
    order = np.argsort(offset, kind="stable")
    end = 0
    for i in order:  # overlaps: a record starting before the previous intact one ends
        if bad[i]:
            continue
        if offset[i] < end:
            bad[i] = True
        else:
            end = int(offset[i] + length[i])
    return bad


def _check_records(records: list[Record], path: Path, height: int, width: int) -> None:
    """Every record inside the data file, no two overlapping, the file exactly their frames."""
    if height < 1 or width < 1:
        raise StoreDamaged(f"{path.parent / INDEX}: frame shape {height}x{width}; {_REPAIR}")
    if not path.is_file():
        raise StoreDamaged(f"{path}: missing; {_REPAIR}")
    size, frame_bytes = path.stat().st_size, height * width
    frames = size // frame_bytes
    total = sum(r.length for r in records)
    if frames < total:
        raise StoreDamaged(
            f"{path}: {size} bytes ({frames} frames of {height}x{width}), {INDEX} describes "
            f"{total} frames: the data file is cut short; {_REPAIR}"
        )
    bad = _bad_records(records, frames)
    if bad.any():
        first = records[int(np.argmax(bad))]
        raise StoreDamaged(
            f"{path.parent / INDEX}: {int(bad.sum())} record(s) outside {path.name} "
            f"({frames} frames) or overlapping, e.g. {'/'.join(first.key)} at frames "
            f"[{first.offset}, {first.offset + first.length}); {_REPAIR}"
        )
    if size != total * frame_bytes:
        raise StoreDamaged(
            f"{path}: {size} bytes, {INDEX} describes {total * frame_bytes}; {_REPAIR}"
        )


_RECORD = re.compile(r'\[\s*"([^"]*)",\s*"([^"]*)",\s*"([^"]*)",\s*(-?\d+),\s*(-?\d+)\s*\]')
_SHAPE = re.compile(r'"height":\s*(\d+),\s*"width":\s*(\d+)')


def _index_records(path: Path) -> tuple[int, int, list[Record]] | None:
    """Frame shape and records of an index, read leniently (an index cut short keeps the
    records written before the cut); None when not even the frame shape is left."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    shape = _SHAPE.search(text)
    if shape is None:
        return None
    start = text.find('"sequences"')
    found = _RECORD.findall(text[start:]) if start >= 0 else []
    records = [Record(s, t, v, int(o), int(n)) for s, t, v, o, n in found]
    return int(shape.group(1)), int(shape.group(2)), records


def salvage(root: str | Path) -> int:
    """Turn a damaged finished store into a resumable build keeping every intact record.

    Intact records (inside the data file, not overlapping) are kept; when they are the data
    file's first frames in order the file is reused as it is, else their frames are copied into
    a new file. Each step leaves a state that the next ``salvage`` or ``StoreWriter`` resumes
    from. Returns the number of records kept (the build then redoes the others).
    """
    root = Path(root)
    frames_path, index_path = root / FRAMES, root / INDEX
    parsed = _index_records(index_path)
    if parsed is None or not frames_path.is_file():
        for name in (PROGRESS, PARTIAL, FRAMES, INDEX):
            (root / name).unlink(missing_ok=True)
        return 0
    height, width, records = parsed
    frame_bytes = height * width
    frames = frames_path.stat().st_size // frame_bytes
    bad = _bad_records(records, frames) if records else np.zeros(0, bool)
    kept = sorted((r for r, b in zip(records, bad, strict=True) if not b), key=lambda r: r.offset)
    contiguous = all(
        r.offset == (p.offset + p.length if p else 0)
        for p, r in zip([None, *kept[:-1]], kept, strict=True)
    )
    if contiguous:
        new = kept
    else:  # copy the intact records' frames, in offset order, into a fresh data file
        new, end = [], 0
        with open(frames_path, "rb") as src, open(root / PARTIAL, "wb") as dst:
            for r in kept:
                src.seek(r.offset * frame_bytes)
                dst.write(src.read(r.length * frame_bytes))
                new.append(Record(r.subject, r.type, r.view, end, r.length))
                end += r.length
            dst.flush()
            os.fsync(dst.fileno())
    atomic_write_text(root / PROGRESS, "".join(json.dumps(r.__dict__) + "\n" for r in new))
    index_path.unlink()
    if contiguous:
        os.replace(frames_path, root / PARTIAL)  # StoreWriter cuts off what follows the records
    else:
        frames_path.unlink()
    return len(new)
