"""GREW test-set submission file: the top-20 gallery subjects of every probe.

GREW hides its test labels; the benchmark scores a CSV whose header is
``videoId,rank1,...,rank20`` and whose rows hold a probe's video id followed by the subject ids
of its 20 nearest gallery sequences, nearest first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.evaluation.distance import DEFAULT_CHUNK_SIZE, check_distance
from gaitgl_lightning.evaluation.protocols import (
    GREW_GALLERY,
    _check_inputs,
    _split,
    retrieval_scores,
)
from gaitgl_lightning.evaluation.results import EvalResult
from gaitgl_lightning.fileio import atomic_write_text

GREW_TOP = 20
PROBE_ID_COLUMNS = ("subjects", "types", "views")


def _format_id(value: str) -> str:
    """Subject ids are written as integers when they are numbers (``00123`` -> ``123``).

    The benchmark's reference submissions write integer ids; a non-numeric id is written as is.
    """
    s = str(value).strip()
    return str(int(s)) if s.isdigit() else s


def grew_top_ids(
    embeddings: Tensor,
    meta: SequenceMeta,
    *,
    distance: str = "euc_parts",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    gallery_types: Sequence[str] = GREW_GALLERY,
    probe_types: Sequence[str] | None = None,
    top: int = GREW_TOP,
) -> tuple[np.ndarray, np.ndarray]:
    """Probe rows and the subjects of their ``top`` nearest gallery rows (no labels needed)."""
    check_distance(distance)
    emb = _check_inputs("grew submission", embeddings, meta)
    pidx, gidx = _split("grew submission", meta, gallery_types, probe_types)
    scores = retrieval_scores(
        emb,
        emb,
        meta.subjects[pidx],
        meta.subjects[gidx],
        distance,
        chunk_size,
        probe_index=pidx,
        gallery_index=gidx,
        with_map=False,
        top_n=top,
    )
    return pidx, meta.subjects[gidx][scores["top"]]


def write_grew_submission(
    source: EvalResult | Tensor,
    path: str | os.PathLike[str],
    meta: SequenceMeta | None = None,
    *,
    probe_id_column: str = "views",
    distance: str = "euc_parts",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    gallery_types: Sequence[str] = GREW_GALLERY,
    probe_types: Sequence[str] | None = None,
) -> Path:
    """Write the GREW submission CSV atomically and return its path.

    ``source`` is either a ``grew`` result (which kept the top-20 per probe) or the embeddings
    ``[N, C, p]`` themselves (then the ranking is computed here, labels not needed). ``meta``
    names the probes: the video id of probe row ``i`` is ``meta.<probe_id_column>[i]``; the
    field's converted GREW test layout stores it in the view column, hence the default.
    """
    if meta is None:
        raise ValueError(
            "write_grew_submission: meta (the evaluation set's SequenceMeta) is required"
        )
    if probe_id_column not in PROBE_ID_COLUMNS:
        raise ValueError(
            f"write_grew_submission: probe_id_column must be one of {PROBE_ID_COLUMNS}, "
            f"got {probe_id_column!r}"
        )
    if isinstance(source, EvalResult):
        if source.probe_ids is None or source.top_gallery_ids is None:
            raise ValueError(
                f"write_grew_submission: the {source.protocol!r} result kept no ranking "
                "(use a 'grew' result with keep_top=20, or pass the embeddings)"
            )
        pidx, top = source.probe_ids, source.top_gallery_ids
        if int(np.max(pidx)) >= len(meta):
            raise ValueError("write_grew_submission: the result does not belong to this meta")
    else:
        pidx, top = grew_top_ids(
            source,
            meta,
            distance=distance,
            chunk_size=chunk_size,
            gallery_types=gallery_types,
            probe_types=probe_types,
        )
    if top.shape[1] < GREW_TOP:
        raise ValueError(
            f"write_grew_submission: only {top.shape[1]} gallery ids per probe, the benchmark "
            f"needs {GREW_TOP} (is the gallery smaller than {GREW_TOP}?)"
        )
    video_ids = getattr(meta, probe_id_column)[pidx]
    header = "videoId," + ",".join(f"rank{k}" for k in range(1, GREW_TOP + 1))
    lines = [header]
    for vid, row in zip(video_ids, top[:, :GREW_TOP], strict=True):
        lines.append(",".join([str(vid), *(_format_id(s) for s in row)]))
    out = Path(path)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
