"""Distances against the direct formula; rank / AP / INP against brute force, ties included."""

from __future__ import annotations

import pytest
import torch
from eval_bruteforce import ap_inp, first_rank, naive_distance

from gaitgl_lightning.evaluation.distance import DISTANCES, pairwise_distance
from gaitgl_lightning.evaluation.ranking import (
    ap_and_inp,
    cmc_from_ranks,
    encode_labels,
    first_match_rank,
)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_distance_matches_direct_formula(distance: str, chunk_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(7, 5, 3, generator=g), torch.randn(9, 5, 3, generator=g)
    got = pairwise_distance(p, q, distance, chunk_size)
    assert got.shape == (7, 9)
    torch.testing.assert_close(got.double(), naive_distance(p, q, distance), atol=1e-4, rtol=1e-4)


def test_distances_differ_and_flat_equals_one_part() -> None:
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(4, 6, 2, generator=g), torch.randn(5, 6, 2, generator=g)
    parts = pairwise_distance(p, q, "euc_parts")
    flat = pairwise_distance(p, q, "euc_flat")
    assert not torch.allclose(parts, flat)
    # with a single part both Euclidean readings coincide
    torch.testing.assert_close(
        pairwise_distance(p[..., :1], q[..., :1], "euc_parts"),
        pairwise_distance(p[..., :1], q[..., :1], "euc_flat"),
    )
    # 2-D features are one part
    torch.testing.assert_close(
        pairwise_distance(p.flatten(1), q.flatten(1), "euc_parts"), flat, atol=1e-5, rtol=1e-5
    )


def test_half_precision_embeddings_are_upcast() -> None:
    g = torch.Generator().manual_seed(2)
    p, q = torch.randn(3, 4, 2, generator=g), torch.randn(4, 4, 2, generator=g)
    got = pairwise_distance(p.half(), q.half(), "euc_parts")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, pairwise_distance(p.half().float(), q.half().float()))


def test_bad_distance_and_shapes() -> None:
    p = torch.randn(2, 4, 2)
    with pytest.raises(ValueError, match="unknown distance"):
        pairwise_distance(p, p, "manhattan")
    with pytest.raises(ValueError, match="differ in shape"):
        pairwise_distance(p, torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        pairwise_distance(p, p, chunk_size=0)


def test_hand_computed_ap_inp_and_rank() -> None:
    dist = torch.tensor([[3.0, 1.0, 5.0, 2.0, 4.0]])
    glab = ["b", "a", "a", "b", "a"]
    # order by distance: j=1 (a, T), j=3 (b, F), j=0 (b, F), j=4 (a, T), j=2 (a, T)
    # precision at the true matches: 1/1, 2/4, 3/5; last true match at position 5
    p, g = encode_labels(["a"], glab)
    ap, inp = ap_and_inp(dist, p, g)
    assert ap.item() == pytest.approx((1 / 1 + 2 / 4 + 3 / 5) / 3)
    assert inp.item() == pytest.approx(3 / 5)
    assert first_match_rank(dist, p, g).tolist() == [0]
    # probe "b": first true match at position 2 (j=3 at d=2 comes second)
    p2, g2 = encode_labels(["b"], glab)
    assert first_match_rank(dist, p2, g2).tolist() == [1]
    # a probe without true match ranks past the gallery and scores 0 AP
    p3, g3 = encode_labels(["z"], glab)
    assert first_match_rank(dist, p3, g3).tolist() == [5]
    assert ap_and_inp(dist, p3, g3)[0].item() == 0.0


def test_ties_are_broken_by_gallery_order() -> None:
    dist = torch.tensor([[1.0, 1.0, 1.0, 0.5]])
    # the nearest (j=3) is wrong; the three tied ones come in gallery order
    for glab, expected in ((["x", "a", "a", "y"], 2), (["a", "x", "x", "y"], 1)):
        p, g = encode_labels(["a"], glab)
        assert first_match_rank(dist, p, g).tolist() == [expected]
        assert first_rank(dist[0].tolist(), "a", glab) == expected


def test_random_with_ties_against_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    for trial in range(5):
        n_p, n_g = 13, 17
        # integer-valued embeddings from a tiny range -> many exactly tied distances
        p = torch.randint(0, 2, (n_p, 2, 2), generator=g).float()
        q = torch.randint(0, 2, (n_g, 2, 2), generator=g).float()
        plab = [str(int(v)) for v in torch.randint(0, 4, (n_p,), generator=g)]
        glab = [str(int(v)) for v in torch.randint(0, 4, (n_g,), generator=g)]
        dist = pairwise_distance(p, q, "euc_parts")
        pc, gc = encode_labels(plab, glab)
        ranks = first_match_rank(dist, pc, gc).tolist()
        ap, inp = ap_and_inp(dist, pc, gc)
        for i in range(n_p):
            row = dist[i].tolist()
            assert ranks[i] == first_rank(row, plab[i], glab), (trial, i)
            bap, binp = ap_inp(row, plab[i], glab)
            assert ap[i].item() == pytest.approx(bap)
            assert inp[i].item() == pytest.approx(binp)


def test_cmc_needs_probes() -> None:
    assert cmc_from_ranks(torch.tensor([0, 1, 5]), [1, 2, 6]) == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        6: 1.0,
    }
    with pytest.raises(ValueError, match="no probe"):
        cmc_from_ranks(torch.tensor([], dtype=torch.long), [1])


@pytest.mark.parametrize("tile", [1, 7, 1 << 20])
def test_gallery_tiles_do_not_change_distances(tile: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """euc_parts works on gallery tiles of ``_TILE_ELEMS`` elements; any tiling, same numbers."""
    from gaitgl_lightning.evaluation import distance as dist_mod

    monkeypatch.setattr(dist_mod, "_TILE_ELEMS", tile)
    g = torch.Generator().manual_seed(3)
    p, q = torch.randn(5, 4, 3, generator=g), torch.randn(23, 4, 3, generator=g)
    got = pairwise_distance(p, q, "euc_parts", chunk_size=2)
    torch.testing.assert_close(
        got.double(), naive_distance(p, q, "euc_parts"), atol=1e-4, rtol=1e-4
    )


def test_view_nearest_hits_against_brute_force() -> None:
    """Per-view rank-1 from the same block as rank-k: first minimum of each view's columns."""
    from gaitgl_lightning.evaluation.ranking import view_nearest_hits

    g = torch.Generator().manual_seed(4)
    d = torch.randint(0, 4, (6, 11), generator=g).float()  # many ties
    plab = torch.randint(0, 3, (6,), generator=g)
    glab = torch.randint(0, 3, (11,), generator=g)
    bounds = [0, 4, 4, 9, 11]  # view 1 has no gallery column
    hits = view_nearest_hits(d, plab, glab, bounds)
    for i in range(6):
        for v in range(4):
            cols = list(range(bounds[v], bounds[v + 1]))
            if not cols:
                assert not hits[i, v]
                continue
            best = min(cols, key=lambda c: (float(d[i, c]), c))
            assert bool(hits[i, v]) == bool(glab[best] == plab[i])


def test_first_match_rank_mixed_ties_inf_and_unmatched_rows() -> None:
    """Rows with and without ties at the nearest true match in one block (the tie count runs
    only on the rows that have one), infinite distances, probes without a true match."""
    g = torch.Generator().manual_seed(5)
    for trial in range(20):
        n_p, n_g = 9, 31
        dist = torch.randint(0, 6 if trial % 2 else 60, (n_p, n_g), generator=g).float()
        dist[torch.rand(n_p, n_g, generator=g) < 0.1] = float("inf")
        if trial % 4 == 3:  # the first rows' true matches all at infinity, behind other infs
            glab_t = torch.randint(0, 4, (n_g,), generator=g)
            dist[:3, 0] = float("inf")
            dist[:3][:, glab_t == 0] = float("inf")
        plab = [str(int(v)) for v in torch.randint(0, 5, (n_p,), generator=g)]
        glab = [str(int(v)) for v in torch.randint(0, 4, (n_g,), generator=g)]  # "4": no match
        if trial % 4 == 3:
            glab = [str(int(v)) for v in glab_t]
            plab[:3] = ["0", "0", "0"]
        pc, gc = encode_labels(plab, glab)
        ranks = first_match_rank(dist, pc, gc).tolist()
        for i in range(n_p):
            assert ranks[i] == first_rank(dist[i].tolist(), plab[i], glab), (trial, i)
