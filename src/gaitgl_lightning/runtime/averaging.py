"""Weight averaging: an exponential moving average (or an equal average) of the network's weights.

Why: the final weights of a short run sit where the last few batches left them, and two training
seeds leave them in places whose rank-1 differs by more than the effects an ablation looks for
(docs/model.md, "The noise floor"). An average over the last steps is a point that depends less
on those batches (Polyak averaging, SWA, the EMA of timm and many re-ID codebases).

:class:`AveragedWeights` keeps the average in a ``torch.optim.swa_utils.AveragedModel`` of the
network (parameters and floating-point buffers, so BatchNorm's running statistics too) and
differs from Lightning's ``WeightAveraging`` in what a checkpoint holds: ``state_dict`` stays the
trained weights, which every other tool reads (resume, ``task=extract``, ``init_weights``), and
the average goes beside them under ``averaged_weights``. Evaluations score the average when
``evaluate="averaged"`` (once it has started; an evaluation before ``start_step`` scores the
trained weights), and ``task=eval eval_weights=averaged`` scores a checkpoint's average later.
A resume restores the average with the step it belongs to, so it continues the same run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gaitgl_lightning.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: The checkpoint key of the average (beside Lightning's ``state_dict`` of the trained weights).
CHECKPOINT_KEY = "averaged_weights"
#: What an evaluation scores: ``trained`` (the weights training ended with) or ``averaged``.
WEIGHTS = ("trained", "averaged")


def check_weights(value: str, setting: str = "eval_weights") -> str:
    """``value`` if it names weights an evaluation can score, else one line saying which do."""
    if value not in WEIGHTS:
        raise ConfigError(f"{setting}={value!r}: give one of {', '.join(WEIGHTS)}")
    return value


def _averaged_tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    """The tensors the average covers: parameters and floating-point buffers (an integer buffer
    such as BatchNorm's batch count is a counter, not a weight: it follows the network)."""
    yield from module.parameters()
    yield from (b for b in module.buffers() if b.is_floating_point())


class AveragedWeights(Callback):
    """Average the network's weights after every optimizer step from ``start_step`` on.

    Args:
        decay: EMA decay per step (0.99: a horizon of about 100 steps); ``None`` for the equal
            average of every step since ``start_step`` (SWA's).
        start_step: the first step whose weights enter the average (after that many optimizer
            steps); 0 averages from the first step.
        evaluate: ``averaged`` to score the average in every evaluation once it has started,
            ``trained`` to keep scoring the trained weights (the average is still kept).
    """

    def __init__(
        self, decay: float | None = 0.99, start_step: int = 0, evaluate: str = "averaged"
    ) -> None:
        if decay is not None and not 0.0 < float(decay) < 1.0:
            raise ConfigError(
                f"callbacks.averaging.decay={decay}: give a value in (0, 1), e.g. 0.99, or "
                "null for the equal average"
            )
        if int(start_step) < 0:
            raise ConfigError(f"callbacks.averaging.start_step={start_step}: give a step >= 0")
        self.decay = None if decay is None else float(decay)
        self.start_step = int(start_step)
        self.evaluate = check_weights(str(evaluate), "callbacks.averaging.evaluate")
        self.average: AveragedModel | None = None
        #: the optimizer step the average was last updated after (0: not yet)
        self.updated_at = 0
        self._swapped = False

    # ----------------------------------------------------------------------------- state
    @property
    def started(self) -> bool:
        return self.average is not None and int(self.average.n_averaged) > 0

    def _new_average(self, net: nn.Module) -> AveragedModel:
        avg_fn = None if self.decay is None else get_ema_multi_avg_fn(self.decay)
        # use_buffers=False: AveragedModel would average integer buffers too; the floating-point
        # ones are averaged here (_averaged_tensors), so the average's BatchNorm statistics
        # belong to its weights.
        return AveragedModel(net, multi_avg_fn=avg_fn, use_buffers=False)

    def describe(self) -> str:
        how = "equal average" if self.decay is None else f"EMA decay {self.decay:g}"
        return f"{how} of the weights after steps {self.start_step + 1}-{self.updated_at}"

    # ----------------------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.average is None:
            self.average = self._new_average(_net(pl_module))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        """After the step's optimizer step (Lightning counts it in ``global_step``)."""
        self._catch_up(trainer, pl_module)

    def _catch_up(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Average the weights of the step just taken, once. Also called when a checkpoint is
        written: a callback ahead of this one in the list (a stop, a requeue) may save the
        step before this one's ``on_train_batch_end`` has run, and the checkpoint must hold
        the average of the weights it holds, or a resume would miss that step's update."""
        step = int(trainer.global_step)
        if step <= self.start_step or step <= self.updated_at or self.average is None:
            return  # before the start, already done, or a batch without an optimizer step
        self._update(_net(pl_module))
        self.updated_at = step

    def _update(self, net: nn.Module) -> None:
        """``update_parameters`` averages the parameters (a copy at the first update), counts
        the update and, as it does without ``use_buffers``, copies the network's buffers; the
        floating-point ones are then set to their own average by the same rule."""
        average = self.average
        assert average is not None
        first = not self.started
        mine = [b for b in average.module.buffers() if b.is_floating_point()]
        before = [b.detach().clone() for b in mine]
        average.update_parameters(net)  # the buffers now hold the network's values
        if first or not mine:
            return
        weight = 1.0 / float(average.n_averaged) if self.decay is None else 1.0 - self.decay
        torch._foreach_lerp_(before, mine, weight)  # towards the network's values, in ``mine``
        torch._foreach_copy_(mine, before)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_in(pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_out(pl_module)

    def _swap_in(self, pl_module: L.LightningModule) -> None:
        if self.evaluate == "averaged" and self.started and not self._swapped:
            self._swap(pl_module)
            self._swapped = True
            log.info("evaluating the averaged weights (%s)", self.describe())

    def _swap_out(self, pl_module: L.LightningModule) -> None:
        if self._swapped:
            self._swap(pl_module)
            self._swapped = False

    def _swap(self, pl_module: L.LightningModule) -> None:
        assert self.average is not None
        net = _net(pl_module)
        pairs = zip(_averaged_tensors(self.average.module), _averaged_tensors(net), strict=True)
        for mine, theirs in pairs:
            held = mine.detach().clone()
            mine.detach().copy_(theirs.detach())
            theirs.detach().copy_(held)

    # ----------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """The average beside the trained weights (``state_dict`` stays theirs), brought up to
        the checkpoint's step first (``_catch_up``). Never written with the average swapped in:
        Lightning saves after an evaluation's end, where it is swapped out again."""
        if self._swapped:
            raise RuntimeError("a checkpoint was written while the averaged weights were in")
        if trainer.training:
            self._catch_up(trainer, pl_module)
        if self.started:
            checkpoint[CHECKPOINT_KEY] = averaged_state(self)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore the average of the checkpoint's step (none before ``start_step``)."""
        self.average = self._new_average(_net(pl_module))
        self.updated_at = 0
        stored = checkpoint.get(CHECKPOINT_KEY)
        if stored is None:
            return
        load_averaged(self.average.module, stored, str(trainer.ckpt_path or "the checkpoint"))
        self.average.n_averaged.fill_(int(stored["n_averaged"]))
        self.updated_at = int(stored["updated_at"])


def averaged_state(callback: AveragedWeights) -> dict[str, Any]:
    """What a checkpoint stores of the average (plain tensors and numbers: safe to load)."""
    assert callback.average is not None
    return {
        "state_dict": {
            k: v.detach().clone() for k, v in callback.average.module.state_dict().items()
        },
        "n_averaged": int(callback.average.n_averaged),
        "updated_at": callback.updated_at,
        "decay": callback.decay,
        "start_step": callback.start_step,
    }


def load_averaged(net: nn.Module, stored: Mapping[str, Any], where: str) -> None:
    """Load a checkpoint's averaged weights into ``net``."""
    try:
        net.load_state_dict(stored["state_dict"])
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"{where}: its averaged weights do not fit this network ({first})"
        ) from None


def _net(pl_module: L.LightningModule) -> nn.Module:
    """The network the module trains (``GaitGLModule.net``; the module itself otherwise)."""
    net = getattr(pl_module, "net", None)
    return net if isinstance(net, nn.Module) else pl_module


def load_checkpoint_average(
    net: nn.Module, ckpt: str, state: Mapping[str, Any], weights: str
) -> bool:
    """``task=eval``: put the checkpoint's averaged weights into ``net`` when ``weights`` asks
    for them (True), or leave the trained ones to Lightning's loading (False)."""
    if check_weights(weights) == "trained":
        return False
    stored = state.get(CHECKPOINT_KEY)
    if not isinstance(stored, Mapping):
        raise ConfigError(
            f"eval_weights=averaged: {ckpt} holds no averaged weights (its run trained without "
            "averaging=ema, or stopped before callbacks.averaging.start_step); use "
            "eval_weights=trained"
        )
    load_averaged(net, stored, ckpt)
    return True


def evaluated_weights(trainer: L.Trainer) -> str:
    """What the run's evaluations scored, for ``metrics.json``: ``trained``, or the average."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, AveragedWeights) and callback.evaluate == "averaged":
            return f"averaged: {callback.describe()}" if callback.started else "trained"
    return "trained"
