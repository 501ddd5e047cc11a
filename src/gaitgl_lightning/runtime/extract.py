"""``task=extract``: embeddings for a user's own silhouettes, optionally ranked against a gallery.

Input is a folder of silhouette PNGs of any size: either one sequence (PNGs directly inside) or
one sub-folder per sequence. Frames go through the package's pretreatment (crop, resize, centre)
and side cut, so they match what the network was trained on. Segmentation is out of scope: the
PNGs must already be binary or grey silhouettes (white person on black).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gaitgl_lightning.data.formats import DataFormatError, read_png
from gaitgl_lightning.data.pretreatment import SkipReport, align_sequence, side_cut
from gaitgl_lightning.fileio import atomic_write_bytes
from gaitgl_lightning.models import silhouettes_to_input


def sequence_folders(root: Path) -> list[Path]:
    """The sequences under ``root``: itself if it holds PNGs, else every sub-folder with PNGs."""
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder of silhouette PNGs")
    if any(root.glob("*.png")):
        return [root]
    folders = sorted(p for p in root.rglob("*") if p.is_dir() and any(p.glob("*.png")))
    if not folders:
        raise DataFormatError(
            f"{root}: no PNG files found (expected <folder>/*.png or <folder>/<seq>/*.png)"
        )
    return folders


def load_sequence(folder: Path, height: int, report: SkipReport) -> np.ndarray:
    """Aligned, side-cut uint8 frames [T, height, width] of one folder."""
    frames = [read_png(p) for p in sorted(folder.glob("*.png"))]
    aligned = align_sequence(frames, height, where=str(folder), report=report)
    if len(aligned) == 0:
        raise DataFormatError(f"{folder}: no usable silhouette frame ({'; '.join(report.lines())})")
    return side_cut(aligned)


@torch.no_grad()
def embed_folders(net: nn.Module, folders: list[Path], height: int) -> torch.Tensor:
    """Embeddings [N, C, parts] of every folder (one sequence at a time: lengths differ)."""
    net.eval()
    report = SkipReport()
    out = []
    for folder in folders:
        sils = torch.from_numpy(load_sequence(folder, height, report))
        out.append(net(silhouettes_to_input(sils[None])).embeddings[0])
    return torch.stack(out)


def save_npz(path: Path, **arrays: Any) -> None:
    """``np.savez`` written atomically (temporary file, then rename)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def rank_against(
    probe: torch.Tensor, gallery: torch.Tensor, top: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of the ``top`` nearest gallery sequences per probe (mean per-part
    Euclidean distance, OpenGait's metric)."""
    from gaitgl_lightning.evaluation import pairwise_distance

    dist = pairwise_distance(probe, gallery, "euc_parts")
    k = min(top, gallery.shape[0])
    values, index = torch.topk(dist, k, dim=1, largest=False)
    return index.numpy(), values.numpy()
