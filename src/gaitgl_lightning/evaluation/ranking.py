"""Retrieval metrics on one block of a probe x gallery distance matrix.

Ties are part of the definition, not an accident of the sort: the gallery is ranked by distance
and, at equal distance, by gallery order (the order of the evaluation set, which
``GaitEvaluation`` makes identical on any number of processes). That is what a stable sort
gives, so these functions agree with a brute-force ``sorted(..., key=distance)`` loop exactly.

The functions take integer label codes (see ``encode_labels``) so that the comparisons run as
tensor operations on the distances' device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def encode_labels(*columns: np.ndarray) -> list[Tensor]:
    """Map string labels of several columns to shared int64 codes (equal string, equal code)."""
    if not columns:
        return []
    joined = np.concatenate([np.asarray(c).astype(str) for c in columns])
    _, codes = np.unique(joined, return_inverse=True)
    codes = codes.reshape(-1)
    out: list[Tensor] = []
    start = 0
    for c in columns:
        out.append(torch.as_tensor(codes[start : start + len(c)].astype(np.int64)))
        start += len(c)
    return out


def first_match_rank(dist: Tensor, probe_labels: Tensor, gallery_labels: Tensor) -> Tensor:
    """0-based position of the first true match of each probe row (``G`` when there is none).

    Why not a sort: the position is the number of gallery items strictly closer than the
    nearest true match, plus those at the same distance that come earlier in gallery order.
    That is one pass over ``[n, G]`` instead of an ``O(G log G)`` sort per probe.
    """
    n, g = dist.shape
    if g == 0:
        return torch.zeros(n, dtype=torch.long, device=dist.device)
    match = gallery_labels.to(dist.device).unsqueeze(0) == probe_labels.to(dist.device).unsqueeze(1)
    dmin_col = torch.where(match, dist, float("inf")).amin(1, keepdim=True)
    # Counts summed as int32: a bool -> int64 row sum costs 1.6x the int32 one over [n, G].
    closer = (dist < dmin_col).sum(1, dtype=torch.int32)
    at_dmin = (dist <= dmin_col).sum(1, dtype=torch.int32) - closer
    rank = closer.long()
    # Other columns at the nearest true match's distance are rare: the ones before the first
    # true match there are counted only on the rows that have any.
    tied = torch.nonzero(at_dmin > 1).flatten()
    if tied.numel():
        eq = dist[tied] == dmin_col[tied]
        first = (eq & match[tied]).to(torch.uint8).argmax(1, keepdim=True)
        cols = torch.arange(g, device=dist.device).unsqueeze(0)
        rank[tied] += (eq & (cols < first)).sum(1)
    has = match.any(1)
    return torch.where(has, rank, torch.full_like(rank, g))


def view_nearest_hits(
    dist: Tensor, probe_labels: Tensor, gallery_labels: Tensor, bounds: Sequence[int] | np.ndarray
) -> Tensor:
    """Rank-1 hit of each probe row against each view's gallery: bool ``[n, views]``.

    The gallery columns are grouped by view, view ``v`` being columns
    ``bounds[v]:bounds[v + 1]``; the nearest column of a view is its first minimum (ties by
    gallery order). Works on the same block as ``first_match_rank``, so a protocol that wants
    per-view rank-1 and rank-k makes one distance pass.
    """
    glab = gallery_labels.to(dist.device)
    plab = probe_labels.to(dist.device)
    views = len(bounds) - 1
    hits = torch.zeros(dist.shape[0], views, dtype=torch.bool, device=dist.device)
    for v in range(views):
        s, e = int(bounds[v]), int(bounds[v + 1])
        if e > s:
            # min(1).indices: the first minimum as argmin, 1.7x faster on a strided slice
            hits[:, v] = glab[s:e][dist[:, s:e].min(1).indices] == plab
    return hits


def cmc_from_ranks(ranks: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of probes whose first true match is within the top ``k`` (rank-k accuracy)."""
    if ranks.numel() == 0:
        raise ValueError("cannot compute rank-k accuracy: no probe")
    r = ranks.cpu()
    return {int(k): float((r < int(k)).double().mean()) for k in ks}


def ap_and_inp(dist: Tensor, probe_labels: Tensor, gallery_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Average precision and inverse negative penalty of each probe row (0 where no match).

    AP = mean over the true matches of the precision at their positions; INP = (number of true
    matches) / (1-based position of the last true match), as defined for mINP by Ye et al.
    (deep person re-identification survey). The ranking is the stable one (ties by gallery order).
    """
    order = torch.sort(dist, dim=1, stable=True).indices
    glab = gallery_labels.to(dist.device)
    match = (glab[order] == probe_labels.to(dist.device).unsqueeze(1)).double()
    num = match.sum(1)
    pos = torch.arange(1, dist.shape[1] + 1, device=dist.device, dtype=torch.float64)
    cum = match.cumsum(1)
    ap = (match * cum / pos.unsqueeze(0)).sum(1) / num.clamp_min(1.0)
    last = (match * pos.unsqueeze(0)).max(1).values
    inp = torch.where(num > 0, num / last.clamp_min(1.0), torch.zeros_like(num))
    return ap, inp
