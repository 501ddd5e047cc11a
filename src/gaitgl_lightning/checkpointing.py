"""Writing and finding training checkpoints so that no failure loses more than the interval.

Why: checkpoints used to exist only after an evaluation completed, so a crash before or during
the first evaluation lost every step trained. Step checkpoints (``checkpoint_every`` steps, the
last ``checkpoint_keep`` kept, ``conf/callbacks/default.yaml``) are independent of evaluation;
every checkpoint is written to a temporary file and renamed (a kill mid-write leaves the
previous one intact); ``ckpt_path=last`` resumes from the newest checkpoint of the run dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from gaitgl_lightning.fileio import atomic_path

#: Where step checkpoints go, under the run's ``checkpoints/`` dir.
STEPS_DIR = "steps"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, through a temporary file renamed into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def newest_checkpoint(directory: str | Path) -> Path | None:
    """The most recently written ``*.ckpt`` under ``directory`` (step checkpoints, ``last.ckpt``,
    the best one, one saved when an evaluation failed); temporary files are ignored."""
    root = Path(directory)
    if not root.is_dir():
        return None
    found = [p for p in root.rglob("*.ckpt") if not p.name.startswith(".") and p.is_file()]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"))
