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
"""

from __future__ import annotations

import json
import os
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
        """Read the progress log and cut ``frames.u8.partial`` back to its last logged byte."""
        records: list[Record] = []
        log = self.root / PROGRESS
        if log.exists():
            for line in log.read_text().splitlines():
                try:
                    records.append(Record(**json.loads(line)))
                except (json.JSONDecodeError, TypeError):
                    break  # a torn last line: everything after it is redone
        frame_bytes = self.height * self.width
        end = (records[-1].offset + records[-1].length) if records else 0
        partial = self.root / PARTIAL
        if partial.exists():
            size = partial.stat().st_size
            if size < end * frame_bytes:
                raise StoreError(f"{partial}: shorter than {log} says; delete {self.root}")
            with open(partial, "r+b") as fh:
                fh.truncate(end * frame_bytes)
        elif records:
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
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise StoreError(f"{index_path}: not valid JSON ({err})") from err
        if index.get("format") != FORMAT:
            raise StoreError(f"{index_path}: unknown store format {index.get('format')!r}")
        self.dataset: str = index["dataset"]
        self.height, self.width = int(index["height"]), int(index["width"])
        self.partition: dict[str, list[str]] = index["partition"]
        self.skipped: dict[str, Any] = index.get("skipped", {})
        self.records = [
            Record(str(s), str(t), str(v), int(o), int(n)) for s, t, v, o, n in index["sequences"]
        ]
        total = sum(r.length for r in self.records)
        frames_path = self.root / FRAMES
        expected = total * self.height * self.width
        actual = frames_path.stat().st_size if frames_path.exists() else -1
        if actual != expected:
            raise StoreError(
                f"{frames_path}: {actual} bytes, index.json describes {expected}; the store is "
                "damaged: delete it and run prepare again"
            )
        self._path = frames_path
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

    def meta(self, indices: Iterable[int] | None = None) -> SequenceMeta:
        rows = [self.records[i] for i in indices] if indices is not None else self.records
        return SequenceMeta.from_lists(
            [r.subject for r in rows], [r.type for r in rows], [r.view for r in rows]
        )

    def select(self, subjects: Iterable[str]) -> list[int]:
        """Indices of the sequences of ``subjects`` (store order)."""
        wanted = {str(s) for s in subjects}
        return [i for i, r in enumerate(self.records) if r.subject in wanted]
