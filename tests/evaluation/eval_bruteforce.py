"""Brute-force reference implementations for the evaluation tests: plain Python loops.

They take a precomputed distance matrix so that ties are exactly the ties of the package's
distances; rankings are ``sorted`` by (distance, gallery position), the stated tie rule.
"""

from __future__ import annotations

import numpy as np
import torch

from gaitgl_lightning.data.meta import SequenceMeta


def naive_distance(p: torch.Tensor, g: torch.Tensor, distance: str) -> torch.Tensor:
    """Direct formula, one pair at a time (float64)."""
    p, g = p.double(), g.double()
    out = torch.zeros(p.shape[0], g.shape[0], dtype=torch.float64)
    for i in range(p.shape[0]):
        for j in range(g.shape[0]):
            x, y = p[i], g[j]
            if distance == "euc_flat":
                out[i, j] = (x - y).flatten().norm()
            elif distance == "euc_parts":
                out[i, j] = (x - y).norm(dim=0).mean()
            else:
                cos = (x * y).sum(0) / (
                    x.norm(dim=0).clamp_min(1e-12) * y.norm(dim=0).clamp_min(1e-12)
                )
                out[i, j] = 1 - cos.mean()
    return out


def ranking(drow: list[float]) -> list[int]:
    return sorted(range(len(drow)), key=lambda j: (drow[j], j))


def first_rank(drow: list[float], plab: str, glab: list[str]) -> int:
    for pos, j in enumerate(ranking(drow)):
        if glab[j] == plab:
            return pos
    return len(glab)


def ap_inp(drow: list[float], plab: str, glab: list[str]) -> tuple[float, float]:
    order = ranking(drow)
    hits = [glab[j] == plab for j in order]
    n = sum(hits)
    if n == 0:
        return 0.0, 0.0
    found, precs, last = 0, [], 0
    for pos, h in enumerate(hits, start=1):
        if h:
            found += 1
            precs.append(found / pos)
            last = pos
    return sum(precs) / n, n / last


def cross_view_rank1(dist, pidx, gidx, meta, include_identical, valid_only=False):
    """dict probe view -> dict gallery view -> accuracy (None when no probe), by loops."""
    pviews = sorted({meta.views[i] for i in pidx})
    gviews = sorted({meta.views[j] for j in gidx})
    table = {}
    for pv in pviews:
        table[pv] = {}
        for gv in gviews:
            cols = [c for c, j in enumerate(gidx) if meta.views[j] == gv]
            hits = []
            for r, i in enumerate(pidx):
                if meta.views[i] != pv:
                    continue
                if valid_only and not any(meta.subjects[gidx[c]] == meta.subjects[i] for c in cols):
                    continue
                best = min(cols, key=lambda c: (float(dist[r, c]), c))
                hits.append(meta.subjects[gidx[best]] == meta.subjects[i])
            table[pv][gv] = (sum(hits) / len(hits)) if hits else None
    means = []
    for pv in pviews:
        vals = [
            a for gv, a in table[pv].items() if a is not None and (include_identical or gv != pv)
        ]
        if vals:
            means.append(sum(vals) / len(vals))
    return table, float(np.mean(means))


CASIA_TYPES = [f"nm-0{i}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]


def make_casia(
    subjects: int = 4,
    views: tuple[str, ...] = ("000", "036", "090"),
    seed: int = 0,
    noise: float = 1.0,
    channels: int = 4,
    parts: int = 2,
    integer: bool = False,
) -> tuple[torch.Tensor, SequenceMeta]:
    """CASIA-B-named toy set: every subject x type x view, embedding = subject centre + noise."""
    g = torch.Generator().manual_seed(seed)
    subs, types, vws = [], [], []
    for s in range(subjects):
        for t in CASIA_TYPES:
            for v in views:
                subs.append(f"{s + 75:03d}")
                types.append(t)
                vws.append(v)
    centre = torch.randn(subjects, channels, parts, generator=g)
    sid = torch.tensor([int(s) - 75 for s in subs])
    emb = centre[sid] + noise * torch.randn(len(subs), channels, parts, generator=g)
    if integer:
        emb = torch.randint(0, 2, emb.shape, generator=g).float()
    return emb, SequenceMeta.from_lists(subs, types, vws)
