"""``GaitEvaluation``: an evaluation protocol as a torchmetrics ``Metric``.

Every process ``update``s it with the embeddings of its evaluation batches and their dataset
indices. Both states are lists concatenated across processes (``dist_reduce_fx="cat"``), so
torchmetrics' sync does the all-gather, shards of uneven size included. Why the indices: a
distributed evaluation sampler pads shards with repeated sequences and gives processes shares
of different sizes, so concatenating what the processes computed would count some sequences
twice, in an order that depends on the number of processes. ``compute`` drops repeated indices
(keeping the first), sorts the rows by index, checks that every sequence of the evaluation set
is there exactly once, and runs the protocol: the matrix, hence every number, is the same on
one process, on CPU processes (gloo) and on GPUs (nccl).

Every process must take part in the sync, and must have updated at least once when there are
several (torchmetrics stands in an untyped empty tensor for a process without data); both
evaluation samplers guarantee that by repeating a sequence rather than leaving a share empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.errors import EvaluationError
from gaitgl_lightning.evaluation.registry import evaluate
from gaitgl_lightning.evaluation.results import EvalResult


def dedup_sort_by_index(embeddings: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Sort rows by index and keep the first row of every repeated index."""
    if index.numel() == 0:
        return embeddings, index
    order = torch.sort(index, stable=True).indices
    idx = index[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    return embeddings[order[keep]], idx[keep]


class GaitEvaluation(Metric):
    """Embeddings keyed by dataset index, evaluated by a registered protocol.

    Args:
        meta: the evaluation set's metadata; row ``i`` describes dataset index ``i``.
        protocol: ``{"name": <a key of PROTOCOLS>, **options}`` (a dataset config's
            ``protocol:`` node).
        **kwargs: torchmetrics' ``Metric`` options (e.g. ``sync_on_compute=False`` for a
            caller that syncs on every process and computes on one).
    """

    full_state_update = False
    embeddings: list[Tensor] | Tensor
    index: list[Tensor] | Tensor

    def __init__(self, meta: SequenceMeta, protocol: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        options = dict(protocol)
        self.protocol_name = str(options.pop("name"))
        self.options = options
        self.meta = meta
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, index: Tensor) -> None:
        """Add a batch: ``embeddings [n, ...]`` of the sequences with dataset indices ``index [n]``."""
        index = index.detach().reshape(-1).to(torch.long)
        if embeddings.dim() == 0 or embeddings.shape[0] != index.shape[0]:
            raise ValueError(
                f"GaitEvaluation.update: {tuple(embeddings.shape)} embeddings for "
                f"{index.shape[0]} indices"
            )
        assert isinstance(self.embeddings, list) and isinstance(self.index, list)
        self.embeddings.append(embeddings.detach().float())
        self.index.append(index.to(embeddings.device))

    def reset(self) -> None:
        """Forget every update, also when a sync was left in place (a compute that raised)."""
        if self._is_synced:
            self.unsync()
        super().reset()

    def gathered(self) -> tuple[Tensor, Tensor]:
        """The embeddings in dataset order, one row per sequence of ``meta``, and their indices
        (after a sync: of every process). Raises ``EvaluationError`` when a sequence is missing."""
        if isinstance(self.index, list) and not self.index:
            raise EvaluationError("the evaluation set gave no embeddings (empty?)")
        embeddings, index = dedup_sort_by_index(
            dim_zero_cat(self.embeddings), dim_zero_cat(self.index).to(torch.long)
        )
        expected = len(self.meta)
        if len(index) != expected or (expected and (index[0] != 0 or index[-1] != expected - 1)):
            raise EvaluationError(
                f"evaluation gathered {len(index)} distinct sequences (indices "
                f"{_span(index)}) but the evaluation set has {expected} (0..{expected - 1}): "
                "some processes dropped sequences, or the metadata is not this set's"
            )
        return embeddings, index

    def compute(self) -> EvalResult:
        """Run the protocol on the gathered embeddings, on CPU copies."""
        embeddings, _ = self.gathered()
        return evaluate(self.protocol_name, embeddings.cpu(), self.meta, **self.options)


def _span(index: Tensor) -> str:
    return f"{int(index[0])}..{int(index[-1])}" if index.numel() else "none"
