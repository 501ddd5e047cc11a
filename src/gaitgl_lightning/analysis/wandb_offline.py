"""Read a W&B run straight from its ``run-<id>.wandb`` file: no account, no network, no server.

Why our own reader: an offline run (``WANDB_MODE=offline``, or no API key) is only a
transaction log until someone runs ``wandb sync``, and the ``wandb`` package no longer ships a
Python reader for it. The file is a LevelDB-style log (32 KiB blocks of checksummed chunks) of
protobuf ``Record`` messages, whose schema the ``wandb`` package does ship. We read the history
(every ``wandb.log`` call), the config and the final summary, which is all a notebook needs.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_IDENT, _MAGIC = b":W&B", 0xBEE1
_CHUNK = struct.Struct("<IHB")  # crc32 of (type byte + data), data length, chunk type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class WandbLogError(ValueError):
    """A ``.wandb`` file that is not a W&B transaction log, or is damaged mid-file."""


def _chunks(data: bytes, path: Path) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of every chunk; a chunk cut short at the end (live run) ends the scan."""
    pos = _HEADER.size
    while pos < len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK.size:  # the writer pads a block tail too short for a chunk header
            pos += room
            continue
        if pos + _CHUNK.size > len(data):
            warnings.warn(f"{path}: ends inside a record header (run still writing?)", stacklevel=3)
            return
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += room
            continue
        start, end = pos + _CHUNK.size, pos + _CHUNK.size + length
        if end > len(data):
            warnings.warn(f"{path}: last record is incomplete (run still writing?)", stacklevel=3)
            return
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise WandbLogError(f"{path}: checksum mismatch in the record at byte {pos}")
        yield kind, payload
        pos = end


def read_records(path: str | Path) -> Iterator[Any]:
    """Every protobuf ``Record`` of a ``.wandb`` file, in the order they were written."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise WandbLogError(f"{path}: too short to be a W&B run file")
    ident, magic, _version = _HEADER.unpack_from(data)
    if ident != _IDENT or magic != _MAGIC:
        raise WandbLogError(f"{path}: not a W&B run file (bad header {data[:7]!r})")
    pending: bytes | None = None
    for kind, payload in _chunks(data, path):
        if kind == _FULL:
            message = payload
        elif kind == _FIRST:
            pending = payload
            continue
        elif kind in (_MIDDLE, _LAST) and pending is not None:
            pending += payload
            if kind == _MIDDLE:
                continue
            message, pending = pending, None
        else:
            raise WandbLogError(f"{path}: unexpected chunk type {kind}")
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
        try:
            record.ParseFromString(message)
        except Exception as err:  # protobuf raises DecodeError, a bare Exception subclass
            raise WandbLogError(f"{path}: a record does not decode ({err})") from err
        yield record


def _item_key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else str(item.key)


def _decode(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except json.JSONDecodeError:
        return value_json


@dataclass
class WandbOfflineRun:
    """What one W&B run logged: its history rows, config and summary.

    ``history`` holds one dict per ``wandb.log`` call with its scalar values only (media and
    tables are left out); ``config`` the nested run config; ``summary`` the last value of each key.
    """

    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def _apply_config(self, config: Any) -> None:
        for item in config.update:
            key = _item_key(item)
            if key != "_wandb":
                self.config[key] = _decode(item.value_json)
        for item in config.remove:
            self.config.pop(_item_key(item), None)

    def _add_history(self, history: Any) -> None:
        row: dict[str, float] = {}
        for item in history.item:
            value = _decode(item.value_json)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            row[_item_key(item)] = float(value) if math.isfinite(value) else math.nan
        if row:
            self.history.append(row)


def is_wandb_run(path: str | Path) -> bool:
    """Whether ``path`` is a W&B run file or a run folder holding one."""
    path = Path(path)
    return path.suffix == ".wandb" or any(path.glob("run-*.wandb"))


def run_file(path: str | Path) -> Path:
    """The ``run-<id>.wandb`` file of ``path``: the file itself, an ``offline-run-*`` / ``run-*``
    folder, or a ``wandb`` folder holding exactly one run."""
    path = Path(path)
    if path.is_file():
        return path
    files = sorted(path.glob("run-*.wandb")) or sorted(path.glob("*run-*/run-*.wandb"))
    if len(files) == 1:
        return files[0]
    if not files:
        raise FileNotFoundError(f"{path}: no W&B run file (run-<id>.wandb) here")
    raise ValueError(
        f"{path}: holds {len(files)} W&B runs; pass one of them: "
        + ", ".join(str(f.parent.name) for f in files)
    )


def load_wandb_run(path: str | Path) -> WandbOfflineRun:
    """Read a W&B run (offline or synced; see ``run_file`` for what ``path`` may be)."""
    file = run_file(path)
    run = WandbOfflineRun(path=file.parent)
    for record in read_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run._add_history(record.history)
        elif kind == "run":
            info = record.run
            run.run_id, run.name = info.run_id, info.display_name
            run.group, run.job_type = info.run_group, info.job_type
            run._apply_config(info.config)
        elif kind == "config":
            run._apply_config(record.config)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_item_key(item)] = _decode(item.value_json)
            for item in record.summary.remove:
                run.summary.pop(_item_key(item), None)
    return run
