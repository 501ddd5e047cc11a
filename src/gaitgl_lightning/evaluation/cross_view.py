"""Cross-view protocols (CASIA-B, OU-MVLP): rank-1 per probe view x gallery view.

Each protocol splits the embeddings ``[N, C, p]`` (row ``i`` = sequence ``i`` of a
``SequenceMeta``) into probe and gallery by sequence type, scores every probe against the
gallery of each view, and averages as its benchmark does. Views come from the metadata (never a
fixed list); type names compare case-insensitively. ``docs/evaluation.md`` says exactly how each
number is computed; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.errors import EvaluationError
from gaitgl_lightning.evaluation.checks import check_inputs, lower, sort_views, split_by_types
from gaitgl_lightning.evaluation.distance import (
    DEFAULT_CHUNK_SIZE,
    check_distance,
    iter_distance_chunks,
)
from gaitgl_lightning.evaluation.ranking import encode_labels, view_nearest_hits
from gaitgl_lightning.evaluation.registry import Protocol
from gaitgl_lightning.evaluation.results import EvalResult, ViewTable

CASIA_B_GALLERY: tuple[str, ...] = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B_PROBES: dict[str, tuple[str, ...]] = {
    "NM": ("nm-05", "nm-06"),
    "BG": ("bg-01", "bg-02"),
    "CL": ("cl-01", "cl-02"),
}
OUMVLP_GALLERY: tuple[str, ...] = ("01",)
OUMVLP_PROBE: tuple[str, ...] = ("00",)


def cross_view_hits(
    probe: Tensor,
    gallery: Tensor,
    probe_subjects: np.ndarray,
    gallery_subjects: np.ndarray,
    gallery_views: np.ndarray,
    views: Sequence[str],
    distance: str,
    chunk_size: int,
    probe_index: np.ndarray | None = None,
    gallery_index: np.ndarray | None = None,
) -> np.ndarray:
    """Rank-1 hit of every probe against the gallery of each view: bool ``[P, len(views)]``.

    The gallery is reordered by view (stable, so gallery order is kept inside a view) and the
    nearest gallery sequence of each view is found by ``ranking.view_nearest_hits`` (first
    minimum on ties).
    With ``probe_index`` / ``gallery_index``, ``probe`` / ``gallery`` are the full embedding
    matrix and the indices pick the rows (no copy of the sets); the label columns are per row
    of the selection.
    """
    pcodes, gcodes = encode_labels(probe_subjects, gallery_subjects)
    vcode = {v: i for i, v in enumerate(views)}
    gv = np.asarray([vcode[v] for v in np.asarray(gallery_views).astype(str)], dtype=np.int64)
    order = np.argsort(gv, kind="stable")
    bounds = np.searchsorted(gv[order], np.arange(len(views) + 1))
    glab = gcodes[torch.as_tensor(order)].to(gallery.device)
    plab = pcodes.to(gallery.device)
    grows = torch.as_tensor(order if gallery_index is None else np.asarray(gallery_index)[order])
    prows = None if probe_index is None else torch.as_tensor(np.asarray(probe_index))
    hits = np.zeros((len(probe_subjects), len(views)), dtype=bool)
    chunks = iter_distance_chunks(probe, gallery, distance, chunk_size, grows, prows)
    for start, d in chunks:
        n = d.shape[0]
        hits[start : start + n] = (
            view_nearest_hits(d, plab[start : start + n], glab, bounds).cpu().numpy()
        )
    return hits


def view_table(
    hits: np.ndarray,
    probe_views: np.ndarray,
    views: Sequence[str],
    include_identical_view: bool,
    valid: np.ndarray | None = None,
) -> ViewTable:
    """Average per-probe hits into the (probe view x gallery view) table and its means.

    ``acc[i, j]`` averages over the probes seen from view ``i`` (and, when ``valid`` is given,
    only those whose subject has a gallery sequence in view ``j``). A probe view's number is the
    mean over gallery views, the diagonal left out unless ``include_identical_view``; the
    condition's number is the mean over probe views.
    """
    pviews = [v for v in views if (probe_views == v).any()]
    acc = np.full((len(pviews), len(views)), np.nan)
    for i, pv in enumerate(pviews):
        rows = probe_views == pv
        for j in range(len(views)):
            m = rows if valid is None else rows & valid[:, j]
            if m.any():
                acc[i, j] = hits[m, j].mean()
    per_view: dict[str, float] = {}
    for i, pv in enumerate(pviews):
        cols = [j for j, gv in enumerate(views) if include_identical_view or gv != pv]
        vals = acc[i, cols]
        vals = vals[~np.isnan(vals)]
        per_view[pv] = float(vals.mean()) if vals.size else float("nan")
    means = np.asarray([v for v in per_view.values() if not np.isnan(v)])
    mean = float(means.mean()) if means.size else float("nan")
    return ViewTable(list(pviews), list(views), acc, per_view, mean)


def _views_and_hits(
    protocol: str,
    emb: Tensor,
    meta: SequenceMeta,
    pidx: np.ndarray,
    gidx: np.ndarray,
    include_identical_view: bool,
    distance: str,
    chunk_size: int,
) -> tuple[list[str], np.ndarray]:
    """The views of the evaluation, checked as every cross-view protocol needs, and every
    probe's rank-1 hit per gallery view (rows of ``emb``)."""
    gviews = set(meta.views[gidx].astype(str).tolist())
    pviews = set(meta.views[pidx].astype(str).tolist())
    missing = sorted(pviews - gviews)
    if missing:
        raise EvaluationError(
            f"{protocol}: probe view(s) {missing} missing from the gallery "
            f"(gallery views: {sort_views(gviews)})"
        )
    if not include_identical_view and len(gviews) < 2:
        raise EvaluationError(
            f"{protocol}: identical views are excluded but the gallery has only the view(s) "
            f"{sorted(gviews)}: no cross-view pair to score (pass include_identical_view=True)"
        )
    views = sort_views(gviews)
    hits = cross_view_hits(
        emb,
        emb,
        meta.subjects[pidx],
        meta.subjects[gidx],
        meta.views[gidx],
        views,
        distance,
        chunk_size,
        probe_index=pidx,
        gallery_index=gidx,
    )
    return views, hits


class CasiaB(Protocol):
    name = "casia_b"

    def run(
        self,
        embeddings: Tensor,
        meta: SequenceMeta,
        *,
        distance: str = "euc_parts",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        include_identical_view: bool = False,
        gallery_types: Sequence[str] = CASIA_B_GALLERY,
        probe_types: Mapping[str, Sequence[str]] | None = None,
    ) -> EvalResult:
        """CASIA-B: gallery NM#01-04, probes NM#05-06 / BG#01-02 / CL#01-02, cross-view rank-1.

        Why this exact recipe: it is the one every CASIA-B table in the literature uses (rank-1 per
        probe-view x gallery-view pair, identical views excluded, mean over gallery views, then over
        probe views; headline = mean of the conditions). Conditions without any probe in the
        metadata are left out (and named in ``options['conditions']``); the other variant
        (identical views included or not) is returned in ``alt_metrics``.
        """
        name = "casia_b"
        check_distance(distance)
        emb = check_inputs(name, embeddings, meta)
        conds = dict(CASIA_B_PROBES if probe_types is None else probe_types)
        all_probe_types = [t for ts in conds.values() for t in ts]
        pidx, gidx = split_by_types(name, meta, gallery_types, all_probe_types)
        views, hits = _views_and_hits(
            name, emb, meta, pidx, gidx, include_identical_view, distance, chunk_size
        )
        ptypes = lower(meta.types[pidx])
        pviews = meta.views[pidx].astype(str)
        tables: dict[str, ViewTable] = {}
        metrics: dict[str, float] = {}
        alt: dict[str, float] = {}
        present: list[str] = []
        for cond, types in conds.items():
            rows = np.isin(ptypes, [t.lower() for t in types])
            if not rows.any():
                continue
            present.append(cond)
            table = view_table(hits[rows], pviews[rows], views, include_identical_view)
            other = view_table(hits[rows], pviews[rows], views, not include_identical_view)
            tables[cond] = table
            metrics[f"{cond}/rank1"] = table.mean
            alt[f"{cond}/rank1"] = other.mean
        metrics["rank1"] = float(np.mean([metrics[f"{c}/rank1"] for c in present]))
        alt["rank1"] = float(np.mean([alt[f"{c}/rank1"] for c in present]))
        variant = (
            "identical views included" if include_identical_view else "identical views excluded"
        )
        other_name = (
            "identical views excluded" if include_identical_view else "identical views included"
        )
        return EvalResult(
            protocol=name,
            variant=variant,
            distance=distance,
            metrics=metrics,
            options={
                "include_identical_view": include_identical_view,
                "gallery_types": list(gallery_types),
                "probe_types": {k: list(v) for k, v in conds.items()},
                "conditions": present,
                "views": views,
                "chunk_size": chunk_size,
            },
            counts={"num_probes": len(pidx), "num_gallery": len(gidx), "num_views": len(views)},
            view_tables=tables,
            alt_metrics={other_name: alt},
        )


class OUMVLP(Protocol):
    name = "oumvlp"

    def run(
        self,
        embeddings: Tensor,
        meta: SequenceMeta,
        *,
        distance: str = "euc_parts",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        exclude_invalid: bool = False,
        include_identical_view: bool = False,
        gallery_types: Sequence[str] = OUMVLP_GALLERY,
        probe_types: Sequence[str] = OUMVLP_PROBE,
    ) -> EvalResult:
        """OU-MVLP: gallery Seq#01, probe Seq#00, cross-view rank-1, both probe-set variants.

        "All probes" keeps probes whose subject has no gallery sequence in the gallery view (they
        cannot be right, so they count as misses; the field's framework does this); "invalid
        excluded" drops them from that (probe view, gallery view) pair. Both are always computed;
        ``exclude_invalid`` picks which one is the headline ``rank1``.
        """
        name = "oumvlp"
        check_distance(distance)
        emb = check_inputs(name, embeddings, meta)
        pidx, gidx = split_by_types(name, meta, gallery_types, probe_types)
        views, hits = _views_and_hits(
            name, emb, meta, pidx, gidx, include_identical_view, distance, chunk_size
        )
        # valid[i, v]: the subject of probe i has at least one gallery sequence in view v.
        pcodes, gcodes = (
            c.numpy() for c in encode_labels(meta.subjects[pidx], meta.subjects[gidx])
        )
        vpos = {v: i for i, v in enumerate(views)}
        num_codes = int(max(pcodes.max(), gcodes.max())) + 1
        has = np.zeros((num_codes, len(views)), dtype=bool)
        has[gcodes, [vpos[v] for v in meta.views[gidx].astype(str)]] = True
        valid = has[pcodes]
        pviews = meta.views[pidx].astype(str)
        t_all = view_table(hits, pviews, views, include_identical_view)
        t_valid = view_table(hits, pviews, views, include_identical_view, valid=valid)
        if np.isnan(t_valid.mean):
            raise EvaluationError(
                f"{name}: no probe subject has any gallery sequence in a scored view"
            )
        metrics = {
            "rank1": t_valid.mean if exclude_invalid else t_all.mean,
            "rank1_all_probes": t_all.mean,
            "rank1_invalid_excluded": t_valid.mean,
        }
        other = view_table(hits, pviews, views, not include_identical_view)
        other_v = view_table(hits, pviews, views, not include_identical_view, valid=valid)
        other_name = (
            "identical views excluded" if include_identical_view else "identical views included"
        )
        views_part = (
            "identical views included" if include_identical_view else "identical views excluded"
        )
        probes_part = "invalid probes excluded" if exclude_invalid else "all probes"
        return EvalResult(
            protocol=name,
            variant=f"{probes_part}, {views_part}",
            distance=distance,
            metrics=metrics,
            options={
                "exclude_invalid": exclude_invalid,
                "include_identical_view": include_identical_view,
                "gallery_types": list(gallery_types),
                "probe_types": list(probe_types),
                "views": views,
                "chunk_size": chunk_size,
            },
            counts={
                "num_probes": len(pidx),
                "num_gallery": len(gidx),
                "num_views": len(views),
                "num_invalid_probe_view_pairs": int((~valid).sum()),
            },
            view_tables={"all probes": t_all, "invalid excluded": t_valid},
            alt_metrics={
                other_name: {
                    "rank1_all_probes": other.mean,
                    "rank1_invalid_excluded": other_v.mean,
                }
            },
        )


casia_b = CasiaB()
oumvlp = OUMVLP()
