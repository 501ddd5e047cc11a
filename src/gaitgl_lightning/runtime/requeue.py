"""Preemption on SLURM: when warned, checkpoint at the end of the step, requeue, resume there.

Lightning's own handler (``SLURMEnvironment(auto_requeue=True)``) writes ``hpc_ckpt_<n>.ckpt``
inside the signal handler, that is in the middle of whatever the step was doing: a checkpoint
taken after the forward pass has counted the step's mask draw (the network's ``mask_draws``) for a
step that the resumed job trains again with the next draw, and one taken inside
``optimizer.step`` holds half-updated weights. The resumed run then differs from a run never
preempted. :class:`RequeueOnSignal` takes that signal over while ``fit`` trains: the handler only
sets a flag; at the end of the step (where Lightning's own step checkpoints are taken) the ranks
agree on it, save one ``hpc_ckpt_<n>.ckpt`` (the file Lightning restores when the requeued job
starts in the same run dir) and rank zero runs ``scontrol requeue``. SLURM then stops the job;
its SIGTERM ends training at the next step.

After training (the final evaluation, inside ``fit`` at the last step or after it) there is no
step to end: a warning during the last evaluation inside ``fit`` is handled when ``fit`` ends
(``hpc_ckpt_<n>.ckpt`` of the final weights, then the requeue); one during the evaluations after
``fit`` requeues at once, since ``last.ckpt`` holds the final weights already. A requeued job
(``SLURM_RESTART_COUNT`` > 0) given no ``ckpt_path`` resumes from the newest checkpoint of its
run dir (``checkpoints.requeued_checkpoint``), so it finishes the evaluation instead of training again;
that is also what resumes a submitit sweep's job, which SLURM starts again with its original
arguments after a preemption.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback

from gaitgl_lightning.runtime.checkpoints import next_hpc_checkpoint

log = logging.getLogger(__name__)


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for an array task."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


class RequeueOnSignal(Callback):
    """On ``signal_name`` (what ``sbatch --signal=USR1@<seconds>`` sends before the time limit),
    save ``hpc_ckpt_<n>.ckpt`` at the end of the current step and requeue the SLURM job.

    Active only when Lightning runs in a SLURM environment; elsewhere it does nothing.
    """

    def __init__(self, signal_name: str = "SIGUSR1") -> None:
        self.signum = signal.Signals[signal_name]
        self._requested = False
        self._previous: Any = None
        self._active = False
        self._after_training = False  # fit has ended: a warning requeues at once
        self._rank_zero = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its handlers (at the start of the run): this one replaces
        # its SIGUSR1 handler until training ends.
        # The environment Lightning chose (single-device strategies do not expose it).
        connector = getattr(trainer, "_accelerator_connector", None)
        environment = getattr(connector, "cluster_environment", None)
        if not isinstance(environment, SLURMEnvironment):
            return
        if threading.current_thread() is not threading.main_thread():
            return
        self._requested = False
        self._after_training = False
        self._rank_zero = trainer.is_global_zero
        if not self._active:
            # What the signal had before Lightning's handlers (restored by `release`).
            self._previous = _lightning_originals(trainer).get(self.signum, signal.SIG_DFL)
            signal.signal(self.signum, self._on_signal)
            self._active = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._after_training:
            self._requested = True
        elif self._rank_zero and not self._requested:
            # The final weights are in last.ckpt: nothing to save, and the evaluation may well
            # outlast the time limit, so requeue now; the job restarts from that checkpoint.
            self._requested = True
            log.info("preemption warning after training: requeueing now")
            self._requeue()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if self._active:
            self._save_and_requeue_if_warned(trainer)

    def _save_and_requeue_if_warned(self, trainer: L.Trainer) -> None:
        """Every rank takes part: a signal seen by any rank checkpoints all of them, at one step."""
        if not trainer.strategy.reduce_boolean_decision(self._requested, all=False):
            return
        self._requested = False
        path = trainer.strategy.broadcast(next_hpc_checkpoint(Path(trainer.default_root_dir)))
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.info("preemption warning: saved %s at step %d", path, trainer.global_step)
            self._requeue()

    @staticmethod
    def _requeue() -> None:
        job = slurm_job_id()
        if not job:
            log.warning("preemption warning outside a SLURM job: checkpoint saved, no requeue")
            return
        log.info("requeueing SLURM job %s", job)
        try:
            done = subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("could not requeue SLURM job %s (%s); training goes on", job, err)
            return
        # -SIGTERM: SLURM already stopping the job's processes for the requeue, scontrol included.
        if done.returncode in (0, -signal.SIGTERM):
            log.info("requeued SLURM job %s; it resumes from the checkpoint when it restarts", job)
        else:
            log.warning(
                "scontrol requeue %s failed (exit %d); training goes on", job, done.returncode
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A warning during the last evaluation inside ``fit`` (after the last step ended) is
        acted on here; the handler stays for the evaluations after ``fit`` (:func:`release`)."""
        if self._active:
            self._save_and_requeue_if_warned(trainer)
            self._requested = False
            self._after_training = True
            # Lightning puts its saved handlers back when fit ends: make this one of them, so
            # that it stays through the evaluations after fit (Lightning then adds none).
            _lightning_originals(trainer)[self.signum] = self._on_signal

    def release(self) -> None:
        """Give the signal back to its previous handler (the task has ended)."""
        if self._active:
            signal.signal(self.signum, self._previous)
            self._active = False
            self._after_training = False


def _lightning_originals(trainer: L.Trainer) -> dict[Any, Any]:
    """The handlers Lightning's signal connector saved when the Trainer call started (it puts
    them back when the call ends); an empty dict when this Lightning keeps none."""
    connector = getattr(trainer, "_signal_connector", None)
    saved = getattr(connector, "_original_handlers", None)
    return saved if isinstance(saved, dict) else {}


def release_signal_handlers(trainer: L.Trainer) -> None:
    """End every :class:`RequeueOnSignal` of ``trainer`` (``train`` calls it when it ends)."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, RequeueOnSignal):
            callback.release()
