"""``GaitGLModule``: the LightningModule that glues the network, the loss and the evaluation.

It owns no architecture and no data logic: the network, the loss and the optimizer / scheduler
factories are injected (Hydra builds them from ``conf/``), and the evaluation protocol is read
from the data module's metadata by a torchmetrics ``Metric`` (``evaluation.metric``). Everything
that crosses ranks (a failure, the metric's sync, the non-finite-loss decision, the evaluation
summary) runs on every rank, so nothing can hang.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from gaitgl_lightning import __version__
from gaitgl_lightning.errors import GaitGLError, RankFailure, TrainingError
from gaitgl_lightning.evaluation import EvalResult, write_submission
from gaitgl_lightning.evaluation.metric import GaitEvaluation
from gaitgl_lightning.models import silhouettes_to_input
from gaitgl_lightning.rank_failures import SHARING, announce, describe, shared

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def _describe(err: BaseException | None) -> str | None:
    """What other ranks are told of a failure (``rank_failures.describe``), None for none."""
    return None if err is None else describe(err)


class NonFiniteLossError(TrainingError, FloatingPointError):
    """Training stopped on a NaN / inf loss (the last checkpoint written before it is kept)."""


class GaitGLModule(L.LightningModule):
    """Train GaitGL by iterations with the combined loss; evaluate a gait protocol.

    Args:
        net: the network, ``net(x, lengths) -> (embeddings [n, C, p], logits [n, K, p])``.
        loss: ``loss(embeddings, logits, labels) -> (total, parts)``.
        optimizer: factory taking the parameters (a Hydra ``_partial_``).
        scheduler: factory taking the optimizer, stepped every iteration, or None.
        seed: base seed of the mask stream; each rank adds its rank so ranks draw different masks.
        run_config: the resolved run configuration, stored in every checkpoint.
        submission_dir: where an evaluation on hidden labels writes its submission file (keyed
            by step); None: nowhere.

    The evaluation protocol has one owner, the data module (``datamodule.protocol``: the
    dataset config's protocol plus what the partition fixes, e.g. Gait3D's PROBE_SET), so
    there is no second copy here that could silently win.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        seed: int = 0,
        run_config: Mapping[str, Any] | None = None,
        submission_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.submission_dir = submission_dir
        self.seed = int(seed)
        self.run_config = dict(run_config) if run_config is not None else None
        self.last_result: Any = None  # the latest evaluation result (full object, rank 0 only)
        # The global step of the latest evaluation, on every rank (so that every rank takes the
        # same decision on whether the end of `train` must evaluate again).
        self.evaluated_at: int | None = None
        self.eval_metric: GaitEvaluation | None = None  # set up from the data module's metadata
        self._eval_failure: Exception | None = None
        self._step_clock: float | None = None
        self.loaded_step: int | None = None  # the step of a checkpoint loaded for evaluation

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        """Give every rank its own mask stream (``seed + rank``); build the evaluation metric
        from the data module's evaluation metadata and protocol (its ``setup`` ran first)."""
        set_seed = getattr(self.net, "set_mask_seed", None)
        if callable(set_seed):
            set_seed(self.seed + self.global_rank)
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "eval_meta"):
            # Synced explicitly on every rank and computed on rank 0 (_finish_evaluation).
            self.eval_metric = GaitEvaluation(
                datamodule.eval_meta, datamodule.protocol, sync_on_compute=False
            )

    def on_fit_start(self) -> None:
        """Give every logger the resolved run config (W&B config, the CSV logger's hparams.yaml),
        so that runs can be compared by their settings from the logs alone."""
        if self.run_config is not None:
            for logger in self.loggers:
                logger.log_hyperparams(self.run_config)

    def configure_optimizers(self) -> Any:
        """Build the optimizer, and the scheduler stepped per iteration (milestones are steps)."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ----------------------------------------------------------------------------- forward
    def forward(self, sils: torch.Tensor, lengths: torch.Tensor | None = None) -> Any:
        """Embed a batch of uint8 silhouette sequences (``models.silhouettes_to_input``)."""
        return self.net(silhouettes_to_input(sils), lengths)

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One P x K step: forward, combined loss, logging; stop cleanly on a non-finite loss."""
        lengths = batch.get("lengths")
        full = lengths is None or bool((lengths == batch["sils"].shape[1]).all())
        failure: Exception | None = None
        try:
            out = self(batch["sils"], None if full else lengths)
        except Exception as err:  # shared below, before the loss's all-gather
            failure = err
        self._share_failure(failure, f"in training step {self.global_step}")
        result = self.loss(out.embeddings, out.logits, batch["labels"])
        self._check_finite(result.total, result.parts)
        log = {f"train/{k}": v.float() for k, v in result.parts.items()}
        log["train/loss"] = result.total.detach().float()
        self.log_dict(log, on_step=True, on_epoch=False, batch_size=len(batch["labels"]))
        self.log(
            "train/lr",
            self.trainer.optimizers[0].param_groups[0]["lr"],
            on_step=True,
            on_epoch=False,
        )
        self._log_throughput(len(batch["labels"]))
        return result.total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the global 2-norm of the gradients as ``train/grad_norm``.

        Why: the large-dataset recipe is SGD at lr 0.1 on a backbone with no normalisation, so
        the gradient norm is the first sign of a run about to blow up. Lightning calls this
        after the gradients are unscaled (fp16) and all-reduced (DDP), before any clipping.
        """
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            self.log("train/grad_norm", norm.float(), on_step=True, on_epoch=False)

    def _check_finite(self, total: torch.Tensor, parts: Mapping[str, torch.Tensor]) -> None:
        """Raise on every rank together when any rank's loss is NaN / inf."""
        finite = bool(torch.isfinite(total.detach()).item())
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
        raise NonFiniteLossError(
            f"non-finite loss at step {self.global_step} ({terms}). Training stopped; the "
            "last checkpoint written before this step is kept. Try a lower learning rate, "
            "precision=32, or check the input data."
        )

    def _log_throughput(self, local_batch: int) -> None:
        """Sequences per second over the whole (global) batch, from the wall time per step."""
        now = time.perf_counter()
        if self._step_clock is not None:
            elapsed = now - self._step_clock
            if elapsed > 0:
                seqs = local_batch * self.trainer.world_size
                self.log("train/seq_per_s", seqs / elapsed, on_step=True, on_epoch=False)
        self._step_clock = now

    # ----------------------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        if self.eval_metric is None:
            raise RuntimeError(
                "evaluation needs the GaitDataModule (pass datamodule= to the Trainer call)"
            )
        self.eval_metric.reset()
        self._eval_failure = None

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """Embed a padded batch of whole sequences; add them to the metric with their indices.

        A failure is kept, not raised: the rank skips its remaining batches and shares the
        failure at the end of the epoch, before the metric's sync every other rank waits in."""
        if self._eval_failure is not None:
            return
        try:
            out = self(batch["sils"], batch["lengths"])
        except Exception as err:
            self._eval_failure = err
            return
        assert self.eval_metric is not None  # on_validation_epoch_start checked it
        self.eval_metric.update(out.embeddings, batch["index"])

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _finish_evaluation(self, stage: str) -> None:
        """Share failures, gather through the metric, evaluate on rank 0, share the summary.

        Every rank first learns whether a forward pass failed anywhere (before the metric's
        sync, which a failed rank would never reach), so all ranks stop together with the
        same message. Then torchmetrics all-gathers the embeddings on every rank, and the
        protocol runs on rank 0 only, its summary broadcast: the protocol works on CPU copies,
        so running it on every rank would hold one copy of the whole evaluation set per rank in
        host memory and compute the same distance matrices once per rank on the same cores;
        one result also gives every rank bit-identical numbers to select checkpoints by. The
        broadcast carries rank 0's failure too. No evaluation while sanity checking."""
        metric = self.eval_metric
        assert metric is not None  # on_validation_epoch_start checked it
        try:
            self._share_failure(self._eval_failure, "in evaluation")
            if self.trainer.sanity_checking:
                return
            metric.sync()  # a collective: every rank; a no-op on one process
            summary, failure = (
                self._evaluate(metric) if self.trainer.is_global_zero else (None, None)
            )
            summary, message = self.trainer.strategy.broadcast((summary, _describe(failure)), src=0)
            self._raise_if_failed([message], failure, "in evaluation")
        finally:
            metric.reset()
        if summary is None:
            return
        self.evaluated_at = int(self.global_step)
        self.log_dict(
            {f"{stage}/{k}": v for k, v in summary.items() if math.isfinite(v)},
            on_step=False,
            on_epoch=True,
        )

    # ----------------------------------------------------------------------------- failures
    def _all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (just ``[obj]`` without a process group)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return [obj]
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    def _share_failure(self, failure: Exception | None, where: str) -> None:
        """A collective every rank enters: when any rank failed, every rank raises.

        One boolean all-reduce when all is well; the messages are gathered only on failure.
        A failing rank first writes its message where the other ranks' watchers read it
        (``rank_failures``): a rank held in another collective (SyncBN) still ends."""
        if failure is not None:
            announce(describe(failure), SHARING)
        ok = self.trainer.strategy.reduce_boolean_decision(failure is None, all=True)
        if ok:
            return
        messages = self._all_gather_object(_describe(failure))
        self._raise_if_failed(messages, failure, where)

    def _raise_if_failed(
        self, messages: list[str | None], own: Exception | None, where: str
    ) -> None:
        """Raise on every rank when any message (indexed by rank) reports a failure: the
        failing rank its own exception, the others ``RankFailure`` with its message. During
        ``fit`` a checkpoint is saved first (every rank takes part), so no training is lost."""
        failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
        if not failed:
            return
        saved = self._save_after_failure()
        rank, message = failed[0]
        note = f"; saved {saved}: fix the cause and resume with ckpt_path=last" if saved else ""
        # The line is printed once: by the lowest rank that failed with it.
        printed_below = any(m == _describe(own) for r, m in failed if r < self.global_rank)
        if own is not None and not isinstance(own, GaitGLError):
            log.error("rank %d failed %s: %s%s", self.global_rank, where, describe(own), note)
            raise shared(own, quiet=printed_below)  # a bug: keep its traceback
        if own is not None:
            own.args = (f"{own}{note}",)
            raise shared(own, quiet=printed_below)
        raise shared(RankFailure(f"rank {rank} failed {where}: {message}{note}"), quiet=True)

    def _save_after_failure(self) -> Path | None:
        """Write ``checkpoints/failed-step<N>.ckpt`` when training (every rank calls this)."""
        trainer = self.trainer
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return None
        callback = trainer.checkpoint_callback
        folder = (
            getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
        )
        path = Path(folder) / f"failed-step{self.global_step:06d}.ckpt"
        trainer.save_checkpoint(path)
        return path

    def _evaluate(self, metric: GaitEvaluation) -> tuple[dict[str, float] | None, Exception | None]:
        """Rank 0: run the protocol (kept as ``last_result``), write the submission of a
        hidden-label test set; return the summary, or the failure to share."""
        try:
            self.last_result = self._protocol_result(metric)
        except Exception as err:  # shared in the broadcast every other rank waits in
            return None, err
        return {k: float(v) for k, v in self.last_result.summary().items()}, None

    def _protocol_result(self, metric: GaitEvaluation) -> EvalResult:
        result = metric.compute()
        step = self._evaluated_step()
        if result.submission is not None and self.submission_dir:
            path = write_submission(result, metric.meta, Path(self.submission_dir), step)
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

    def _evaluated_step(self) -> int:
        """The training step the evaluated weights come from (a loaded checkpoint's own step
        when evaluating outside ``fit``)."""
        if self.trainer.state.fn != "fit" and self.loaded_step is not None:
            return self.loaded_step
        return int(self.global_step)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Remember the step of the weights (``task=eval`` keys its outputs by it)."""
        self.loaded_step = int(checkpoint.get("global_step", 0))

    # ----------------------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what is needed to know what produced the weights."""
        checkpoint["gaitgl"] = {"version": __version__, "config": self.run_config}
