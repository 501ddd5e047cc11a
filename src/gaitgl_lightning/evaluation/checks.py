"""Input checks and probe / gallery splitting shared by every protocol.

Public (no leading underscore) because the protocols of both families and the submission writer
use them: one place decides what a valid evaluation input is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.errors import ConfigError, EvaluationError
from gaitgl_lightning.evaluation.distance import as_parts

CURVE_MIN_RANK = 20  # the rank-k curve always extends to at least rank 20 (GREW's cut-off)


def check_inputs(protocol: str, embeddings: Tensor, meta: SequenceMeta) -> Tensor:
    """Shape, length and finiteness checks, so bad input fails here and not in a NaN."""
    if not isinstance(meta, SequenceMeta):
        raise ValueError(f"{protocol}: meta must be a SequenceMeta, got {type(meta).__name__}")
    emb = as_parts(embeddings, f"{protocol}: embeddings")
    if emb.shape[0] != len(meta):
        raise ValueError(
            f"{protocol}: {emb.shape[0]} embeddings but {len(meta)} metadata rows "
            "(row i of the metadata must describe embedding i)"
        )
    if emb.shape[0] == 0:
        raise ValueError(f"{protocol}: no embeddings to evaluate")
    if not bool(torch.isfinite(emb).all()):
        raise EvaluationError(f"{protocol}: embeddings contain NaN or infinite values")
    return emb


def lower(values: np.ndarray) -> np.ndarray:
    """Stripped, lower-case strings (type names compare case-insensitively)."""
    return np.char.lower(np.char.strip(np.asarray(values).astype(str)))


def type_mask(meta: SequenceMeta, types: Sequence[str]) -> np.ndarray:
    """Rows whose sequence type is one of ``types``."""
    wanted = {str(t).strip().lower() for t in types}
    return np.isin(lower(meta.types), sorted(wanted))


def sort_views(views: Iterable[str]) -> list[str]:
    """Numeric order when every view is a number (``000 < 018 < 090``), text order otherwise."""
    uniq = sorted({str(v) for v in views})
    try:
        return sorted(uniq, key=lambda v: (float(v), v))
    except ValueError:
        return uniq


def check_ranks(protocol: str, ranks: Sequence[int]) -> tuple[int, ...]:
    """The reported ranks k as positive ints."""
    out = tuple(int(k) for k in ranks)
    if not out or any(k < 1 for k in out):
        raise ConfigError(f"{protocol}: ranks must be positive integers, got {list(ranks)}")
    return out


def split_by_types(
    protocol: str,
    meta: SequenceMeta,
    gallery_types: Sequence[str] | None,
    probe_types: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of probe and gallery; probe defaults to every non-gallery row."""
    if gallery_types is None or len(gallery_types) == 0:
        raise ConfigError(f"{protocol}: gallery_types must name at least one sequence type")
    gmask = type_mask(meta, gallery_types)
    if probe_types is None:
        pmask = ~gmask
    else:
        overlap = {t.lower() for t in probe_types} & {t.lower() for t in gallery_types}
        if overlap:
            raise ConfigError(f"{protocol}: types {sorted(overlap)} are both probe and gallery")
        pmask = type_mask(meta, probe_types)
    present = sorted(set(lower(meta.types).tolist()))
    if not gmask.any():
        raise EvaluationError(
            f"{protocol}: empty gallery: no sequence has a gallery type {list(gallery_types)} "
            f"(types present: {present[:20]})"
        )
    if not pmask.any():
        raise EvaluationError(
            f"{protocol}: no probe: no sequence has a probe type "
            f"{list(probe_types) if probe_types is not None else '(any non-gallery type)'} "
            f"(types present: {present[:20]})"
        )
    return np.flatnonzero(pmask), np.flatnonzero(gmask)


def curve_ranks(ranks: Sequence[int], gallery_size: int) -> list[int]:
    """The ranks of the rank-k curve: 1 .. max(ranks, 20), capped by the gallery size."""
    top = max(max(ranks), CURVE_MIN_RANK)
    return list(range(1, max(1, min(top, gallery_size)) + 1))
