"""Retrieval protocols (GREW, Gait3D, generic): every probe ranks the whole gallery.

All three share one helper: ``retrieve`` checks the input, splits probe and gallery and makes one
chunked distance pass that yields, per probe, the rank of its first true match (and AP / INP,
and the nearest gallery rows when asked); ``retrieval_result`` turns those into rank-k, mAP and
mINP. A protocol only says how it splits and which numbers it reports. ``docs/evaluation.md``
says exactly how each number is computed; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.errors import EvaluationError
from gaitgl_lightning.evaluation.checks import (
    check_inputs,
    check_ranks,
    curve_ranks,
    lower,
    split_by_types,
)
from gaitgl_lightning.evaluation.cross_view import CASIA_B_GALLERY
from gaitgl_lightning.evaluation.distance import (
    DEFAULT_CHUNK_SIZE,
    check_distance,
    iter_distance_chunks,
)
from gaitgl_lightning.evaluation.ranking import (
    ap_and_inp,
    cmc_from_ranks,
    encode_labels,
    first_match_rank,
)
from gaitgl_lightning.evaluation.registry import Protocol
from gaitgl_lightning.evaluation.results import EvalResult

# GREW: each test subject has two gallery sequences (types 01, 02); distractors (type 04) join
# the gallery when they are in the evaluation set; everything else is a probe (the hidden-label
# test probes, subject ``probe``, type 03, and the probes of an opt-in validation split).
GREW_GALLERY: tuple[str, ...] = ("01", "02")
GREW_DISTRACTORS: tuple[str, ...] = ("04",)
GREW_HIDDEN_SUBJECT = "probe"
GREW_TOP = 20

Splitter = Callable[[SequenceMeta], tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------- the pass
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

    One chunked pass; nothing of size probes x gallery is ever held. With ``probe_index`` /
    ``gallery_index``, ``probe`` / ``gallery`` are the full embedding matrix and the indices
    pick the rows (no copy of the sets). ``top`` holds positions within the gallery selection,
    ``top_dist`` their distances.
    """
    pcodes, gcodes = encode_labels(probe_subjects, gallery_subjects)
    plab, glab = pcodes.to(gallery.device), gcodes.to(gallery.device)
    out: dict[str, list[Tensor]] = {
        "first_rank": [],
        "ap": [],
        "inp": [],
        "top": [],
        "top_dist": [],
    }
    grows = None if gallery_index is None else torch.as_tensor(np.asarray(gallery_index))
    prows = None if probe_index is None else torch.as_tensor(np.asarray(probe_index))
    for start, d in iter_distance_chunks(probe, gallery, distance, chunk_size, grows, prows):
        lab = plab[start : start + d.shape[0]]
        out["first_rank"].append(first_match_rank(d, lab, glab).cpu())
        if with_map:
            ap, inp = ap_and_inp(d, lab, glab)
            out["ap"].append(ap.cpu())
            out["inp"].append(inp.cpu())
        if top_n > 0:
            top = stable_topk(d, top_n)
            out["top"].append(top.cpu())
            out["top_dist"].append(d.gather(1, top).float().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items() if v}


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


# ----------------------------------------------------------------------------- the helper
@dataclass
class Ranked:
    """One retrieval pass: the probe and gallery rows of ``meta`` and the per-probe scores."""

    meta: SequenceMeta
    probe_rows: np.ndarray
    gallery_rows: np.ndarray
    scores: dict[str, np.ndarray]

    @property
    def gallery_size(self) -> int:
        return len(self.gallery_rows)

    def top_subjects(self) -> np.ndarray:
        """Subjects of every probe's nearest gallery rows, nearest first ``[P, top_n]``."""
        return self.meta.subjects[self.gallery_rows][self.scores["top"]]


def retrieve(
    protocol: str,
    embeddings: Tensor,
    meta: SequenceMeta,
    split: Splitter,
    *,
    distance: str,
    chunk_size: int,
    with_map: bool,
    top_n: int = 0,
) -> Ranked:
    """Check the input, split it with ``split(meta) -> (probe rows, gallery rows)``, rank."""
    check_distance(distance)
    emb = check_inputs(protocol, embeddings, meta)
    pidx, gidx = split(meta)
    scores = retrieval_scores(
        emb,
        emb,
        meta.subjects[pidx],
        meta.subjects[gidx],
        distance,
        chunk_size,
        probe_index=pidx,
        gallery_index=gidx,
        with_map=with_map,
        top_n=top_n,
    )
    return Ranked(meta, pidx, gidx, scores)


def retrieval_metrics(
    protocol: str,
    ranked: Ranked,
    ranks: Sequence[int],
    *,
    skip_unmatched: bool,
    with_map: bool,
    rows: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[int, float], int]:
    """Rank-k (and mAP / mINP) over the probes ``rows`` (a mask; all probes by default).

    Returns the metrics, the rank-k curve and the number of those probes without a true match.
    """
    first = ranked.scores["first_rank"]
    use = np.ones(len(first), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    first = first[use]
    matched = first < ranked.gallery_size
    if not matched.any():
        raise EvaluationError(
            f"{protocol}: no probe subject appears in the gallery, so no metric can be computed"
        )
    used = first[matched] if skip_unmatched else first
    curve = cmc_from_ranks(torch.as_tensor(used), curve_ranks(ranks, ranked.gallery_size))
    full = cmc_from_ranks(torch.as_tensor(used), ranks)
    metrics = {f"rank{k}": v for k, v in full.items()}
    if "rank1" not in metrics:
        metrics["rank1"] = curve[1]
    if with_map:
        metrics["mAP"] = float(ranked.scores["ap"][use][matched].mean())
        metrics["mINP"] = float(ranked.scores["inp"][use][matched].mean())
    return metrics, curve, int((~matched).sum())


def retrieval_result(
    protocol: str,
    variant: str,
    ranked: Ranked,
    ranks: Sequence[int],
    *,
    skip_unmatched: bool,
    with_map: bool,
    distance: str,
    options: dict[str, Any],
    counts: dict[str, int] | None = None,
) -> EvalResult:
    """The ``EvalResult`` of a retrieval protocol whose every probe is labelled."""
    metrics, curve, unmatched = retrieval_metrics(
        protocol, ranked, ranks, skip_unmatched=skip_unmatched, with_map=with_map
    )
    return EvalResult(
        protocol=protocol,
        variant=variant,
        distance=distance,
        metrics=metrics,
        options=options,
        counts={
            "num_probes": len(ranked.probe_rows),
            "num_gallery": ranked.gallery_size,
            "num_probes_without_match": unmatched,
            **(counts or {}),
        },
        cmc=curve,
    )


# ----------------------------------------------------------------------------- protocols
class Generic(Protocol):
    """Plain probe / gallery retrieval for the synthetic set and users' own sets.

    Gallery = rows whose type is in ``gallery_types`` (default: CASIA-B's NM#01-04, the naming
    the synthetic set uses), probes = rows of ``probe_types`` (default: all other rows).
    Reports rank-k over the whole gallery (all views), mAP and mINP.
    """

    name = "generic"

    def run(
        self,
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
        ranks = check_ranks(self.name, ranks)
        ranked = retrieve(
            self.name,
            embeddings,
            meta,
            lambda m: split_by_types(self.name, m, gallery_types, probe_types),
            distance=distance,
            chunk_size=chunk_size,
            with_map=True,
        )
        unmatched = "skipped" if skip_unmatched else "count as misses"
        return retrieval_result(
            self.name,
            f"all views, unmatched probes {unmatched}",
            ranked,
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
        )


class Gait3D(Protocol):
    """Gait3D: the probes of the probe list, every other test sequence is the gallery.

    ``probe_set`` holds the benchmark's PROBE_SET entries, ``<id>-<camid>_<videoid>-<seq>``
    (subject, type, view of a row joined by ``-``); the probe is whichever sequence an entry
    names. Without it, the first sequence of every subject (in metadata order) is the probe.
    Reports rank-k, mAP and mINP; as in the benchmark's re-identification evaluation, probes
    without any true match in the gallery are skipped (their number is in ``counts``).
    ``probe_set_name`` says in the result where the list came from.
    """

    name = "gait3d"

    def run(
        self,
        embeddings: Tensor,
        meta: SequenceMeta,
        *,
        distance: str = "euc_parts",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        ranks: Sequence[int] = (1, 5, 10),
        probe_set: Sequence[str] | None = None,
        probe_set_name: str | None = None,
    ) -> EvalResult:
        ranks = check_ranks(self.name, ranks)
        missing: list[str] = []

        def split(m: SequenceMeta) -> tuple[np.ndarray, np.ndarray]:
            if probe_set is None:
                pmask = np.zeros(len(m), dtype=bool)
                pmask[np.unique(m.subjects.astype(str), return_index=True)[1]] = True
            else:
                pmask, lost = probe_entry_mask(self.name, m, probe_set)
                missing.extend(lost)
            if pmask.all():
                raise EvaluationError(f"{self.name}: empty gallery: every sequence is a probe")
            return np.flatnonzero(pmask), np.flatnonzero(~pmask)

        ranked = retrieve(
            self.name,
            embeddings,
            meta,
            split,
            distance=distance,
            chunk_size=chunk_size,
            with_map=True,
        )
        if probe_set is None:
            source = "first sequence per subject"
        else:
            source = probe_set_name or f"{len(probe_set)} listed probes"
        counts = {}
        if probe_set is not None:
            counts = {
                "num_probe_set_entries": len(probe_set),
                "num_probe_set_entries_not_found": len(missing),
            }
        return retrieval_result(
            self.name,
            "probe list vs rest, unmatched probes skipped",
            ranked,
            ranks,
            skip_unmatched=True,
            with_map=True,
            distance=distance,
            options={
                "ranks": list(ranks),
                "probe_set": source,
                "probe_set_not_found": missing[:20],
                "chunk_size": chunk_size,
            },
            counts=counts,
        )


def sequence_keys(meta: SequenceMeta) -> np.ndarray:
    """``<subject>-<type>-<view>`` of every row: Gait3D's PROBE_SET entry form."""
    s, t, v = (np.asarray(c).astype(str) for c in (meta.subjects, meta.types, meta.views))
    return np.char.add(np.char.add(np.char.add(np.char.add(s, "-"), t), "-"), v)


def probe_entry_mask(
    protocol: str, meta: SequenceMeta, entries: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Rows named by ``entries`` and the entries that name no row of ``meta``."""
    keys = sequence_keys(meta)
    wanted = np.asarray([str(e).strip() for e in entries], dtype=str)
    mask = np.isin(keys, wanted)
    lost = sorted(set(wanted.tolist()) - set(keys[mask].tolist()))
    if not mask.any():
        raise EvaluationError(
            f"{protocol}: no probe: none of the {len(wanted)} probe-set entries (e.g. "
            f"{wanted[:2].tolist()}) names a sequence of the evaluation set, whose sequences "
            f"are named like {keys[:2].tolist()} (<id>-<camid>_<videoid>-<seq>)"
        )
    return mask, lost


class Grew(Protocol):
    """GREW: every probe ranks the gallery (two sequences per test subject, plus distractors).

    The test probes' labels are hidden (subject ``hidden_subject``, as the readers name them):
    for them the result keeps the ``keep_top`` nearest gallery subjects (the submission file,
    see ``submission.write_submission``) and reports counts and distance statistics instead of
    a rank-1 it cannot know (``labels_hidden``). Labelled probes (an opt-in validation split,
    synthetic sets) get rank-1/5/10/20, probes whose subject is not in the gallery counting as
    misses. When no probe's subject appears in the gallery at all, the labels are taken as
    hidden whatever the probes are called, so the evaluation never stops a run for that.
    """

    name = "grew"

    def run(
        self,
        embeddings: Tensor,
        meta: SequenceMeta,
        *,
        distance: str = "euc_parts",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        ranks: Sequence[int] = (1, 5, 10, 20),
        gallery_types: Sequence[str] = GREW_GALLERY,
        distractor_types: Sequence[str] = GREW_DISTRACTORS,
        probe_types: Sequence[str] | None = None,
        hidden_subject: str = GREW_HIDDEN_SUBJECT,
        keep_top: int = GREW_TOP,
    ) -> EvalResult:
        ranks = check_ranks(self.name, ranks)
        gallery = [*gallery_types, *distractor_types]
        ranked = retrieve(
            self.name,
            embeddings,
            meta,
            lambda m: split_by_types(self.name, m, gallery, probe_types),
            distance=distance,
            chunk_size=chunk_size,
            with_map=False,
            top_n=max(int(keep_top), 1),
        )
        probe_subjects = lower(meta.subjects[ranked.probe_rows])
        matched = ranked.scores["first_rank"] < ranked.gallery_size
        hidden = probe_subjects == str(hidden_subject).strip().lower()
        if not matched[~hidden].any():
            hidden[:] = True  # nothing labelled can be scored: the labels are hidden
        metrics = _distance_statistics(ranked.scores["top_dist"])
        counts = _grew_counts(ranked, distractor_types, hidden)
        cmc: dict[int, float] = {}
        if not hidden.all():
            scored, cmc, counts["num_probes_without_match"] = retrieval_metrics(
                self.name, ranked, ranks, skip_unmatched=False, with_map=False, rows=~hidden
            )
            metrics.update(scored)
        variant = "labelled probes: rank-k, unmatched count as misses"
        if hidden.any():
            variant = "hidden-label probes: top-20 submission" + (
                f"; {variant}" if not hidden.all() else ""
            )
        result = EvalResult(
            protocol=self.name,
            variant=variant,
            distance=distance,
            metrics=metrics,
            options={
                "ranks": list(ranks),
                "gallery_types": list(gallery_types),
                "distractor_types": list(distractor_types),
                "probe_types": None if probe_types is None else list(probe_types),
                "hidden_subject": hidden_subject,
                "chunk_size": chunk_size,
            },
            counts=counts,
            cmc=cmc,
            labels_hidden=bool(hidden.all()),
            submission="grew" if hidden.any() and keep_top > 0 else None,
        )
        if keep_top > 0:
            keep = hidden if hidden.any() else np.ones_like(hidden)
            result.probe_ids = ranked.probe_rows[keep]
            result.top_gallery_ids = ranked.top_subjects()[keep]
        return result


def _distance_statistics(top_dist: np.ndarray) -> dict[str, float]:
    """What can be watched without labels: how far each probe's nearest gallery rows are."""
    k = top_dist.shape[1]
    return {
        "dist_top1_mean": float(top_dist[:, 0].mean()),
        "dist_top1_std": float(top_dist[:, 0].std()),
        f"dist_top{k}_mean": float(top_dist[:, -1].mean()),
    }


def _grew_counts(
    ranked: Ranked, distractor_types: Sequence[str], hidden: np.ndarray
) -> dict[str, int]:
    gallery_types = lower(ranked.meta.types[ranked.gallery_rows])
    distractors = np.isin(gallery_types, [str(t).strip().lower() for t in distractor_types])
    gallery_subjects = ranked.meta.subjects[ranked.gallery_rows]
    return {
        "num_probes": len(ranked.probe_rows),
        "num_hidden_probes": int(hidden.sum()),
        "num_labelled_probes": int((~hidden).sum()),
        "num_gallery": ranked.gallery_size,
        "num_gallery_subjects": len(set(gallery_subjects[~distractors].tolist())),
        "num_distractors": int(distractors.sum()),
    }


grew = Grew()
gait3d = Gait3D()
generic = Generic()
