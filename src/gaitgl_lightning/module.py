"""``GaitGLModule``: the LightningModule that trains the network and embeds for evaluation.

It owns no architecture and no data logic: the network, the loss and the optimizer / scheduler
factories are injected (Hydra builds them from ``conf/``). It only trains and embeds: the
evaluation protocol, its result and its files belong to ``runtime.evaluation.Evaluation``, the
checkpoints to ``runtime.checkpoints``, and a failure crosses ranks through
``runtime.rank_failures`` (a collective every rank enters, so nothing can hang).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn

from gaitgl_lightning import __version__
from gaitgl_lightning.errors import TrainingError
from gaitgl_lightning.models import silhouettes_to_input
from gaitgl_lightning.runtime.rank_failures import failures_shared

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class NonFiniteLossError(TrainingError, FloatingPointError):
    """Training stopped on a NaN / inf loss (the last checkpoint written before it is kept)."""


class GaitGLModule(L.LightningModule):
    """Train GaitGL by iterations with the combined loss; embed sequences for evaluation.

    Args:
        net: the network, ``net(x, lengths) -> (embeddings [n, C, p], logits [n, K, p])``.
        loss: ``loss(embeddings, logits, labels) -> (total, parts)``.
        optimizer: factory taking the parameters (a Hydra ``_partial_``).
        scheduler: factory taking the optimizer, stepped every iteration, or None.
        seed: base seed of the mask stream; each rank adds its rank so ranks draw different masks.
        run_config: the resolved run configuration, stored in every checkpoint.

    The evaluation (``runtime.evaluation.Evaluation``) takes the embeddings the validation and
    test steps return and runs the protocol of the data module (``datamodule.protocol``, its one
    owner), so there is no second copy here that could silently win.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        seed: int = 0,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.seed = int(seed)
        self.run_config = dict(run_config) if run_config is not None else None
        self._step_clock: float | None = None  # wall time of the previous step (throughput)

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        """Give every rank its own mask stream (``seed + rank``)."""
        set_seed = getattr(self.net, "set_mask_seed", None)
        if callable(set_seed):
            set_seed(self.seed + self.global_rank)

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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what is needed to know what produced the weights."""
        checkpoint["gaitgl"] = {"version": __version__, "config": self.run_config}

    # ----------------------------------------------------------------------------- steps
    def forward(self, sils: torch.Tensor, lengths: torch.Tensor | None = None) -> Any:
        """Embed a batch of uint8 silhouette sequences (``models.silhouettes_to_input``)."""
        return self.net(silhouettes_to_input(sils), lengths)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One P x K step: forward (a failure on any rank stops every rank), combined loss,
        logging; stop cleanly on a non-finite loss."""
        with failures_shared(self.trainer, f"in training step {self.global_step}"):
            out = self(batch["sils"], _clip_lengths(batch))
        result = self.loss(out.embeddings, out.logits, batch["labels"])
        self._check_finite(result.total, result.parts)
        self._log_step(result.total, result.parts, len(batch["labels"]))
        return result.total

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> Any:
        """The embeddings of a padded batch of whole sequences, for the ``Evaluation`` callback.

        A failure is returned, not raised: the callback shares it with every rank at the end
        of the epoch, before the metric's sync every other rank waits in."""
        try:
            return self(batch["sils"], batch["lengths"]).embeddings
        except Exception as err:
            return err

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> Any:
        return self.validation_step(batch, batch_idx)

    # ----------------------------------------------------------------------------- training
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

    def _log_step(
        self, total: torch.Tensor, parts: Mapping[str, torch.Tensor], local_batch: int
    ) -> None:
        """The loss and its terms, the learning rate, and sequences per second over the whole
        (global) batch from the wall time per step."""
        log = {f"train/{k}": v.float() for k, v in parts.items()}
        log["train/loss"] = total.detach().float()
        self.log_dict(log, on_step=True, on_epoch=False, batch_size=local_batch)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr, on_step=True, on_epoch=False)
        now = time.perf_counter()
        if self._step_clock is not None and now > self._step_clock:
            seqs = local_batch * self.trainer.world_size
            self.log(
                "train/seq_per_s", seqs / (now - self._step_clock), on_step=True, on_epoch=False
            )
        self._step_clock = now


def _clip_lengths(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The clips' lengths, or None when every clip is full (the network's faster path)."""
    lengths = batch.get("lengths")
    full = lengths is None or bool((lengths == batch["sils"].shape[1]).all())
    return None if full else lengths
