"""Submission files for benchmarks that hide their test labels (GREW).

GREW scores a CSV uploaded to its server: header ``videoId,rank1,...,rank20``; one row per test
probe: the probe's video id (its ``<seq>`` folder name) followed by the subject ids of its 20
nearest gallery sequences, nearest first, written as integers.

A gallery of fewer than 20 sequences (a subset of GREW) still gets its file, with the ranks that
exist (``rank1..rank<n>``) and a warning that the benchmark's server will not take it: the run
that evaluated it is kept rather than ended at its first evaluation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.evaluation.distance import DEFAULT_CHUNK_SIZE
from gaitgl_lightning.evaluation.results import EvalResult
from gaitgl_lightning.evaluation.retrieval import GREW_GALLERY, GREW_TOP, grew
from gaitgl_lightning.fileio import atomic_write_text

log = logging.getLogger(__name__)

PROBE_ID_COLUMNS = ("subjects", "types", "views")


def _format_id(value: str) -> str:
    """Subject ids as integers (``00123`` -> ``123``), as the benchmark's submissions write them.

    A non-numeric id (a distractor, which has no subject) is written as ``0``: no GREW subject
    has that id, so it counts as a wrong guess, which is what a distractor is.
    """
    s = str(value).strip()
    return str(int(s)) if s.isdigit() else "0"


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
    """Probe rows and the subjects of their ``top`` nearest gallery rows (no labels needed).

    The rows are those the ``grew`` protocol keeps: the hidden-label probes when there are any,
    else every probe.
    """
    result = grew(
        embeddings,
        meta,
        distance=distance,
        chunk_size=chunk_size,
        gallery_types=gallery_types,
        probe_types=probe_types,
        keep_top=top,
    )
    assert result.probe_ids is not None and result.top_gallery_ids is not None
    return result.probe_ids, result.top_gallery_ids


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
    readers store a GREW sequence's folder name in the view column, hence the default.
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
        if len(pidx) and int(np.max(pidx)) >= len(meta):
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
    ranks = min(int(top.shape[1]), GREW_TOP)
    if ranks < GREW_TOP:
        log.warning(
            "%s: the gallery has only %d sequences, so the file ranks %d gallery ids per probe; "
            "GREW's server needs %d: evaluate on the full GREW test set to submit",
            path,
            ranks,
            ranks,
            GREW_TOP,
        )
    video_ids = getattr(meta, probe_id_column)[pidx]
    header = "videoId," + ",".join(f"rank{k}" for k in range(1, ranks + 1))
    lines = [header]
    for vid, row in zip(video_ids, top[:, :ranks], strict=True):
        lines.append(",".join([str(vid), *(_format_id(s) for s in row)]))
    out = Path(path)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


WRITERS: dict[str, Callable[[EvalResult, Path, SequenceMeta], Path]] = {
    "grew": lambda result, path, meta: write_grew_submission(result, path, meta),
}


def write_submission(result: EvalResult, meta: SequenceMeta, directory: Path, step: int) -> Path:
    """Write the submission file ``result`` carries a ranking for, keyed by training step:
    ``<directory>/<format>-step<step>.csv``. Records the path in ``result.files``."""
    if result.submission is None:
        raise ValueError(f"the {result.protocol!r} result carries no submission ranking")
    if result.submission not in WRITERS:
        raise ValueError(f"unknown submission format {result.submission!r}")
    path = WRITERS[result.submission](
        result, Path(directory) / f"{result.submission}-step{step:06d}.csv", meta
    )
    result.files["submission"] = str(path)
    return path
