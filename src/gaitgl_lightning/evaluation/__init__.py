"""Evaluation: gait-recognition protocols on embeddings + ``SequenceMeta`` (torch / numpy only).

``evaluate(name, embeddings, meta, **options)`` is the entry point; ``gather_by_index`` brings
the embeddings of every process together first. See ``docs/evaluation.md`` for what each
protocol computes.
"""

from __future__ import annotations

from gaitgl_lightning.evaluation.distance import DISTANCES, pairwise_distance
from gaitgl_lightning.evaluation.gather import gather_by_index
from gaitgl_lightning.evaluation.protocols import (
    PROTOCOLS,
    casia_b,
    evaluate,
    gait3d,
    generic,
    grew,
    oumvlp,
)
from gaitgl_lightning.evaluation.results import EvalResult, ViewTable
from gaitgl_lightning.evaluation.submission import write_grew_submission

__all__ = [
    "DISTANCES",
    "PROTOCOLS",
    "EvalResult",
    "ViewTable",
    "casia_b",
    "evaluate",
    "gait3d",
    "gather_by_index",
    "generic",
    "grew",
    "oumvlp",
    "pairwise_distance",
    "write_grew_submission",
]
