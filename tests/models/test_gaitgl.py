"""GaitGL forward: padded batches, short clips, gradients, AMP, the mask stream."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TINY_STAGES

from gaitgl_lightning.losses import GaitGLLoss
from gaitgl_lightning.models import GLCL, GaitGL, MaskStrategy, silhouettes_to_input

SIZE = (16, 12)
JOURNAL = TINY_STAGES
# OpenGait's layout: a conv stem and the fixed partition (mask=part_fixed), its parts per stage.
OPENGAIT = [
    {"kind": "conv", "channels": 3, "layers": 2, "pool": "lta"},
    {"channels": 4, "parts": 4, "pool": "sp"},
    {"channels": 6, "layers": 2, "parts": 2, "last": "B"},
]
LTA_LTA = [
    {"channels": 4, "local": "mask", "pool": "lta"},
    {"channels": 4, "global": False, "pool": "lta"},
    {"channels": 6, "layers": 1, "local": "mask", "last": "B"},
]


def _net(stages: list, mask: MaskStrategy | None = None, **kw) -> GaitGL:
    torch.manual_seed(0)
    if mask is None:
        mask = MaskStrategy("part_fixed" if stages is OPENGAIT else "strip_v", 0.3)
    return GaitGL(5, stages, mask=mask, input_size=SIZE, **kw)


def _padded(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(lengths), 1, max(lengths), *SIZE, generator=g)
    for i, n in enumerate(lengths):
        x[i, :, n:] = 0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize(
    ("stages", "mask", "lengths"),
    [
        (JOURNAL, MaskStrategy("strip_v", 0.3), [11, 7, 3, 5]),
        (JOURNAL, MaskStrategy("part_h", 0.3, eval_mode="mean"), [10, 4, 1, 2]),
        (JOURNAL, MaskStrategy("pixel", 0.3, eval_mode="fixed"), [9, 6]),
        (JOURNAL, MaskStrategy("part_fixed", parts=4), [8, 5, 2]),
        (OPENGAIT, None, [13, 8, 4, 1]),
        (LTA_LTA, MaskStrategy("strip_h", 0.3), [20, 9, 10, 3]),
    ],
)
@pytest.mark.parametrize("unpadded", [False, True])
def test_padded_batch_equals_one_at_a_time(stages, mask, lengths, unpadded) -> None:
    """Both evaluation forms of a padded batch (length-masked padded maps; groups of equal
    length without padding, the CPU default) give each sequence's one-at-a-time result."""
    net = _net(stages, mask)
    with torch.no_grad():  # give BN non-trivial running stats first
        net.train()(torch.rand(6, 1, 12, *SIZE) * 2)
    net.eval()
    net.eval_unpadded = unpadded
    x, lens = _padded(lengths)
    with torch.no_grad():
        batch = net(x, lens)
        for i, n in enumerate(lengths):
            one = net(x[i : i + 1, :, :n])
            torch.testing.assert_close(batch.embeddings[i], one.embeddings[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(batch.logits[i], one.logits[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("unpadded", [False, True])
def test_padding_content_is_ignored(unpadded: bool) -> None:
    net = _net(OPENGAIT).eval()
    net.eval_unpadded = unpadded
    x, lens = _padded([9, 4])
    noisy = x.clone()
    noisy[1, :, 4:] = 1.0
    before = noisy.clone()
    with torch.no_grad():
        torch.testing.assert_close(net(x, lens).embeddings, net(noisy, lens).embeddings)
    assert torch.equal(noisy, before)  # the in-place evaluation path never writes the input


@pytest.mark.parametrize("stages", [JOURNAL, OPENGAIT])
def test_inplace_inference_path_equals_autograd_path(stages) -> None:
    """Without autograd, activations and padding re-zeroing run in place; same numbers."""
    mask = None if stages is OPENGAIT else MaskStrategy("strip_v", 0.3, eval_mode="fixed")
    net = _net(stages, mask).eval()
    net.eval_unpadded = False  # the padded maps, zeroed in place
    x, lens = _padded([11, 10, 7])
    with torch.inference_mode():
        fast = net(x, lens)
    slow = net(x, lens)  # grad enabled: the out-of-place path
    torch.testing.assert_close(fast.embeddings, slow.embeddings.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("frames", "reps"), [(1, 3), (2, 2)])
def test_short_clips_repeat_like_opengait(frames: int, reps: int) -> None:
    net = _net(OPENGAIT).eval()
    x = torch.rand(2, 1, frames, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net(x).embeddings, net(x.repeat(1, 1, reps, 1, 1)).embeddings)


def test_every_parameter_gets_a_gradient() -> None:
    for stages in (JOURNAL, OPENGAIT):
        net = _net(stages).train()
        out = net(torch.rand(4, 1, 9, *SIZE))
        loss = GaitGLLoss()(out.embeddings, out.logits, torch.tensor([0, 0, 1, 1]))
        loss.total.backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bf16_autocast_no_nan() -> None:
    net = _net(JOURNAL).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(4, 1, 9, *SIZE))
        loss = GaitGLLoss()(out.embeddings, out.logits, torch.tensor([0, 0, 1, 1]))
    assert loss.total.dtype == torch.float32
    loss.total.backward()
    assert torch.isfinite(loss.total)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_mask_stream_seeded_and_restored_by_state_dict() -> None:
    x = torch.rand(3, 1, 6, *SIZE)
    net = _net(JOURNAL).train()
    net.set_mask_seed(7)
    first = [net(x).embeddings.detach() for _ in range(3)]
    assert int(net.mask_draws) == 3
    assert not torch.allclose(first[0], first[1])  # new masks at every step

    again = _net(JOURNAL).train()  # a fresh net with the same weights and seed
    again.set_mask_seed(7)
    for ref in first:
        torch.testing.assert_close(again(x).embeddings.detach(), ref)

    # Resume: state after step 1 -> steps 2 and 3 repeat exactly.
    resumed = _net(JOURNAL).train()
    resumed.set_mask_seed(7)
    resumed(x)
    state = copy.deepcopy(resumed.state_dict())
    fresh = _net(JOURNAL).train()
    fresh.load_state_dict(state)
    fresh.set_mask_seed(7)
    torch.testing.assert_close(fresh(x).embeddings.detach(), first[1])

    other = _net(JOURNAL).train()
    other.set_mask_seed(8)
    assert not torch.allclose(other(x).embeddings.detach(), first[0])


def test_eval_without_masks_is_deterministic_and_does_not_draw() -> None:
    net = _net(JOURNAL).eval()
    x = torch.rand(2, 1, 6, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net(x).embeddings, net(x).embeddings)
    assert int(net.mask_draws) == 0


def test_bnneck_head_and_no_classifier() -> None:
    net = _net(JOURNAL, head="bnneck").eval()
    out = net(torch.rand(2, 1, 6, *SIZE))
    assert out.logits.abs().max() <= 1 + 1e-5  # cosine logits
    bare = GaitGL(0, JOURNAL, input_size=SIZE).eval()
    assert bare(torch.rand(2, 1, 6, *SIZE)).logits.shape == (2, 0, net.parts)


@pytest.mark.parametrize("per_sample", [True, False])
def test_masks_per_sample_or_per_batch(per_sample: bool) -> None:
    net = _net(JOURNAL, MaskStrategy("strip_v", 0.3, per_sample=per_sample)).train()
    x = torch.rand(1, 1, 6, *SIZE).repeat(4, 1, 1, 1, 1)  # four identical samples
    emb = net(x).embeddings.detach()
    same = all(torch.allclose(emb[0], emb[i]) for i in range(1, 4))
    assert same == (not per_sample)


def test_lta_spatial_reaches_every_lta_and_keeps_padding_exact() -> None:
    """``lta_spatial`` (Eq. 1's a x a x a reading) is threaded to every LTA of the net, and a
    padded batch still equals one sequence at a time."""
    net = _net(LTA_LTA, lta_spatial=3).eval()
    shapes = [tuple(m.conv.conv3d.weight.shape[2:]) for m in net.ltas.values()]
    assert shapes == [(3, 3, 3), (3, 3, 3)]
    assert _net(LTA_LTA, lta_spatial=1).ltas["0"].conv.conv3d.weight.shape[2:] == (3, 1, 1)
    assert _net(LTA_LTA).ltas["0"].conv.conv3d.weight.shape[2:] == (3, 3, 3)  # Eq. 1 default
    net.eval_unpadded = False
    x, lens = _padded([20, 11])
    with torch.no_grad():
        batch = net(x, lens)
        one = net(x[1:2, :, :11])
    torch.testing.assert_close(batch.embeddings[1], one.embeddings[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stages", [JOURNAL, OPENGAIT])
def test_halves_pooled_apart_equal_stacked_map(stages) -> None:
    """The last type-B layer's halves pooled apart (the fast path) give the outputs and the
    gradients of pooling the stacked map, in training (masks drawn) and at evaluation."""
    net = _net(stages).train()
    assert net.pool_halves
    ref = copy.deepcopy(net)
    ref.pool_halves = False
    x, lens = _padded([9, 7, 9, 4])
    for a in (net, ref):
        a.set_mask_seed(3)
        out = a(x)
        GaitGLLoss()(out.embeddings, out.logits, torch.tensor([0, 0, 1, 1])).total.backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)  # same ops
    net.eval()
    ref.eval()
    with torch.inference_mode():
        torch.testing.assert_close(net(x, lens).embeddings, ref(x, lens).embeddings)


@pytest.mark.slow
@pytest.mark.extended  # 44 s of torch.compile in CI; `make test-all` runs it
def test_compiled_training_forward_equals_eager() -> None:
    """``compile=True``: the training forward runs through torch.compile, same numbers and
    gradients; the module still deep-copies (the compiled function is not copied)."""
    net = _net(OPENGAIT, compile=True).train()
    ref = copy.deepcopy(net)
    ref.compile_training = False
    x = torch.rand(4, 1, 9, *SIZE)
    labels = torch.tensor([0, 0, 1, 1])
    for a in (net, ref):
        out = a(x)
        GaitGLLoss()(out.embeddings, out.logits, labels).total.backward()
    assert net._compiled is not None and copy.deepcopy(net)._compiled is None
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        scale = float(q.grad.abs().max())  # float rounding of fused vs eager kernels
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-2, atol=2e-3 * scale)


PLAIN = [{"channels": 4}, {"channels": 6}, {"channels": 6, "layers": 2, "last": "B"}]


def _branches(net: GaitGL) -> list[tuple[bool, bool]]:
    return [
        (layer.global_conv3d is not None, layer.local_conv3d is not None)
        for block in net.stages
        for layer in block
        if isinstance(layer, GLCL)
    ]


def test_model_level_variants_apply_to_every_stage() -> None:
    """local / global_branch / pools / channels are one key each for the whole net (Tables 5
    and 7 as settings); a stage that states its own key keeps it."""
    base = _net(PLAIN, pools=["lta", "sp"])
    assert [s.pool for s in base.specs] == ["lta", "sp", "none"] and base.parts == 16
    assert _branches(base) == [(True, True)] * 4
    assert _branches(_net(PLAIN, local="none")) == [(True, False)] * 4
    assert _branches(_net(PLAIN, global_branch=False)) == [(False, True)] * 4
    sp_sp = _net(PLAIN, pools=["sp", "sp"])
    assert [s.pool for s in sp_sp.specs] == ["sp", "sp", "none"] and sp_sp.parts == 8
    own = [{"channels": 4, "local": "mask", "pool": "sp"}, *PLAIN[1:]]
    mixed = _net(own, local="none", pools=["lta", "lta"])
    assert _branches(mixed)[0] == (True, True) and _branches(mixed)[1] == (True, False)
    assert [s.pool for s in mixed.specs] == ["sp", "lta", "none"]
    widths = _net([{}, {}, {"layers": 2, "last": "B"}], channels=[4, 6, 6], pools=["lta", "sp"])
    assert [s.channels for s in widths.specs] == [4, 6, 6]
    assert widths.state_dict().keys() == base.state_dict().keys()
    for k, v in base.state_dict().items():
        assert widths.state_dict()[k].shape == v.shape, k


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"local": "partition"}, r"model local: .*mask=part_fixed"),
        ({"local": "none", "global_branch": False}, r"stages\[0\]: no branch left"),
        ({"pools": ["lta", "sp", "sp", "sp"]}, "pools lists 4 poolings for 3 stages"),
        ({"channels": [4, 6]}, "channels lists 2 widths for 3 stages"),
    ],
)
def test_bad_model_variant_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _net(PLAIN, **kwargs)
    with pytest.raises(ValueError, match=r"stages\[1\]: .*mask=part_fixed"):
        _net([{"channels": 4}, {"channels": 4, "local": "partition"}])


def test_part_fixed_is_not_the_unmasked_map() -> None:
    """mask=part_fixed (Eq. 5) and mask=none (F(X)) differ on the same weights, in training
    and at evaluation (before Eq. 5 had one route, part_fixed silently computed F(X))."""
    x = torch.rand(2, 1, 9, *SIZE)
    fixed = _net(JOURNAL, MaskStrategy("part_fixed", parts=4))
    plain = _net(JOURNAL, MaskStrategy("none"))
    for train in (True, False):
        with torch.no_grad():
            a = fixed.train(train)(x).embeddings
            b = plain.train(train)(x).embeddings
        assert (a - b).abs().max() > 1e-4


def test_silhouettes_to_input_is_the_one_scaling() -> None:
    sils = torch.tensor([[[[0, 255], [51, 128]]]], dtype=torch.uint8)  # [1, T=1, 2, 2]
    x = silhouettes_to_input(sils)
    assert x.shape == (1, 1, 1, 2, 2) and x.dtype == torch.float32
    assert torch.equal(x, sils.unsqueeze(1).float() / 255)
    scaled = torch.rand(2, 3, 4, 5)
    assert torch.equal(silhouettes_to_input(scaled), scaled.unsqueeze(1))  # float: as given


def test_layers_in_common_start_from_the_same_weights() -> None:
    """One seed gives a layer the same initial weights in every network that has it (the
    pairing of an ablation's arms), whatever extra layers the other network has and whatever
    the global generator drew before; another seed gives other weights."""

    def init(seed: int, **kw) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        torch.rand(7)  # a draw before the model: must not matter
        stages = [{k: v for k, v in st.items() if k != "local"} for st in JOURNAL]
        net = GaitGL(5, stages, mask=MaskStrategy("none"), input_size=SIZE, **kw)
        return {k: v for k, v in net.state_dict().items() if v.is_floating_point()}

    full = init(3)
    for kw in ({"local": "none"}, {"global_branch": False}):
        arm = init(3, **kw)
        common = [k for k in arm if k in full and arm[k].shape == full[k].shape]
        assert len(arm) < len(full) and any(".conv3d.weight" in k for k in common)
        for k in common:
            assert torch.equal(arm[k], full[k]), (kw, k)
    other = init(4)
    convs = [k for k in full if k.endswith("conv3d.weight")]
    assert convs and not any(torch.equal(full[k], other[k]) for k in convs)
