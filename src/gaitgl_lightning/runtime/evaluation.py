"""The evaluation of a run: collect the embeddings, run the protocol, keep the result.

``GaitGLModule``'s validation and test steps only embed a batch; :class:`Evaluation` owns
everything else: the torchmetrics ``Metric`` built from the data module's metadata and protocol
(``evaluation.metric``), the protocol's full result (:attr:`Evaluation.last_result`), the step it
was computed at, the submission file of a test set whose labels are hidden (GREW), and the reuse
of the evaluation at the last training step for the end of ``train``.

Everything that crosses ranks (a failure, the metric's sync, the summary) runs on every rank, so
nothing can hang: every rank first learns whether a forward pass failed anywhere (before the
metric's sync, which a failed rank would never reach), so all ranks stop together with the same
message. Then torchmetrics all-gathers the embeddings on every rank, and the protocol runs on rank
0 only, its summary broadcast: the protocol works on CPU copies, so running it on every rank would
hold one copy of the whole evaluation set per rank in host memory and compute the same distance
matrices once per rank on the same cores; one result also gives every rank bit-identical numbers
to select checkpoints by. The broadcast carries rank 0's failure too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from gaitgl_lightning.evaluation import EvalResult, write_submission
from gaitgl_lightning.evaluation.metric import GaitEvaluation
from gaitgl_lightning.runtime.checkpoints import trained_weights
from gaitgl_lightning.runtime.rank_failures import failure_message, raise_if_failed, share_failure

log = logging.getLogger(__name__)


class Evaluation(Callback):
    """Evaluate the embeddings the module's ``validation_step`` / ``test_step`` return.

    Args:
        submission_dir: where an evaluation on hidden labels writes its submission file (keyed
            by step); None: nowhere.

    A step returns the batch's embeddings, or the exception its forward pass raised: that rank
    then adds nothing more and shares the failure at the end of the epoch.
    """

    def __init__(self, submission_dir: str | None = None) -> None:
        self.submission_dir = submission_dir
        self.metric: GaitEvaluation | None = None
        #: The latest evaluation's full result (rank 0 only).
        self.last_result: EvalResult | None = None
        #: The global step of the latest evaluation, on every rank (so that every rank takes the
        #: same decision on whether the end of ``train`` must evaluate again).
        self.evaluated_at: int | None = None
        #: The training step of weights loaded outside ``fit`` (what outputs are keyed by).
        self.loaded_step: int | None = None
        self._failure: Exception | None = None

    @staticmethod
    def of(trainer: L.Trainer) -> Evaluation:
        """The trainer's evaluation callback (``tasks.build_trainer`` always adds one)."""
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, Evaluation):
                return callback
        raise RuntimeError("the Trainer has no Evaluation callback (build it with build_trainer)")

    # ----------------------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The metric of the data module's evaluation metadata and protocol (its ``setup`` ran
        first). Synced explicitly on every rank and computed on rank 0 (:meth:`_finish`)."""
        datamodule: Any = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "eval_meta"):
            self.metric = GaitEvaluation(
                datamodule.eval_meta, datamodule.protocol, sync_on_compute=False
            )

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Remember the step of the weights (an evaluation outside ``fit`` is keyed by it)."""
        self.loaded_step = int(checkpoint.get("global_step", 0))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self._collect(outputs, batch)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self._collect(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    # ----------------------------------------------------------------------------- epoch
    def _start(self, pl_module: L.LightningModule) -> None:
        if self.metric is None:
            raise RuntimeError(
                "evaluation needs the GaitDataModule (pass datamodule= to the Trainer call)"
            )
        self.metric = self.metric.to(pl_module.device)
        self.metric.reset()
        self._failure = None

    def _collect(self, outputs: Any, batch: Mapping[str, Any]) -> None:
        if self._failure is not None:
            return
        if isinstance(outputs, Exception):
            self._failure = outputs
            return
        assert self.metric is not None  # _start checked it
        self.metric.update(outputs, batch["index"])

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Share failures, gather through the metric, evaluate on rank 0, share the summary,
        log it as ``<stage>/*`` (see the module docstring). No evaluation while sanity checking."""
        metric = self.metric
        assert metric is not None  # _start checked it
        try:
            share_failure(trainer, self._failure, "in evaluation")
            if trainer.sanity_checking:
                return
            metric.sync()  # a collective: every rank; a no-op on one process
            summary, failure = self._evaluate(trainer) if trainer.is_global_zero else (None, None)
            shared = (summary, failure_message(failure))
            summary, message = trainer.strategy.broadcast(shared, src=0)
            raise_if_failed(trainer, [message], failure, "in evaluation")
        finally:
            metric.reset()
        if summary is None:
            return
        self.evaluated_at = int(trainer.global_step)
        pl_module.log_dict(
            {f"{stage}/{k}": v for k, v in summary.items() if math.isfinite(v)},
            on_step=False,
            on_epoch=True,
        )

    def _evaluate(self, trainer: L.Trainer) -> tuple[dict[str, float] | None, Exception | None]:
        """Rank 0: run the protocol (kept as ``last_result``), write the submission of a
        hidden-label test set; return the summary, or the failure to share."""
        try:
            self.last_result = self._protocol_result(trainer)
        except Exception as err:  # shared in the broadcast every other rank waits in
            return None, err
        return {k: float(v) for k, v in self.last_result.summary().items()}, None

    def _protocol_result(self, trainer: L.Trainer) -> EvalResult:
        assert self.metric is not None
        result = self.metric.compute()
        step = self._evaluated_step(trainer)
        if result.submission is not None and self.submission_dir:
            path = write_submission(result, self.metric.meta, Path(self.submission_dir), step)
            log.info("step %d: wrote the %s submission %s", step, result.submission, path)
        if result.labels_hidden:
            counts = ", ".join(f"{k}={v}" for k, v in result.counts.items())
            stats = ", ".join(f"{k}={v:.4g}" for k, v in result.summary().items())
            log.info(
                "step %d: %s test labels are hidden, no rank-1 (%s; %s)",
                step,
                result.protocol,
                counts,
                stats,
            )
        return result

    def _evaluated_step(self, trainer: L.Trainer) -> int:
        """The training step the evaluated weights come from (a loaded checkpoint's own step
        when evaluating outside ``fit``)."""
        if trainer.state.fn != "fit" and self.loaded_step is not None:
            return self.loaded_step
        return int(trainer.global_step)

    # ----------------------------------------------------------------------------- for tasks
    def run(
        self,
        loop: Callable[..., Any],
        module: L.LightningModule,
        datamodule: Any,
        ckpt_path: str | None,
    ) -> dict[str, Any]:
        """Run ``trainer.validate`` or ``trainer.test`` once and return the protocol's full
        result as a dict; the loggers get its summary as ``val/*`` or ``test/*``."""
        self.last_result = None
        logged = loop(
            module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True
        )
        if self.last_result is not None:
            return dict(self.last_result.to_dict())
        # ddp_spawn evaluated in child processes (rank 0 holds the full result): only the logged
        # numbers come back.
        numbers = logged[0] if logged else {}
        summary = {k.partition("/")[2]: float(v) for k, v in numbers.items() if "/" in k}
        return (
            {"summary": summary, "note": "summary only (evaluated in spawned processes)"}
            if summary
            else {}
        )

    def final(
        self, trainer: L.Trainer, module: L.LightningModule, datamodule: Any
    ) -> dict[str, Any]:
        """The result of the weights ``fit`` ended with. The evaluation at the last step already
        scored them: it is reused rather than run the whole evaluation set through the network
        again (the same decision on every rank; rank 0 holds the result)."""
        at_end = self.evaluated_at == trainer.global_step
        if at_end and self.last_result is not None:
            log.info("final evaluation: the step-%d evaluation (same weights)", trainer.global_step)
            return dict(self.last_result.to_dict())
        if at_end and not trainer.is_global_zero:
            return {}  # rank 0 holds the result and writes metrics.json
        return self.run(trainer.validate, module, datamodule, ckpt_path=trained_weights(trainer))
