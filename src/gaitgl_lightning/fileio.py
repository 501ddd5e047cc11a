"""Writing files so that nothing already written is lost or half-written.

Every writer of the package goes through here: bytes go to a temporary file in the target's
directory, are flushed to disk, and renamed over the target. A reader, or a crash, sees the old
file or the new one, never half of one. The file gets the mode a plain ``open`` would give it
(``0666`` less the user's umask): ``mkstemp`` creates it ``0600``, which would hide a colleague's
results or a shared data store from the group on a cluster. Every layer may import this module.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def plain_mode(path: str | Path) -> None:
    """Give ``path`` the mode a new file gets from ``open``: ``0666`` less the umask."""
    os.chmod(path, 0o666 & ~_umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; renamed over ``path`` on success.

    For writers that want a file name (``np.savez``, ``Figure.savefig``, ``torch.save``): on an
    exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        plain_mode(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Mapping[str, Any] | list[Any]) -> None:
    """Indented, key-sorted JSON written atomically (values JSON cannot hold become strings)."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
