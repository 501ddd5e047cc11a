"""Triplet and CE against brute-force loops over explicit triplets and parts."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from gaitgl_lightning.losses import GaitGLLoss, batch_all_triplet, part_cross_entropy


def brute_triplet(emb: torch.Tensor, labels: list[int], margin: float) -> tuple[float, float]:
    """Loop over parts and explicit (a, p, n) triplets; positives include the anchor."""
    n, _, parts = emb.shape
    losses, counts = [], []
    for k in range(parts):
        total, nz = 0.0, 0
        for a, p, q in itertools.product(range(n), repeat=3):
            if labels[a] != labels[p] or labels[a] == labels[q]:
                continue
            d_ap = torch.dist(emb[a, :, k], emb[p, :, k]).item()
            d_an = torch.dist(emb[a, :, k], emb[q, :, k]).item()
            term = max(d_ap - d_an + margin, 0.0)
            total += term
            nz += term > 0
        losses.append(total / nz if nz else 0.0)
        counts.append(nz)
    return sum(losses) / parts, sum(counts) / parts


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 2, 2, 1]])
def test_triplet_matches_brute_force(labels: list[int]) -> None:
    torch.manual_seed(0)
    emb = torch.randn(len(labels), 4, 3) * 0.3
    got = batch_all_triplet(emb, torch.tensor(labels), margin=0.2)
    loss, nonzero = brute_triplet(emb.double(), labels, 0.2)
    assert got.loss.item() == pytest.approx(loss, rel=1e-4)
    assert got.nonzero.item() == pytest.approx(nonzero)


def test_triplet_zero_when_separated() -> None:
    emb = torch.tensor([[0.0], [0.0], [10.0], [10.0]])[:, :, None].repeat(1, 1, 2)
    got = batch_all_triplet(emb, torch.tensor([0, 0, 1, 1]))
    assert got.loss.item() == 0.0 and got.nonzero.item() == 0.0


def test_ce_matches_loop_over_parts() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 3)
    labels = torch.tensor([0, 1, 2, 3, 1])
    for ls, scale in [(0.0, 1.0), (0.1, 16.0)]:
        got = part_cross_entropy(logits, labels, scale=scale, label_smoothing=ls)
        ref = torch.stack(
            [F.cross_entropy(logits[:, :, k] * scale, labels, label_smoothing=ls) for k in range(3)]
        ).mean()
        torch.testing.assert_close(got.loss, ref)
        acc = torch.stack([(logits[:, :, k].argmax(1) == labels).float() for k in range(3)])
        assert got.accuracy.item() == pytest.approx(acc.mean().item())


def test_combined_loss_parts_and_float32() -> None:
    torch.manual_seed(0)
    emb = torch.randn(4, 3, 2, dtype=torch.bfloat16, requires_grad=True)
    logits = torch.randn(4, 5, 2, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = GaitGLLoss(triplet_weight=0.5, ce_weight=2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(emb, logits, labels)
    assert out.total.dtype == torch.float32
    for key in ("triplet", "ce", "triplet_nonzero", "mean_dist", "ce_acc"):
        assert not out.parts[key].requires_grad and out.parts[key].dtype == torch.float32
    torch.testing.assert_close(
        out.total.detach(), 0.5 * out.parts["triplet"] + 2.0 * out.parts["ce"]
    )
    out.total.backward()
    assert emb.grad is not None and logits.grad is not None


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="labels"):
        GaitGLLoss()(torch.zeros(4, 3, 2), torch.zeros(4, 5, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        GaitGLLoss(triplet_weight=0.0, ce_weight=0.0)


@pytest.mark.parametrize("name", ["gaitgl", "gaitgl_ls", "triplet_only"])
def test_loss_configs_instantiate(name: str) -> None:
    from hydra.utils import instantiate

    from gaitgl_lightning import group_config

    # group_config applies the file's config extension (gaitgl_ls extends gaitgl), as Hydra does.
    loss = instantiate(group_config("loss", name))
    assert isinstance(loss, GaitGLLoss)
    out = loss(torch.randn(4, 3, 2), torch.randn(4, 5, 2), torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(out.total)
