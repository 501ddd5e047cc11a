"""Cross-entropy per part (``L_cse`` of paper Eq. 12, which gives it no equation of its own):
every part's logits are classified on their own."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class CEStats(NamedTuple):
    """CE loss (scalar, with grad) and the detached per-part accuracy."""

    loss: torch.Tensor
    accuracy: torch.Tensor


def part_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, scale: float = 1.0, label_smoothing: float = 0.0
) -> CEStats:
    """Mean CE over n x parts of logits [n, classes, p] against labels [n] (repeated per part)."""
    if logits.dim() != 3 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"CE expects logits [n, classes, p] and labels [n], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if logits.shape[1] == 0:
        raise ValueError(
            "CE needs logits with at least one class (was the model built with num_classes=0?)"
        )
    target = labels[:, None].expand(-1, logits.shape[2])
    z = logits * scale
    loss = F.cross_entropy(z, target, label_smoothing=label_smoothing)
    acc = (z.argmax(1) == target).float().mean().detach()
    return CEStats(loss, acc)
