"""Batch-all triplet loss per part (paper Eq. 13; reference-implementations Sec. 4).

The hinge is ``[D(anchor, positive) - D(anchor, negative) + m]_+``. Eq. 13 as printed has the
two distances the other way round, ``[D(A_i, B_k) - D(A_i, A_j) + m]_+`` (B_k of another
class), which would pull classes together; the paper's own text ("increases the inter-class
distance and reduces the intra-class distance") and every reference implementation use the
sign written here.

Each of the p parts is its own batch of n C-dim vectors.  Every (anchor, positive, negative)
triplet counts (positives include the anchor itself, as the reference code does); per part the
loss is the sum of the hinge terms divided by the number of non-zero terms, then the mean over
parts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class TripletStats(NamedTuple):
    """Triplet loss (scalar, with grad) and detached logging values."""

    loss: torch.Tensor
    nonzero: torch.Tensor
    mean_dist: torch.Tensor


def part_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances per part: [n, C, p] -> [p, n, n] (sqrt(max(x^2 + y^2 - 2xy, 1e-12)))."""
    x = emb.permute(2, 0, 1).contiguous()  # [p, n, C]; contiguous: strided CPU bmm is slow
    sq = (x * x).sum(-1)
    d2 = sq[:, :, None] + sq[:, None, :] - 2 * x @ x.transpose(1, 2)
    # clamp instead of relu: sqrt has an infinite slope at 0 (the anchor-anchor distance).
    return d2.clamp_min(1e-12).sqrt()


def batch_all_triplet(
    emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, chunk: int = 1 << 24
) -> TripletStats:
    """Batch-all triplet loss of embeddings [n, C, p] with labels [n].

    P x K batches (every label equally often) use a gather of the K positives and n-K
    negatives ([p, n, K, n-K]); other batches fall back to a masked [p, n, n, n] computed in
    part chunks of at most ``chunk`` elements.
    """
    if emb.dim() != 3 or labels.shape != (emb.shape[0],):
        raise ValueError(
            f"triplet loss expects embeddings [n, C, p] and labels [n], got "
            f"{tuple(emb.shape)} and {tuple(labels.shape)}"
        )
    dist = part_distances(emb)
    p, n, _ = dist.shape
    same = labels[:, None] == labels[None, :]
    counts = same.sum(1)
    if n > 0 and bool((counts == counts[0]).all()) and int(counts[0]) < n:
        k = int(counts[0])
        rows = torch.arange(n, device=emb.device)[:, None]
        pos_idx = same.nonzero()[:, 1].view(n, k)
        neg_idx = (~same).nonzero()[:, 1].view(n, n - k)
        dap = dist[:, rows, pos_idx]  # [p, n, K]
        dan = dist[:, rows, neg_idx]  # [p, n, n-K]
        hinge = F.relu(dap[..., :, None] - dan[..., None, :] + margin)
        total = hinge.flatten(1).sum(1)
        nz = (hinge > 0).flatten(1).sum(1)
    else:
        valid = (same[:, :, None] & ~same[:, None, :]).to(dist.dtype)  # [a, pos, neg]
        step = max(1, chunk // max(n**3, 1))
        totals, nzs = [], []
        for s in range(0, p, step):
            d = dist[s : s + step]
            hinge = F.relu(d[:, :, :, None] - d[:, :, None, :] + margin) * valid
            totals.append(hinge.flatten(1).sum(1))
            nzs.append((hinge > 0).flatten(1).sum(1))
        total, nz = torch.cat(totals), torch.cat(nzs)
    per_part = total / (nz.to(total.dtype) + 1e-9)
    return TripletStats(per_part.mean(), nz.float().mean().detach(), dist.mean().detach())
