"""The real command line with one injected fault, for the DDP failure tests.

Lightning's DDP starts rank 1 by running this same script again, so the fault is injected in
every rank; ``GAITGL_TEST_FAULT`` says which: ``protocol`` (rank 0's protocol raises a family
error in the metric's compute), ``eval_forward_rank1`` / ``train_forward_rank1`` (rank 1's forward pass raises an
unexpected error, as a CUDA out-of-memory would), ``no_share_rank1`` (rank 0 gets every
evaluation batch, rank 1 none), ``loader_rank1`` (a data-loader worker of rank 1 raises on its
third batch), ``collective_rank1`` (from step 2 rank 1's forward raises while rank 0's enters an
all-gather first, as SyncBN's forward does: rank 0 is then held in a collective rank 1 never
enters).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from gaitgl_lightning.data import datasets, samplers
from gaitgl_lightning.errors import EvaluationError
from gaitgl_lightning.evaluation import metric
from gaitgl_lightning.module import GaitGLModule

FAULT = os.environ["GAITGL_TEST_FAULT"]
_forward = GaitGLModule.forward
_sampler_init = samplers.EvalShardSampler.__init__
_get_item = datasets.TrainClips.__getitem__
_items = [0]


def _protocol(name: str, embeddings: Any, meta: Any, **options: Any) -> Any:
    raise EvaluationError("casia_b: no probe subject appears in the gallery")


def _forward_failing_on_rank1(self: GaitGLModule, sils: Any, lengths: Any = None) -> Any:
    in_training = FAULT == "train_forward_rank1"
    if self.global_rank == 1 and self.training == in_training and self.global_step >= 2:
        raise RuntimeError("injected out of memory")
    return _forward(self, sils, lengths)


def _item_failing_in_rank1_worker(self: Any, item: Any) -> Any:
    in_worker = torch.utils.data.get_worker_info() is not None
    _items[0] += 1
    if in_worker and os.environ.get("LOCAL_RANK") == "1" and _items[0] > 16:
        raise OSError("injected: cannot read the store")
    return _get_item(self, item)


def _forward_around_a_collective(self: GaitGLModule, sils: Any, lengths: Any = None) -> Any:
    if self.training and self.global_step >= 2:
        if self.global_rank == 1:
            raise RuntimeError("injected failure before SyncBN")
        out = [torch.zeros(3) for _ in range(dist.get_world_size())]
        dist.all_gather(out, torch.ones(3))  # SyncBN's gather of mean, var and count
    return _forward(self, sils, lengths)


def _no_share_for_rank1(
    self: Any, lengths: Any, batch_size: int = 8, rank: int = 0, world_size: int = 1, **kw: Any
) -> None:
    """As if the evaluation set had fewer sequences than ranks: rank 0 gets every sequence;
    rank 1 sees a one-sequence set, of which it has no share (the sampler's own rule applies)."""
    if rank == 0:
        _sampler_init(self, lengths, batch_size, 0, 1, **kw)
    else:
        _sampler_init(self, list(lengths)[:1], batch_size, rank, world_size, **kw)


if FAULT == "protocol":
    metric.evaluate = _protocol
elif FAULT in ("eval_forward_rank1", "train_forward_rank1"):
    GaitGLModule.forward = _forward_failing_on_rank1  # type: ignore[method-assign]
elif FAULT == "loader_rank1":
    datasets.TrainClips.__getitem__ = _item_failing_in_rank1_worker  # type: ignore[method-assign]
elif FAULT == "collective_rank1":
    GaitGLModule.forward = _forward_around_a_collective  # type: ignore[method-assign]
elif FAULT == "no_share_rank1":
    samplers.EvalShardSampler.__init__ = _no_share_for_rank1  # type: ignore[method-assign]

if __name__ == "__main__":
    from gaitgl_lightning.cli import main

    main()
