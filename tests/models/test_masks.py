"""Mask strategies: complementary, exact dropped size, reproducible, different across draws."""

from __future__ import annotations

import math

import pytest
import torch

from gaitgl_lightning.models import MASK_PATTERNS, MaskPattern, MaskStrategy

RANDOM = [name for name, pattern in MASK_PATTERNS.items() if pattern.random]
H, W = 16, 11


def _draw(strategy: str, seed: int, ratio: float = 0.3, n: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return MaskStrategy(strategy, ratio).draw(n, H, W, gen, torch.device("cpu"))


@pytest.mark.parametrize("strategy", RANDOM)
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.9])
def test_complementary_and_exact_size(strategy: str, ratio: float) -> None:
    mp = _draw(strategy, 0, ratio)
    assert mp.shape == (5, 1, 1, H, W)
    mq = 1 - mp
    assert torch.all((mp == 0) | (mp == 1))
    assert torch.all(mp + mq == 1) and torch.all(mp * mq == 0)
    m = mp[:, 0, 0].bool()
    rows, cols = m.all(2), m.all(1)  # fully dropped rows / columns
    if strategy.endswith("_h"):
        k = math.floor(ratio * H)
        assert torch.all(rows.sum(1) == k) and torch.all(m.sum((1, 2)) == k * W)
    elif strategy.endswith("_v"):
        k = math.floor(ratio * W)
        assert torch.all(cols.sum(1) == k) and torch.all(m.sum((1, 2)) == k * H)
    else:
        assert torch.all(m.sum((1, 2)) == math.floor(ratio * H * W))
    if strategy.startswith("part"):  # one contiguous band
        band = rows if strategy.endswith("_h") else cols
        for b in band:
            idx = b.nonzero().flatten()
            assert int(idx[-1] - idx[0] + 1) == len(idx)


@pytest.mark.parametrize("strategy", RANDOM)
def test_reproducible_and_different_across_draws(strategy: str) -> None:
    assert torch.equal(_draw(strategy, 3), _draw(strategy, 3))
    assert not torch.equal(_draw(strategy, 3), _draw(strategy, 4))
    gen = torch.Generator().manual_seed(3)
    s = MaskStrategy(strategy, 0.3)
    a = s.draw(5, H, W, gen, torch.device("cpu"))
    b = s.draw(5, H, W, gen, torch.device("cpu"))
    assert not torch.equal(a, b)
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 5))  # per sample


def test_per_batch_draws_one_pair() -> None:
    gen = torch.Generator().manual_seed(0)
    mp = MaskStrategy("strip_v", 0.3, per_sample=False).draw(5, H, W, gen, torch.device("cpu"))
    assert mp.shape == (1, 1, 1, H, W)


def test_the_registry_holds_the_paper_strategies() -> None:
    # Table 5's rows plus ``none``; a registered strategy is also a config (test_configs).
    assert set(MASK_PATTERNS) == {
        "none",
        "part_h",
        "part_v",
        "strip_h",
        "strip_v",
        "pixel",
        "part_fixed",
    }
    assert sorted(RANDOM) == ["part_h", "part_v", "pixel", "strip_h", "strip_v"]
    for name in set(MASK_PATTERNS) - set(RANDOM):
        with pytest.raises(RuntimeError, match="draws no random masks"):
            _draw(name, 0)


def test_a_registered_strategy_is_drawn_by_its_class() -> None:
    class TopRows(MaskPattern):
        name = "top_rows"

        def dropped(self, m, height, width, count, generator, device):  # type: ignore[no-untyped-def]
            rows = torch.arange(height, device=device) < count(height)
            return rows[None, :, None].expand(m, height, width)

    try:
        mp = _draw("top_rows", 0, ratio=0.25)[:, 0, 0]
        assert torch.equal(mp[0].bool().all(1), torch.arange(H) < 4)
        with pytest.raises(ValueError, match="registered twice"):
            type("Again", (MaskPattern,), {"name": "top_rows"})
    finally:
        MASK_PATTERNS.pop("top_rows", None)


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        MaskStrategy("stripes")
    with pytest.raises(ValueError, match="ratio"):
        MaskStrategy("strip_v", 1.5)
    with pytest.raises(ValueError, match="eval_mode"):
        MaskStrategy("strip_v", eval_mode="avg")
