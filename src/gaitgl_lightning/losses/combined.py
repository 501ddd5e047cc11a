"""The GaitGL loss: batch-all triplet + cross-entropy, per part (paper Eq. 12,
``L_c = L_tri + L_cse``; the triplet term is Eq. 13, see ``triplet.py`` for its sign)."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from gaitgl_lightning.errors import ConfigError

from .cross_entropy import part_cross_entropy
from .triplet import batch_all_triplet


class LossOutput(NamedTuple):
    """``total`` (backward this) and ``parts``: detached scalars for logging."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Losses run in float32 even under autocast (no-op on devices without autocast)."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(
    emb: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All-gather embeddings and labels from every rank; the gradient flows through this
    rank's shard only (the others are constants here, their ranks own them).

    Shards may differ in size: they are padded to the largest, gathered, and trimmed.
    Returns (global embeddings, global labels, world size).
    """
    world = dist.get_world_size()
    rank = dist.get_rank()
    size = torch.tensor([emb.shape[0]], device=emb.device, dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    top = max(counts)
    pad = top - emb.shape[0]
    e = emb.detach()
    lab = labels
    if pad:
        e = torch.cat([e, e.new_zeros((pad, *e.shape[1:]))])
        lab = torch.cat([lab, lab.new_zeros(pad)])
    es = [torch.empty_like(e) for _ in range(world)]
    ls = [torch.empty_like(lab) for _ in range(world)]
    dist.all_gather(es, e.contiguous())
    dist.all_gather(ls, lab.contiguous())
    es = [t[:c] for t, c in zip(es, counts, strict=True)]
    ls = [t[:c] for t, c in zip(ls, counts, strict=True)]
    es[rank] = emb
    return torch.cat(es), torch.cat(ls), world


class GaitGLLoss(nn.Module):
    """``L = triplet_weight * L_tri + ce_weight * L_ce``, both per part, in float32.

    Under an initialised torch.distributed group (and ``gather_distributed``) the triplet term
    sees the global P x K batch and is multiplied by the world size so that DDP's gradient
    averaging leaves the gradient of the global loss; CE stays local.  ``parts["triplet"]``
    logs the unscaled global triplet loss.
    """

    def __init__(
        self,
        triplet_margin: float = 0.2,
        triplet_weight: float = 1.0,
        ce_weight: float = 1.0,
        label_smoothing: float = 0.0,
        ce_scale: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if triplet_weight < 0 or ce_weight < 0 or triplet_weight + ce_weight == 0:
            raise ConfigError("GaitGLLoss weights must be >= 0 and not both 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.triplet_margin = float(triplet_margin)
        self.triplet_weight = float(triplet_weight)
        self.ce_weight = float(ce_weight)
        self.label_smoothing = float(label_smoothing)
        self.ce_scale = float(ce_scale)
        self.gather_distributed = bool(gather_distributed)

    def forward(
        self, embeddings: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor
    ) -> LossOutput:
        """Loss of embeddings [n, C, p], logits [n, classes, p] and labels [n]."""
        with _autocast_off(embeddings.device):
            emb = embeddings.float()
            labels = labels.long()
            zero = emb.new_zeros(())
            parts: dict[str, torch.Tensor] = {}
            total = zero
            if self.triplet_weight > 0:
                scale = 1
                e, lab = emb, labels
                if self.gather_distributed and _distributed():
                    e, lab, scale = gather_with_grad(emb, labels)
                tri = batch_all_triplet(e, lab, self.triplet_margin)
                total = total + self.triplet_weight * scale * tri.loss
                parts.update(
                    triplet=tri.loss.detach(),
                    triplet_nonzero=tri.nonzero,
                    mean_dist=tri.mean_dist,
                )
            else:
                parts.update(triplet=zero, triplet_nonzero=zero, mean_dist=zero)
            if self.ce_weight > 0:
                if logits is None:
                    raise ValueError("GaitGLLoss with ce_weight > 0 needs logits")
                ce = part_cross_entropy(logits.float(), labels, self.ce_scale, self.label_smoothing)
                total = total + self.ce_weight * ce.loss
                parts.update(ce=ce.loss.detach(), ce_acc=ce.accuracy)
            else:
                parts.update(ce=zero, ce_acc=zero)
            parts["loss"] = total.detach()
        return LossOutput(total, parts)
