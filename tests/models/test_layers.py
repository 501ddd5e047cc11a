"""Layers: the Eq. 5 partition, the non-linear mask pair, LTA lengths, GeM, separate FCs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gaitgl_lightning.models import GLCL, LTA, GeM, MaskStrategy, SeparateFCs, partition_conv
from gaitgl_lightning.models.layers import NEG_SLOPE


def test_partition_conv_equals_loop_over_parts() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 4, 3, padding=1, bias=False)
    for h, parts in [(16, 4), (16, 8), (18, 4), (9, 2)]:
        x = torch.randn(2, 3, 5, h, 7)
        size = h // parts
        ref = torch.cat([conv(c) for c in x.split(size, dim=3)], dim=3)
        torch.testing.assert_close(partition_conv(conv, x, parts), ref, rtol=1e-5, atol=1e-6)


def _pair_draw(strategy: MaskStrategy, seed: int = 0):
    def draw(n: int, h: int, w: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return strategy.draw(n, h, w, gen, torch.device("cpu"))[None]

    return draw


@pytest.mark.parametrize("batched", [True, False])
def test_mask_branch_is_nonlinear_pair_of_shared_conv(batched: bool) -> None:
    """F(X*Mp) + F(X*Mq) with F = LeakyReLU(conv); a linear F would collapse it to conv(X)."""
    torch.manual_seed(0)
    layer = GLCL(3, 4, local="mask", use_global=False)
    layer.pair_batched = batched
    strategy = MaskStrategy("strip_v", 0.3)
    x = torch.randn(2, 3, 4, 8, 10)
    out = layer(x, None, strategy, _pair_draw(strategy))
    mp = _pair_draw(strategy)(2, 8, 10)[0]
    conv = layer.local_conv3d
    assert conv is not None
    ref = F.leaky_relu(conv(x * mp), NEG_SLOPE) + F.leaky_relu(conv(x * (1 - mp)), NEG_SLOPE)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # Fails if the non-linearity inside F is removed (then the pair equals conv(X)) or if the
    # masks are dropped (then it equals F(X)).
    assert (out - conv(x)).abs().max() > 1e-2
    assert (out - F.leaky_relu(conv(x), NEG_SLOPE)).abs().max() > 1e-2


def test_mask_pair_batched_and_separate_forms_agree() -> None:
    torch.manual_seed(0)
    layer = GLCL(3, 4, local="mask")
    strategy = MaskStrategy("pixel", 0.3)
    x = torch.randn(2, 3, 4, 8, 10)

    def draw_pairs(n: int, h: int, w: int) -> torch.Tensor:  # two pairs, as eval_mode "mean"
        gen = torch.Generator().manual_seed(0)
        return torch.stack([strategy.draw(1, h, w, gen, torch.device("cpu")) for _ in range(2)])

    outs = []
    for batched in (True, False):
        layer.pair_batched = batched
        outs.append(layer(x, None, strategy, draw_pairs))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_glcl_types_a_and_b() -> None:
    x = torch.randn(1, 2, 3, 8, 6)
    fixed = MaskStrategy("part_fixed")
    a = GLCL(2, 5, parts=2, out_type="A")
    b = GLCL(2, 5, parts=2, out_type="B")
    assert a(x, None, fixed).shape == (1, 5, 3, 8, 6)
    assert b(x, None, fixed).shape == (1, 5, 3, 16, 6)


@pytest.mark.parametrize("parts", [None, 2])
def test_part_fixed_is_eq5_over_the_layers_parts(parts: int | None) -> None:
    """mask=part_fixed applies F to each of the fixed parts alone (Eq. 5): the layer's own
    ``parts`` when it has one, else the strategy's; not F(X) over the whole map."""
    torch.manual_seed(0)
    layer = GLCL(3, 4, parts=parts, use_global=False)
    strategy = MaskStrategy("part_fixed", parts=4)
    x = torch.randn(2, 3, 4, 8, 10)
    conv = layer.local_conv3d
    assert conv is not None
    size = 8 // (parts or 4)
    ref = torch.cat([F.leaky_relu(conv(c), NEG_SLOPE) for c in x.split(size, dim=3)], dim=3)
    with torch.no_grad():
        for mode in (layer.train(), layer.eval()):
            out = mode(x, None, strategy)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
            assert (out - F.leaky_relu(conv(x), NEG_SLOPE)).abs().max() > 1e-2


def test_local_partition_is_gone_with_a_pointer() -> None:
    with pytest.raises(ValueError, match="mask=part_fixed"):
        GLCL(2, 5, local="partition")


def test_lta_lengths_match_opengait() -> None:
    lta = LTA(2)
    got = lta.out_lengths(torch.tensor([3, 4, 5, 6, 29, 30, 31])).tolist()
    assert got == [1, 1, 1, 2, 9, 10, 10]


def test_lta_spatial_extent_is_eq1_kernel() -> None:
    """spatial=3 is Eq. 1's a x a x a kernel (space padded, so H x W is kept); spatial=1 is
    the conference (3, 1, 1); both shorten time the same way."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 5, 4)
    for spatial in (1, 3):
        lta = LTA(3, spatial=spatial)
        w = lta.conv.conv3d.weight
        assert tuple(w.shape) == (3, 3, 3, spatial, spatial)
        y, lengths, _ = lta(x, torch.tensor([7, 4]))
        pad = spatial // 2
        ref = F.leaky_relu(F.conv3d(x, w, stride=(3, 1, 1), padding=(0, pad, pad)), NEG_SLOPE)
        assert y.shape == (2, 3, 2, 5, 4) and lengths is not None and lengths.tolist() == [2, 1]
        torch.testing.assert_close(y[0], ref[0])
    with pytest.raises(ValueError, match="odd"):
        LTA(3, spatial=2)


def test_gem_per_row_matches_formula() -> None:
    x = torch.rand(2, 3, 4, 5) + 0.1
    gem = GeM(p=3.0)
    ref = x.pow(3).mean(-1).pow(1 / 3)
    torch.testing.assert_close(gem(x), ref)


def test_gem_does_not_overflow_where_x_pow_p_would() -> None:
    """Above ~8.6e5, x**6.5 overflows float32: the GeM must still return the float64 value."""
    x = torch.rand(2, 3, 4, 5) * 1e7 + 1e6
    gem = GeM(p=6.5)
    out = gem(x)
    ref = x.double().pow(6.5).mean(-1).pow(1 / 6.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)
    out.sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad).all()


def test_gem_gradients_are_those_of_the_plain_formula() -> None:
    x = (torch.rand(2, 3, 4, 5, dtype=torch.float64) + 0.1).requires_grad_()
    gem = GeM(p=6.5).double()
    gem(x).square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    p2 = torch.tensor([6.5], dtype=torch.float64, requires_grad=True)
    x2.clamp(min=1e-6).pow(p2).mean(-1).pow(1 / p2).square().sum().backward()
    assert gem.p.grad is not None and x.grad is not None and x2.grad is not None
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(gem.p.grad, p2.grad)


def test_separate_fcs_is_per_part_matmul() -> None:
    fc = SeparateFCs(3, 4, 5)
    x = torch.randn(2, 4, 3)
    ref = torch.stack([x[:, :, i] @ fc.fc_bin[i] for i in range(3)], dim=2)
    torch.testing.assert_close(fc(x), ref)


def test_fast_paths_have_exact_gradients() -> None:
    from gaitgl_lightning.models.layers import _PartMatmul, _SmallInConv3d

    x = torch.rand(3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_PartMatmul.apply, (x, w))
    x = torch.rand(2, 1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, 1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: _SmallInConv3d.apply(a, b, (1, 1, 1), (1, 1, 1)), (x, w)
    )


def test_the_layer_asks_the_strategy_for_its_branch() -> None:
    """A new strategy's own ``local_branch`` is what the layer runs (no name known to layers)."""
    from gaitgl_lightning.models.masks import MASK_PATTERNS, MaskPattern

    class Halved(MaskPattern):
        name = "halved_for_test"
        random = False

        def local_branch(self, f, x, draw, parts, batched):  # type: ignore[no-untyped-def]
            return f(x) * 0.5

    try:
        torch.manual_seed(0)
        layer = GLCL(3, 4, use_global=False)
        x = torch.randn(2, 3, 4, 8, 10)
        conv = layer.local_conv3d
        assert conv is not None
        out = layer(x, None, MaskStrategy("halved_for_test"))
        torch.testing.assert_close(out, 0.5 * F.leaky_relu(conv(x), NEG_SLOPE))
    finally:
        MASK_PATTERNS.pop("halved_for_test", None)
