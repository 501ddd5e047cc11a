"""Evaluation: gait-recognition protocols on embeddings + ``SequenceMeta`` (torch / numpy only).

``evaluate(name, embeddings, meta, **options)`` is the entry point; ``GaitEvaluation`` (a
torchmetrics ``Metric``) collects the embeddings of every process by dataset index and runs it. Cross-view protocols live in ``cross_view``,
retrieval protocols in ``retrieval``, the registry in ``registry``; ``docs/evaluation.md`` says
what each protocol computes and ``docs/extending.md`` how to add one.
"""

from __future__ import annotations

from gaitgl_lightning.evaluation.cross_view import OUMVLP, CasiaB, casia_b, oumvlp
from gaitgl_lightning.evaluation.distance import DISTANCES, pairwise_distance
from gaitgl_lightning.evaluation.metric import GaitEvaluation
from gaitgl_lightning.evaluation.registry import PROTOCOLS, Protocol, evaluate
from gaitgl_lightning.evaluation.results import EvalResult, ViewTable
from gaitgl_lightning.evaluation.retrieval import Gait3D, Generic, Grew, gait3d, generic, grew
from gaitgl_lightning.evaluation.submission import write_grew_submission, write_submission

__all__ = [
    "DISTANCES",
    "OUMVLP",
    "PROTOCOLS",
    "CasiaB",
    "EvalResult",
    "Gait3D",
    "GaitEvaluation",
    "Generic",
    "Grew",
    "Protocol",
    "ViewTable",
    "casia_b",
    "evaluate",
    "gait3d",
    "generic",
    "grew",
    "oumvlp",
    "pairwise_distance",
    "write_grew_submission",
    "write_submission",
]
