"""Stopping a run with SIGTERM or SIGINT (``kill``, Ctrl+C, a scheduler's time limit).

Why: Lightning answers SIGTERM by ending ``fit`` at the next step with exit status 0 and no
checkpoint of that step, and Ctrl+C with exit status 1, also without a checkpoint; neither says
how to go on. :class:`StopOnSignal` takes both signals over while ``fit`` trains: the handler only
sets a flag; at the end of the step (where step checkpoints are taken, so the resumed run trains
the next step with the next mask draw, as an uninterrupted run does) the ranks agree on it, save
``checkpoints/interrupted-step<N>.ckpt`` and stop with :class:`Stopped`: exit status 128 + the
signal, and one line saying how to resume. A second Ctrl+C stops at once (no checkpoint).

Under SLURM, SIGTERM is left to Lightning: SLURM sends it after the requeue of
``runtime.requeue.RequeueOnSignal`` (the preemption path of ``docs/cluster.md``), which is unchanged.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback

from gaitgl_lightning.errors import Stopped
from gaitgl_lightning.runtime.checkpoints import save_stop_checkpoint

log = logging.getLogger(__name__)


def resume_hint(run_dir: str | Path) -> str:
    """The one command that resumes a run dir."""
    return f"python -m gaitgl_lightning resume={run_dir}"


def _log_this_step(trainer: L.Trainer) -> None:
    """Log the step's training metrics now: Lightning logs them after this hook, which the stop
    does not reach, so the curves would miss the step the resumed run starts after (its
    ``logger_connector`` calls, in the order of ``training_epoch_loop.advance``)."""
    connector = trainer._logger_connector
    connector.on_batch_end()
    connector.update_train_step_metrics()
    for logger in trainer.loggers:
        logger.save()


class StopOnSignal(Callback):
    """On SIGTERM / SIGINT: checkpoint at the end of the current step, then stop (see module)."""

    def __init__(self, run_dir: str | None = None) -> None:
        self.run_dir = run_dir
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.received = None
        signums = [signal.SIGINT]
        connector = getattr(trainer, "_accelerator_connector", None)
        if not isinstance(getattr(connector, "cluster_environment", None), SLURMEnvironment):
            signums.append(signal.SIGTERM)
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # pressed twice: stop now
        self.received = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if not self._previous:
            return
        # Every rank takes part: a signal seen by any rank stops all of them, at one step.
        mine = torch.tensor(float(self.received or 0), device=pl_module.device)
        signum = int(trainer.strategy.reduce(mine, reduce_op="max").item())
        if not signum:
            return
        _log_this_step(trainer)
        path = save_stop_checkpoint(trainer, "interrupted")
        run_dir = self.run_dir or trainer.default_root_dir
        name = signal.Signals(signum).name
        line = (
            f"stopped by {name} at step {trainer.global_step}: saved {path}; resume with: "
            f"{resume_hint(run_dir)}"
        )
        log.info(line)
        self._restore()
        raise Stopped(signum, line)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
