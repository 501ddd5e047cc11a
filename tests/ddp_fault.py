"""The real command line with one injected fault, for the DDP failure tests.

Lightning's DDP starts rank 1 by running this same script again, so the fault is injected in
every rank; ``GAITGL_TEST_FAULT`` says which: ``protocol`` (rank 0's protocol raises a family
error in the metric's compute), ``eval_forward_rank1`` / ``train_forward_rank1`` (rank 1's forward pass raises an
unexpected error, as a CUDA out-of-memory would), ``no_share_rank1`` (rank 0 gets every
evaluation batch, rank 1 none).
"""

from __future__ import annotations

import os
from typing import Any

from gaitgl_lightning.data import samplers
from gaitgl_lightning.errors import EvaluationError
from gaitgl_lightning.evaluation import metric
from gaitgl_lightning.module import GaitGLModule

FAULT = os.environ["GAITGL_TEST_FAULT"]
_forward = GaitGLModule.forward
_sampler_init = samplers.EvalShardSampler.__init__


def _protocol(name: str, embeddings: Any, meta: Any, **options: Any) -> Any:
    raise EvaluationError("casia_b: no probe subject appears in the gallery")


def _forward_failing_on_rank1(self: GaitGLModule, sils: Any, lengths: Any = None) -> Any:
    in_training = FAULT == "train_forward_rank1"
    if self.global_rank == 1 and self.training == in_training and self.global_step >= 2:
        raise RuntimeError("injected out of memory")
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
elif FAULT == "no_share_rank1":
    samplers.EvalShardSampler.__init__ = _no_share_for_rank1  # type: ignore[method-assign]

if __name__ == "__main__":
    from gaitgl_lightning.cli import main

    main()
