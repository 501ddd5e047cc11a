"""The evaluation protocols of the gait literature, one function each, and the registry.

Every protocol takes embeddings ``[N, C, p]`` (or ``[N, D]``) whose row ``i`` is sequence ``i``
of a ``SequenceMeta``, splits them into probe and gallery by the sequence types, and returns an
``EvalResult``. Views are read from the metadata (never a fixed list), type names are compared
case-insensitively (``nm-01`` == ``NM-01``). Exactly how each number is computed is written in
``docs/evaluation.md``; keep the two in step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.evaluation.distance import (
    DEFAULT_CHUNK_SIZE,
    as_parts,
    check_distance,
    iter_distance_chunks,
)
from gaitgl_lightning.evaluation.ranking import (
    ap_and_inp,
    cmc_from_ranks,
    encode_labels,
    first_match_rank,
)
from gaitgl_lightning.evaluation.results import EvalResult, ViewTable

CASIA_B_GALLERY: tuple[str, ...] = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B_PROBES: dict[str, tuple[str, ...]] = {
    "NM": ("nm-05", "nm-06"),
    "BG": ("bg-01", "bg-02"),
    "CL": ("cl-01", "cl-02"),
}
OUMVLP_GALLERY: tuple[str, ...] = ("01",)
OUMVLP_PROBE: tuple[str, ...] = ("00",)
# GREW: each test subject has two gallery sequences (types 01, 02); everything else is a probe
# (test probes, validation probes). Override both lists for other layouts.
GREW_GALLERY: tuple[str, ...] = ("01", "02")
CURVE_MIN_RANK = 20  # the rank-k curve always extends to at least rank 20 (GREW's cut-off)


# ----------------------------------------------------------------------------- helpers


def _check_inputs(protocol: str, embeddings: Tensor, meta: SequenceMeta) -> Tensor:
    """Shape, length and finiteness checks, so bad input fails here and not in a NaN."""
    if not isinstance(meta, SequenceMeta):
        raise ValueError(f"{protocol}: meta must be a SequenceMeta, got {type(meta).__name__}")
    emb = as_parts(embeddings, f"{protocol}: embeddings")
    if emb.shape[0] != len(meta):
        raise ValueError(
            f"{protocol}: {emb.shape[0]} embeddings but {len(meta)} metadata rows "
            "(row i of the metadata must describe embedding i)"
        )
    if emb.shape[0] == 0:
        raise ValueError(f"{protocol}: no embeddings to evaluate")
    if not bool(torch.isfinite(emb).all()):
        raise ValueError(f"{protocol}: embeddings contain NaN or infinite values")
    return emb


def _lower(values: np.ndarray) -> np.ndarray:
    return np.char.lower(np.char.strip(np.asarray(values).astype(str)))


def _type_mask(meta: SequenceMeta, types: Sequence[str]) -> np.ndarray:
    wanted = {str(t).strip().lower() for t in types}
    return np.isin(_lower(meta.types), sorted(wanted))


def _sort_views(views: Iterable[str]) -> list[str]:
    """Numeric order when every view is a number (``000 < 018 < 090``), text order otherwise."""
    uniq = sorted({str(v) for v in views})
    try:
        return sorted(uniq, key=lambda v: (float(v), v))
    except ValueError:
        return uniq


def _check_ranks(protocol: str, ranks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ranks)
    if not out or any(k < 1 for k in out):
        raise ValueError(f"{protocol}: ranks must be positive integers, got {list(ranks)}")
    return out


def _split(
    protocol: str,
    meta: SequenceMeta,
    gallery_types: Sequence[str] | None,
    probe_types: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of probe and gallery; probe defaults to every non-gallery row."""
    if gallery_types is None or len(gallery_types) == 0:
        raise ValueError(f"{protocol}: gallery_types must name at least one sequence type")
    gmask = _type_mask(meta, gallery_types)
    if probe_types is None:
        pmask = ~gmask
    else:
        overlap = {t.lower() for t in probe_types} & {t.lower() for t in gallery_types}
        if overlap:
            raise ValueError(f"{protocol}: types {sorted(overlap)} are both probe and gallery")
        pmask = _type_mask(meta, probe_types)
    present = sorted(set(_lower(meta.types).tolist()))
    if not gmask.any():
        raise ValueError(
            f"{protocol}: empty gallery: no sequence has a gallery type {list(gallery_types)} "
            f"(types present: {present[:20]})"
        )
    if not pmask.any():
        raise ValueError(
            f"{protocol}: no probe: no sequence has a probe type "
            f"{list(probe_types) if probe_types is not None else '(any non-gallery type)'} "
            f"(types present: {present[:20]})"
        )
    return np.flatnonzero(pmask), np.flatnonzero(gmask)


def _curve_ranks(ranks: Sequence[int], gallery_size: int) -> list[int]:
    top = max(max(ranks), CURVE_MIN_RANK)
    return list(range(1, max(1, min(top, gallery_size)) + 1))


# ------------------------------------------------------------------- cross-view protocols


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
    nearest gallery sequence of each view is found with ``argmin`` (first minimum on ties).
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
        lab = plab[start : start + n]
        for v in range(len(views)):
            s, e = int(bounds[v]), int(bounds[v + 1])
            if e > s:
                j = d[:, s:e].argmin(1)
                hits[start : start + n, v] = (glab[s:e][j] == lab).cpu().numpy()
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


def _cross_view_setup(
    protocol: str,
    emb: Tensor,
    meta: SequenceMeta,
    pidx: np.ndarray,
    gidx: np.ndarray,
    include_identical_view: bool,
) -> list[str]:
    """Views of the evaluation, with the checks every cross-view protocol needs."""
    gviews = set(meta.views[gidx].astype(str).tolist())
    pviews = set(meta.views[pidx].astype(str).tolist())
    missing = sorted(pviews - gviews)
    if missing:
        raise ValueError(
            f"{protocol}: probe view(s) {missing} missing from the gallery "
            f"(gallery views: {_sort_views(gviews)})"
        )
    if not include_identical_view and len(gviews) < 2:
        raise ValueError(
            f"{protocol}: identical views are excluded but the gallery has only the view(s) "
            f"{sorted(gviews)}: no cross-view pair to score (pass include_identical_view=True)"
        )
    return _sort_views(gviews)


def casia_b(
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
    emb = _check_inputs(name, embeddings, meta)
    conds = dict(CASIA_B_PROBES if probe_types is None else probe_types)
    all_probe_types = [t for ts in conds.values() for t in ts]
    pidx, gidx = _split(name, meta, gallery_types, all_probe_types)
    views = _cross_view_setup(name, emb, meta, pidx, gidx, include_identical_view)
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
    ptypes = _lower(meta.types[pidx])
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
    variant = "identical views included" if include_identical_view else "identical views excluded"
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


def oumvlp(
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
    emb = _check_inputs(name, embeddings, meta)
    pidx, gidx = _split(name, meta, gallery_types, probe_types)
    views = _cross_view_setup(name, emb, meta, pidx, gidx, include_identical_view)
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
    # valid[i, v]: the subject of probe i has at least one gallery sequence in view v.
    pcodes, gcodes = (c.numpy() for c in encode_labels(meta.subjects[pidx], meta.subjects[gidx]))
    vpos = {v: i for i, v in enumerate(views)}
    num_codes = int(max(pcodes.max(), gcodes.max())) + 1
    has = np.zeros((num_codes, len(views)), dtype=bool)
    has[gcodes, [vpos[v] for v in meta.views[gidx].astype(str)]] = True
    valid = has[pcodes]
    pviews = meta.views[pidx].astype(str)
    t_all = view_table(hits, pviews, views, include_identical_view)
    t_valid = view_table(hits, pviews, views, include_identical_view, valid=valid)
    if np.isnan(t_valid.mean):
        raise ValueError(f"{name}: no probe subject has any gallery sequence in a scored view")
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


# ------------------------------------------------------------------- retrieval protocols


def retrieval_scores(
    probe: Tensor,
    gallery: Tensor,
    probe_subjects: np.ndarray,
    gallery_subjects: np.ndarray,
    distance: str,
    chunk_size: int,
    *,
    with_map: bool,
    top_n: int = 0,
    probe_index: np.ndarray | None = None,
    gallery_index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-probe first-match rank, AP, INP and (optionally) the ``top_n`` gallery rows.

    One chunked pass; nothing of size probes x gallery is ever held. The indices work as in
    ``cross_view_hits``; ``top`` holds positions within the gallery selection.
    """
    pcodes, gcodes = encode_labels(probe_subjects, gallery_subjects)
    plab, glab = pcodes.to(gallery.device), gcodes.to(gallery.device)
    first: list[Tensor] = []
    aps: list[Tensor] = []
    inps: list[Tensor] = []
    tops: list[Tensor] = []
    grows = None if gallery_index is None else torch.as_tensor(np.asarray(gallery_index))
    prows = None if probe_index is None else torch.as_tensor(np.asarray(probe_index))
    for start, d in iter_distance_chunks(probe, gallery, distance, chunk_size, grows, prows):
        lab = plab[start : start + d.shape[0]]
        first.append(first_match_rank(d, lab, glab).cpu())
        if with_map:
            ap, inp = ap_and_inp(d, lab, glab)
            aps.append(ap.cpu())
            inps.append(inp.cpu())
        if top_n > 0:
            tops.append(stable_topk(d, top_n).cpu())
    out = {"first_rank": torch.cat(first).numpy()}
    if with_map:
        out["ap"] = torch.cat(aps).numpy()
        out["inp"] = torch.cat(inps).numpy()
    if top_n > 0:
        out["top"] = torch.cat(tops).numpy()
    return out


def stable_topk(dist: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` nearest gallery rows per probe, ties ordered by gallery order.

    ``torch.topk`` does not promise an order among equal values; re-sorting the selected
    indices and then stably by distance restores gallery order inside ties.
    """
    k = min(k, dist.shape[1])
    idx = dist.topk(k, dim=1, largest=False, sorted=True).indices
    idx = idx.sort(dim=1).values
    order = torch.sort(dist.gather(1, idx), dim=1, stable=True).indices
    return idx.gather(1, order)


def _retrieval_result(
    name: str,
    variant: str,
    scores: dict[str, np.ndarray],
    gallery_size: int,
    ranks: Sequence[int],
    *,
    skip_unmatched: bool,
    with_map: bool,
    distance: str,
    options: dict[str, Any],
    num_probes: int,
) -> EvalResult:
    first = scores["first_rank"]
    matched = first < gallery_size
    if not matched.any():
        raise ValueError(
            f"{name}: no probe subject appears in the gallery, so no metric can be computed "
            "(labels hidden? for the GREW test set use write_grew_submission)"
        )
    used = first[matched] if skip_unmatched else first
    curve = cmc_from_ranks(torch.as_tensor(used), _curve_ranks(ranks, gallery_size))
    full = cmc_from_ranks(torch.as_tensor(used), ranks)
    metrics = {f"rank{k}": v for k, v in full.items()}
    if "rank1" not in metrics:
        metrics["rank1"] = curve[1]
    if with_map:
        metrics["mAP"] = float(scores["ap"][matched].mean())
        metrics["mINP"] = float(scores["inp"][matched].mean())
    return EvalResult(
        protocol=name,
        variant=variant,
        distance=distance,
        metrics=metrics,
        options=options,
        counts={
            "num_probes": num_probes,
            "num_gallery": gallery_size,
            "num_probes_without_match": int((~matched).sum()),
        },
        cmc=curve,
    )


def grew(
    embeddings: Tensor,
    meta: SequenceMeta,
    *,
    distance: str = "euc_parts",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ranks: Sequence[int] = (1, 5, 10, 20),
    gallery_types: Sequence[str] = GREW_GALLERY,
    probe_types: Sequence[str] | None = None,
    keep_top: int = 20,
) -> EvalResult:
    """GREW with known labels (validation split, synthetic sets): rank-1/5/10/20 over the gallery.

    Probes whose subject is not in the gallery count as misses (in the real benchmark every
    test probe has its subject in the gallery, among distractors). The top ``keep_top`` gallery
    subjects per probe are kept on the result for ``write_grew_submission``.
    """
    name = "grew"
    check_distance(distance)
    ranks = _check_ranks(name, ranks)
    emb = _check_inputs(name, embeddings, meta)
    pidx, gidx = _split(name, meta, gallery_types, probe_types)
    scores = retrieval_scores(
        emb,
        emb,
        meta.subjects[pidx],
        meta.subjects[gidx],
        distance,
        chunk_size,
        probe_index=pidx,
        gallery_index=gidx,
        with_map=False,
        top_n=keep_top,
    )
    result = _retrieval_result(
        name,
        "all probes, unmatched probes count as misses",
        scores,
        len(gidx),
        ranks,
        skip_unmatched=False,
        with_map=False,
        distance=distance,
        options={
            "ranks": list(ranks),
            "gallery_types": list(gallery_types),
            "probe_types": None if probe_types is None else list(probe_types),
            "chunk_size": chunk_size,
        },
        num_probes=len(pidx),
    )
    if keep_top > 0:
        result.probe_ids = pidx
        result.top_gallery_ids = meta.subjects[gidx][scores["top"]]
    return result


def gait3d(
    embeddings: Tensor,
    meta: SequenceMeta,
    *,
    distance: str = "euc_parts",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ranks: Sequence[int] = (1, 5, 10),
    probe_set: Sequence[str] | None = None,
) -> EvalResult:
    """Gait3D: probes from the probe list, the rest of the test set is the gallery.

    ``probe_set`` lists sequence types (Gait3D's sequence names) that are probes; without it
    the first sequence of every subject (in metadata order) is the probe, which is how the
    benchmark's probe list was drawn (one probe per test subject). Reports rank-k, mAP and
    mINP; as in the benchmark's re-identification evaluation, probes without any true match
    in the gallery are skipped (their number is in ``counts``).
    """
    name = "gait3d"
    check_distance(distance)
    ranks = _check_ranks(name, ranks)
    emb = _check_inputs(name, embeddings, meta)
    if probe_set is None:
        _, first_rows = np.unique(meta.subjects.astype(str), return_index=True)
        pmask = np.zeros(len(meta), dtype=bool)
        pmask[first_rows] = True
    else:
        pmask = _type_mask(meta, list(probe_set))
    if not pmask.any():
        raise ValueError(f"{name}: no probe: no sequence type is in probe_set")
    if pmask.all():
        raise ValueError(f"{name}: empty gallery: every sequence is a probe")
    pidx, gidx = np.flatnonzero(pmask), np.flatnonzero(~pmask)
    scores = retrieval_scores(
        emb,
        emb,
        meta.subjects[pidx],
        meta.subjects[gidx],
        distance,
        chunk_size,
        probe_index=pidx,
        gallery_index=gidx,
        with_map=True,
    )
    return _retrieval_result(
        name,
        "probe list vs rest, unmatched probes skipped",
        scores,
        len(gidx),
        ranks,
        skip_unmatched=True,
        with_map=True,
        distance=distance,
        options={
            "ranks": list(ranks),
            "probe_set": "first sequence per subject" if probe_set is None else list(probe_set),
            "chunk_size": chunk_size,
        },
        num_probes=len(pidx),
    )


def generic(
    embeddings: Tensor,
    meta: SequenceMeta,
    *,
    distance: str = "euc_parts",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ranks: Sequence[int] = (1, 5, 10),
    gallery_types: Sequence[str] = CASIA_B_GALLERY,
    probe_types: Sequence[str] | None = None,
    skip_unmatched: bool = False,
) -> EvalResult:
    """Plain probe / gallery retrieval for the synthetic set and users' own sets.

    Gallery = rows whose type is in ``gallery_types`` (default: CASIA-B's NM#01-04, the naming
    the synthetic set uses), probes = rows of ``probe_types`` (default: all other rows).
    Reports rank-k over the whole gallery (all views), mAP and mINP.
    """
    name = "generic"
    check_distance(distance)
    ranks = _check_ranks(name, ranks)
    emb = _check_inputs(name, embeddings, meta)
    pidx, gidx = _split(name, meta, gallery_types, probe_types)
    scores = retrieval_scores(
        emb,
        emb,
        meta.subjects[pidx],
        meta.subjects[gidx],
        distance,
        chunk_size,
        probe_index=pidx,
        gallery_index=gidx,
        with_map=True,
    )
    variant = "all views, unmatched probes " + ("skipped" if skip_unmatched else "count as misses")
    return _retrieval_result(
        name,
        variant,
        scores,
        len(gidx),
        ranks,
        skip_unmatched=skip_unmatched,
        with_map=True,
        distance=distance,
        options={
            "ranks": list(ranks),
            "gallery_types": list(gallery_types),
            "probe_types": None if probe_types is None else list(probe_types),
            "skip_unmatched": skip_unmatched,
            "chunk_size": chunk_size,
        },
        num_probes=len(pidx),
    )


# ------------------------------------------------------------------------------ registry

PROTOCOLS: dict[str, Callable[..., EvalResult]] = {
    "casia_b": casia_b,
    "oumvlp": oumvlp,
    "grew": grew,
    "gait3d": gait3d,
    "generic": generic,
}


def evaluate(name: str, embeddings: Tensor, meta: SequenceMeta, **options: Any) -> EvalResult:
    """Run the protocol ``name`` (a key of ``PROTOCOLS``) with its options.

    The one entry point the training module calls, so that a config can name the protocol and
    its options as data. Unknown protocol or option names fail with the list of valid ones.
    """
    key = str(name).lower().replace("-", "_")
    if key not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    fn = PROTOCOLS[key]
    allowed = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"protocol {key!r}: unknown option(s) {unknown}; valid options: {', '.join(allowed)}"
        )
    return fn(embeddings, meta, **options)
