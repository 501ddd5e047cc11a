"""Learning-rate schedules stepped per iteration (the configs in ``conf/scheduler/``).

Why a composition and not a new schedule: the multistep decay of the recipes stays torch's
``MultiStepLR`` with its milestones as absolute iteration counts, and an optional linear
warm-up (``LinearLR``) multiplies onto it for the first iterations. ``ChainedScheduler`` steps
both every iteration, so a milestone means the same step with or without warm-up (unlike
``SequentialLR``, which restarts the second schedule's count at the switch).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, LRScheduler, MultiStepLR

from gaitgl_lightning.errors import ConfigError


def warmup_multistep(
    optimizer: Optimizer,
    milestones: Sequence[int],
    gamma: float = 0.1,
    warmup_steps: int = 0,
    start_factor: float = 0.01,
) -> LRScheduler:
    """MultiStepLR(milestones, gamma), with the lr ramped linearly from ``start_factor`` x lr
    to lr over the first ``warmup_steps`` iterations (0: no warm-up, plain MultiStepLR).

    Why a warm-up: the large-dataset recipe is SGD at lr 0.1 on a backbone with no
    normalisation layer, where the first steps at full lr can blow up the loss.
    """
    if int(warmup_steps) < 0:
        raise ConfigError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 < float(start_factor) <= 1.0:
        raise ConfigError(f"scheduler.start_factor must lie in (0, 1], got {start_factor}")
    if int(warmup_steps) == 0:
        return MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    warmup = LinearLR(
        optimizer, start_factor=float(start_factor), end_factor=1.0, total_iters=int(warmup_steps)
    )
    decay = MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    return ChainedScheduler([warmup, decay], optimizer=optimizer)
