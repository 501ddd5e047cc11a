"""The two heads of the reference code (reference-implementations Sec. 2.1 "Head options").

Both take the pooled part features [n, C, p] and return ``(embeddings, logits)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SeparateFCs


class BNHead(nn.Module):
    """Default GaitGL head: per-part FC, ONE BatchNorm1d(C) shared over parts, per-part classifier.

    The embedding (used by the triplet loss and for retrieval) is the post-BN feature, as in the
    reference code; ``classifier=False`` drops the classifier (triplet-only training).
    """

    def __init__(self, parts: int, in_channels: int, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = SeparateFCs(parts, in_channels, embed_dim)
        self.bn = nn.BatchNorm1d(embed_dim)
        self.classifier = SeparateFCs(parts, embed_dim, num_classes) if num_classes > 0 else None

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[n, C, p] -> (embeddings [n, D, p], logits [n, classes, p] or None)."""
        emb = self.bn(self.fc(feat))
        logits = self.classifier(emb) if self.classifier is not None else None
        return emb, logits


class BNNeckHead(nn.Module):
    """BNNeck head: per-part FC, one BatchNorm1d over all D*p features, cosine classifier.

    The embedding is the pre-BN FC output; logits are cosines between the L2-normalised BN
    feature of each part and that part's L2-normalised class weights.
    """

    def __init__(self, parts: int, in_channels: int, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError("BNNeckHead needs num_classes > 0")
        self.fc = SeparateFCs(parts, in_channels, embed_dim)
        self.bn = nn.BatchNorm1d(embed_dim * parts)
        self.classifier = SeparateFCs(parts, embed_dim, num_classes, norm=True)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[n, C, p] -> (embeddings [n, D, p], cosine logits [n, classes, p])."""
        emb = self.fc(feat)
        n, d, p = emb.shape
        z = self.bn(emb.reshape(n, d * p)).view(n, d, p)
        logits = self.classifier(F.normalize(z, dim=1))
        return emb, logits
