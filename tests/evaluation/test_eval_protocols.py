"""Protocols on hand-computed toy cases and against brute force; bad metadata errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eval_bruteforce import ap_inp, cross_view_rank1, first_rank, make_casia

from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.evaluation import PROTOCOLS, EvalResult, Protocol, evaluate
from gaitgl_lightning.evaluation.distance import pairwise_distance


def _meta(rows: list[tuple[str, str, str]]) -> SequenceMeta:
    s, t, v = zip(*rows, strict=True)
    return SequenceMeta.from_lists(s, t, v)


def _emb(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1)


def test_casia_b_hand_computed() -> None:
    # 1-D embeddings; gallery A: 000 -> 0, 090 -> 10; B: 000 -> 1, 090 -> 11.
    rows = [
        ("A", "nm-01", "000"),
        ("A", "nm-01", "090"),
        ("B", "nm-01", "000"),
        ("B", "nm-01", "090"),
        ("A", "nm-05", "000"),  # 10.4: nearest in gallery 090 is A (hit); in 000 is B (miss)
        ("A", "nm-05", "090"),  # 0.9: nearest in 000 is B (miss); in 090 is A (hit)
        ("B", "NM-05", "000"),  # 11.2: 090 -> B (hit); 000 -> B (hit)
        ("B", "nm-05", "090"),  # 0.2: 000 -> A (miss); 090 -> A (miss)
    ]
    emb = _emb([0, 10, 1, 11, 10.4, 0.9, 11.2, 0.2])
    res = evaluate("casia_b", emb, _meta(rows))
    table = res.view_tables["NM"]
    assert table.probe_views == ["000", "090"] and table.gallery_views == ["000", "090"]
    np.testing.assert_allclose(table.acc, [[0.5, 1.0], [0.0, 0.5]])
    assert table.per_probe_view == {"000": 1.0, "090": 0.0}
    assert res.summary() == {"NM/rank1": 0.5, "rank1": 0.5}
    assert res.options["conditions"] == ["NM"]
    assert res.variant == "identical views excluded" and res.distance == "euc_parts"
    incl = evaluate("casia_b", emb, _meta(rows), include_identical_view=True)
    assert incl.view_tables["NM"].per_probe_view == {"000": 0.75, "090": 0.25}
    assert res.alt_metrics["identical views included"]["rank1"] == incl.rank1


def test_casia_b_tie_goes_to_earlier_gallery_sequence() -> None:
    rows = [("A", "nm-01", "000"), ("B", "nm-01", "000"), ("A", "nm-02", "090")]
    rows += [("B", "nm-05", "090"), ("B", "nm-05", "000")]
    emb = _emb([5, 5, 0, 5, 0])  # probe B/090 is equally far from A and B in view 000
    res = evaluate("casia_b", emb, _meta(rows))
    assert res.view_tables["NM"].acc[1, 0] == 0.0  # A comes first in gallery order
    swapped = [rows[1], rows[0], *rows[2:]]
    res2 = evaluate("casia_b", emb, _meta(swapped))
    assert res2.view_tables["NM"].acc[1, 0] == 1.0


@pytest.mark.parametrize("distance", ["euc_parts", "euc_flat", "cos"])
@pytest.mark.parametrize("include_identical", [False, True])
def test_casia_b_against_brute_force(distance: str, include_identical: bool) -> None:
    emb, meta = make_casia(subjects=5, views=("000", "018", "090", "180"), seed=4, integer=True)
    res = evaluate(
        "casia_b",
        emb,
        meta,
        distance=distance,
        chunk_size=7,
        include_identical_view=include_identical,
    )
    types = np.char.lower(meta.types)
    gidx = np.flatnonzero(np.isin(types, ["nm-01", "nm-02", "nm-03", "nm-04"]))
    conds = {"NM": ["nm-05", "nm-06"], "BG": ["bg-01", "bg-02"], "CL": ["cl-01", "cl-02"]}
    expected = []
    for cond, ts in conds.items():
        pidx = np.flatnonzero(np.isin(types, ts))
        dist = pairwise_distance(emb[pidx], emb[gidx], distance)
        table, mean = cross_view_rank1(dist, list(pidx), list(gidx), meta, include_identical)
        assert res.summary()[f"{cond}/rank1"] == pytest.approx(mean)
        t = res.view_tables[cond]
        for i, pv in enumerate(t.probe_views):
            for j, gv in enumerate(t.gallery_views):
                assert t.acc[i, j] == pytest.approx(table[pv][gv])
        expected.append(mean)
    assert res.rank1 == pytest.approx(float(np.mean(expected)))
    assert 0.0 < res.rank1 < 1.0  # the toy set must not be trivially perfect or hopeless


def test_casia_b_synthetic_naming_fewer_views_and_chunk_invariance() -> None:
    emb, meta = make_casia(subjects=3, views=("000", "090"), seed=5)
    a = evaluate("casia_b", emb, meta, chunk_size=1)
    b = evaluate("casia_b", emb, meta, chunk_size=10_000)
    assert a.summary() == b.summary()
    assert set(a.summary()) == {"rank1", "NM/rank1", "BG/rank1", "CL/rank1"}
    upper = SequenceMeta(meta.subjects, np.char.upper(meta.types), meta.views)
    assert evaluate("casia_b", emb, upper).summary() == a.summary()


def test_oumvlp_hand_computed_both_variants() -> None:
    rows = [
        ("1", "01", "000"),
        ("1", "01", "015"),
        ("2", "01", "000"),
        ("2", "01", "015"),
        ("3", "01", "000"),  # subject 3 has no gallery sequence in view 015
        ("1", "00", "000"),
        ("3", "00", "000"),
        ("2", "00", "015"),
    ]
    # gallery: 1/000=0, 1/015=0, 2/000=5, 2/015=5, 3/000=9
    # probe 1/000=0.1 vs 015 -> subject 1 (hit); probe 3/000=9 vs 015 -> subject 2 (miss, invalid)
    # probe 2/015=8 vs 000 -> subject 3 at 9 (miss)
    emb = _emb([0, 0, 5, 5, 9, 0.1, 9, 8])
    res = evaluate("oumvlp", emb, _meta(rows))
    # all probes: probe view 000 vs 015 = 1/2; probe view 015 vs 000 = 0/1 -> mean 0.25
    assert res.summary()["rank1_all_probes"] == pytest.approx(0.25)
    # invalid excluded: probe view 000 vs 015 = 1/1; 015 vs 000 = 0/1 -> 0.5
    assert res.summary()["rank1_invalid_excluded"] == pytest.approx(0.5)
    assert res.rank1 == pytest.approx(0.25)
    assert res.counts["num_invalid_probe_view_pairs"] == 1
    ex = evaluate("oumvlp", emb, _meta(rows), exclude_invalid=True)
    assert ex.rank1 == pytest.approx(0.5) and "invalid probes excluded" in ex.variant


def test_oumvlp_against_brute_force() -> None:
    g = torch.Generator().manual_seed(6)
    views = ["000", "015", "030", "180"]
    rows, centres = [], torch.randn(8, 3, 2, generator=g)
    for s in range(8):
        for t in ("00", "01"):
            for v in views:
                if torch.rand(1, generator=g).item() < 0.8:
                    rows.append((str(s), t, v))
    emb = torch.stack([centres[int(s)] for s, _, _ in rows]) + torch.randn(
        len(rows), 3, 2, generator=g
    )
    meta = _meta(rows)
    res = evaluate("oumvlp", emb, meta, chunk_size=5)
    pidx = [i for i, r in enumerate(rows) if r[1] == "00"]
    gidx = [i for i, r in enumerate(rows) if r[1] == "01"]
    dist = pairwise_distance(emb[pidx], emb[gidx])
    _, all_mean = cross_view_rank1(dist, pidx, gidx, meta, False)
    _, valid_mean = cross_view_rank1(dist, pidx, gidx, meta, False, valid_only=True)
    assert res.summary()["rank1_all_probes"] == pytest.approx(all_mean)
    assert res.summary()["rank1_invalid_excluded"] == pytest.approx(valid_mean)


def _retrieval_brute(emb, meta, pidx, gidx, distance="euc_parts"):
    dist = pairwise_distance(emb[pidx], emb[gidx], distance)
    glab = [meta.subjects[j] for j in gidx]
    firsts, aps, inps = [], [], []
    for r, i in enumerate(pidx):
        row = dist[r].tolist()
        firsts.append(first_rank(row, meta.subjects[i], glab))
        a, n = ap_inp(row, meta.subjects[i], glab)
        aps.append(a)
        inps.append(n)
    return np.array(firsts), np.array(aps), np.array(inps)


def test_generic_and_grew_against_brute_force() -> None:
    emb, meta = make_casia(subjects=6, views=("000", "090"), seed=7, integer=True)
    types = np.char.lower(meta.types)
    gidx = list(np.flatnonzero(np.isin(types, ["nm-01", "nm-02", "nm-03", "nm-04"])))
    pidx = list(np.flatnonzero(~np.isin(types, ["nm-01", "nm-02", "nm-03", "nm-04"])))
    firsts, aps, inps = _retrieval_brute(emb, meta, pidx, gidx)
    res = evaluate("generic", emb, meta, chunk_size=4, ranks=(1, 3, 5))
    for k in (1, 3, 5):
        assert res.summary()[f"rank{k}"] == pytest.approx(float((firsts < k).mean()))
    assert res.summary()["mAP"] == pytest.approx(float(aps.mean()))
    assert res.summary()["mINP"] == pytest.approx(float(inps.mean()))
    assert res.cmc[2] == pytest.approx(float((firsts < 2).mean()))
    gallery = ["nm-01", "nm-02", "nm-03", "nm-04"]
    gr = evaluate("grew", emb, meta, gallery_types=gallery, chunk_size=5)
    assert {"rank1", "rank5", "rank10", "rank20"} <= set(gr.summary())
    assert not gr.labels_hidden and gr.submission is None  # every probe is labelled
    assert gr.summary()["rank5"] == pytest.approx(float((firsts < 5).mean()))
    assert gr.top_gallery_ids is not None and gr.top_gallery_ids.shape == (len(pidx), 20)


def test_grew_unmatched_probes_count_as_misses() -> None:
    rows = [("1", "01", "a"), ("2", "02", "b"), ("1", "03", "c"), ("9", "03", "d")]
    res = evaluate("grew", _emb([0, 5, 0.1, 0.2]), _meta(rows))
    assert res.rank1 == 0.5 and res.counts["num_probes_without_match"] == 1


def test_gait3d_several_true_matches_and_probe_set() -> None:
    # probe P (subject a) at 0; gallery by distance: a(1) b(2) a(3) b(4) a(5)
    rows = [("a", "p0", "c1"), ("b", "g1", "c1"), ("a", "g2", "c1"), ("a", "g3", "c2")]
    rows += [("b", "g4", "c2"), ("a", "g5", "c2"), ("z", "pz", "c1")]
    emb = _emb([0, 2, 1, 5, 4, 3, 100])
    probes = ["a-p0-c1", "z-pz-c1", "q-camid1_videoid1-seq9"]  # the last is not in the set
    res = evaluate("gait3d", emb, _meta(rows), probe_set=probes, ranks=(1, 2))
    assert res.summary()["mAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert res.summary()["mINP"] == pytest.approx(3 / 5)
    assert res.summary()["rank1"] == 1.0
    assert res.counts["num_probes_without_match"] == 1  # "z" is skipped, as in the benchmark
    assert res.counts["num_probe_set_entries"] == 3
    assert res.counts["num_probe_set_entries_not_found"] == 1


def test_gait3d_official_probe_entries_pick_the_named_sequence() -> None:
    # Two sequences per subject; the probe list names the SECOND one of each, as the official
    # PROBE_SET may: the first sequence must then be in the gallery.
    rows = [
        ("0002", "camid33_videoid2", "seq0"),
        ("0002", "camid33_videoid2", "seq1"),
        ("0003", "camid7_videoid1", "seq0"),
        ("0003", "camid9_videoid4", "seq0"),
    ]
    emb = _emb([0.0, 3.0, 20.0, 8.0])
    probes = ["0002-camid33_videoid2-seq1", "0003-camid9_videoid4-seq0"]
    res = evaluate("gait3d", emb, _meta(rows), probe_set=probes, probe_set_name="PROBE_SET")
    assert res.counts["num_probes"] == 2 and res.counts["num_gallery"] == 2
    # gallery {0002/seq0 at 0, 0003/camid7 at 20}: the probe at 3 finds 0002 (right), the
    # probe at 8 finds 0002 too (wrong).
    assert res.summary()["rank1"] == pytest.approx(0.5)
    assert res.options["probe_set"] == "PROBE_SET"
    with pytest.raises(ValueError, match="none of the 1 probe-set entries"):
        evaluate("gait3d", emb, _meta(rows), probe_set=["seq1"])  # a bare type names nothing


def test_gait3d_default_probe_is_first_sequence_per_subject() -> None:
    emb, meta = make_casia(subjects=4, views=("000",), seed=8)
    res = evaluate("gait3d", emb, meta)
    assert res.counts["num_probes"] == 4
    first = [list(meta.subjects).index(s) for s in sorted(set(meta.subjects))]
    pidx = first
    gidx = [i for i in range(len(meta)) if i not in first]
    firsts, aps, inps = _retrieval_brute(emb, meta, pidx, gidx)
    assert res.summary()["mAP"] == pytest.approx(float(aps.mean()))
    assert res.summary()["mINP"] == pytest.approx(float(inps.mean()))
    assert res.summary()["rank1"] == pytest.approx(float((firsts < 1).mean()))


def test_every_protocol_result_has_rank1_and_json() -> None:
    emb, meta = make_casia(subjects=3, views=("000", "090"), seed=9)
    gall = ["nm-01", "nm-02", "nm-03", "nm-04"]
    oum = SequenceMeta(
        meta.subjects, np.where(np.char.startswith(meta.types, "nm-0"), "01", "00"), meta.views
    )
    calls = {
        "casia_b": (meta, {}),
        "oumvlp": (oum, {}),
        "grew": (meta, {"gallery_types": gall}),
        "gait3d": (meta, {}),
        "generic": (meta, {}),
    }
    assert set(calls) == set(PROTOCOLS)  # every registered protocol is exercised
    for name, (m, opts) in calls.items():
        for distance in ("euc_parts", "euc_flat", "cos"):
            res = evaluate(name, emb, m, distance=distance, **opts)
            s = res.summary()
            assert "rank1" in s and all(math.isfinite(v) for v in s.values())
            assert res.protocol == name and res.distance == distance
            d = res.to_dict()
            assert d["summary"] == s and d["distance"] == distance


# ------------------------------------------------------------------------- bad metadata


def test_bad_metadata_errors() -> None:
    emb, meta = make_casia(subjects=3, views=("000", "090"), seed=10)
    with pytest.raises(ValueError, match="embeddings but"):
        evaluate("casia_b", emb[:-1], meta)
    no_gallery = SequenceMeta(
        meta.subjects, np.char.replace(meta.types, "nm-0", "xx-0"), meta.views
    )
    with pytest.raises(ValueError, match="empty gallery"):
        evaluate("casia_b", emb, no_gallery)
    with pytest.raises(ValueError, match="no probe"):
        evaluate("generic", emb, meta, probe_types=["zz-01"])
    gviews = np.where(np.isin(meta.types, ["nm-01", "nm-02", "nm-03", "nm-04"]), "000", meta.views)
    with pytest.raises(ValueError, match=r"probe view\(s\) \['090'\] missing from the gallery"):
        evaluate("casia_b", emb, SequenceMeta(meta.subjects, meta.types, gviews))
    one_view = SequenceMeta(meta.subjects, meta.types, np.full(len(meta), "000"))
    with pytest.raises(ValueError, match="only the view"):
        evaluate("casia_b", emb, one_view)
    assert evaluate("casia_b", emb, one_view, include_identical_view=True).rank1 >= 0.0
    bad = emb.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate("casia_b", bad, meta)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate("market1501", emb, meta)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['exclude_invalid'\]"):
        evaluate("casia_b", emb, meta, exclude_invalid=True)
    with pytest.raises(ValueError, match="unknown distance"):
        evaluate("generic", emb, meta, distance="l1")
    with pytest.raises(ValueError, match="both probe and gallery"):
        evaluate("generic", emb, meta, probe_types=["nm-01"])
    with pytest.raises(ValueError, match="no probe subject appears in the gallery"):
        evaluate(
            "generic",
            emb,
            SequenceMeta(
                np.char.add(
                    meta.subjects,
                    np.where(np.isin(meta.types, ["nm-01", "nm-02", "nm-03", "nm-04"]), "", "x"),
                ),
                meta.types,
                meta.views,
            ),
        )


def _hidden_grew_set(
    n_gallery: int = 25, n_hidden: int = 4, n_val: int = 0
) -> tuple[torch.Tensor, SequenceMeta]:
    """GREW test naming: gallery ids with 01/02, hidden probes (``probe``/03/<random name>),
    optionally labelled validation probes of gallery subjects."""
    rows = [(f"{i:05d}", t, f"g{i}{t}") for i in range(n_gallery) for t in ("01", "02")]
    rows += [("probe", "03", f"x{k}q7") for k in range(n_hidden)]
    rows += [(f"{k:05d}", "03", f"v{k}") for k in range(n_val)]
    g = torch.Generator().manual_seed(3)
    return torch.randn(len(rows), 3, 2, generator=g), _meta(rows)


def test_grew_hidden_labels_give_counts_and_a_ranking_not_an_error() -> None:
    emb, meta = _hidden_grew_set()
    res = evaluate("grew", emb, meta)
    assert res.labels_hidden and res.submission == "grew"
    assert "rank1" not in res.summary() and math.isnan(res.rank1)
    assert res.counts["num_hidden_probes"] == 4 and res.counts["num_gallery_subjects"] == 25
    s = res.summary()
    assert 0 < s["dist_top1_mean"] <= s["dist_top20_mean"]
    dist = pairwise_distance(emb[50:], emb[:50])
    assert s["dist_top1_mean"] == pytest.approx(float(dist.min(1).values.mean()), rel=1e-5)
    assert res.probe_ids is not None and res.probe_ids.tolist() == [50, 51, 52, 53]
    assert res.top_gallery_ids is not None and res.top_gallery_ids.shape == (4, 20)
    assert res.to_dict()["labels_hidden"] is True
    # Probes named otherwise whose subjects are nowhere in the gallery: hidden all the same.
    rows = [("1", "01", "a"), ("2", "02", "b"), ("zz", "03", "vid1")]
    assert evaluate("grew", _emb([0, 1, 2]), _meta(rows)).labels_hidden


def test_grew_validation_probes_score_rank1_beside_the_hidden_ones() -> None:
    emb, meta = _hidden_grew_set(n_val=6)
    res = evaluate("grew", emb, meta)
    assert not res.labels_hidden and res.submission == "grew"
    assert res.counts["num_labelled_probes"] == 6 and res.counts["num_hidden_probes"] == 4
    dist = pairwise_distance(emb[54:], emb[:50])
    nearest = dist.argmin(1).tolist()
    expected = np.mean([meta.subjects[j] == meta.subjects[54 + i] for i, j in enumerate(nearest)])
    assert res.rank1 == pytest.approx(float(expected))
    assert res.probe_ids is not None and res.probe_ids.tolist() == [50, 51, 52, 53]


def test_grew_distractors_join_the_gallery() -> None:
    emb, meta = _hidden_grew_set(n_gallery=22)
    extra = _meta([("distractor", "04", f"d{k}") for k in range(3)])
    both = SequenceMeta(
        *(
            np.concatenate([getattr(meta, c), getattr(extra, c)])
            for c in ("subjects", "types", "views")
        )
    )
    emb2 = torch.cat([emb, emb[:3] + 0.001])
    res = evaluate("grew", emb2, both)
    assert res.counts["num_gallery"] == 47 and res.counts["num_distractors"] == 3
    assert res.counts["num_gallery_subjects"] == 22
    without = evaluate("grew", emb2, both, distractor_types=[], probe_types=["03"])
    assert without.counts["num_gallery"] == 44


def test_a_protocol_is_one_class() -> None:
    """Defining a ``Protocol`` subclass registers it; its keyword-only options are its config."""

    class Nearest(Protocol):
        name = "test_nearest"

        def run(self, embeddings: torch.Tensor, meta: SequenceMeta, *, k: int = 1) -> EvalResult:
            return EvalResult(self.name, "toy", "none", {"rank1": float(k) / 10})

    try:
        emb, meta = make_casia(subjects=2, views=("000",), seed=1)
        assert evaluate("test_nearest", emb, meta, k=3).rank1 == pytest.approx(0.3)
        with pytest.raises(ValueError, match="valid options: k"):
            evaluate("test_nearest", emb, meta, j=3)
        with pytest.raises(ValueError, match="registered twice"):
            type("Again", (Protocol,), {"name": "test_nearest"})
    finally:
        PROTOCOLS.pop("test_nearest", None)
