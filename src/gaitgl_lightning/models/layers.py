"""Building blocks of GaitGL (paper Sec. 3): conv block, GLCL, LTA, pooling, GeM, separate FCs.

Every temporal op is *length-aware*: a padded batch ``[n, C, T, H, W]`` travels with a boolean
``valid`` mask ``[n, 1, T, 1, 1]`` and padded frames are re-zeroed after each temporal conv, so a
short sequence in a padded batch sees exactly the zeros that conv padding would give it alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .masks import MaskStrategy

NEG_SLOPE = 0.01  # LeakyReLU slope of the reference code (torch default)
PARTITION_GONE = (
    "local: partition is gone: Eq. 5 (the fixed partition) is the mask strategy part_fixed "
    "(mask=part_fixed; parts from mask.parts, or a stage's `parts`)"
)


def time_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Boolean [n, 1, T, 1, 1] mask of real frames for ``lengths`` (why: one broadcastable
    multiply re-zeroes padding after every temporal op)."""
    t = torch.arange(frames, device=lengths.device)
    return (t[None, :] < lengths[:, None])[:, None, :, None, None]


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Disable autocast on ``device`` (why: GeM's x**p and the losses need float32); a no-op
    on devices without autocast (meta, used to count parameters and trace shapes)."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def apply_time_mask(
    x: torch.Tensor, valid: torch.Tensor | None, inplace: bool = False
) -> torch.Tensor:
    """Zero the padded frames of ``x`` (identity when every frame is valid).

    ``inplace`` (for intermediate maps, and only without autograd): zero in place, touching
    only the frames from the shortest sequence's end on (why: padding is the tail of a
    length-grouped batch, so this is a few frames instead of a pass over the whole map).
    """
    if valid is None:
        return x
    if inplace and not torch.is_grad_enabled():
        keep = int(valid.all(0).sum())  # leading frames that are real in every sequence
        if keep < x.shape[2]:
            x[:, :, keep:].mul_(valid[:, :, keep:].to(x.dtype))
        return x
    return x * valid.to(x.dtype)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU, in place, of a fresh intermediate map (a conv output that no backward
    needs: a convolution saves its input, not its output).

    Why in place in training too: autograd's ``leaky_relu_`` backward reads the result, so
    nothing extra is kept, and the step saves one allocation and one pass over every map.
    """
    return F.leaky_relu(x, NEG_SLOPE, inplace=True)


class BasicConv3d(nn.Module):
    """A bias-free Conv3d (the reference code's building block; no norm, no activation).

    The attribute is named ``conv3d`` so that checkpoint keys read ``...conv3d.weight``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int] = (3, 3, 3),
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve [n, C, T, H, W]."""
        conv = self.conv3d
        if (
            x.device.type == "cpu"
            and conv.in_channels <= SMALL_IN_CHANNELS
            and torch.is_grad_enabled()
            and conv.weight.requires_grad
        ):
            return _SmallInConv3d.apply(x, conv.weight, conv.stride, conv.padding)
        return conv(x)


SMALL_IN_CHANNELS = 4


def _autocast_inputs(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast to the autocast dtype when autocast is on (custom Functions see raw inputs, and
    their backward runs outside autocast, so they cast once here and save the cast copies)."""
    dev = tensors[0].device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        return tuple(t.to(dt) for t in tensors)
    return tensors


class _SmallInConv3d(torch.autograd.Function):
    """Conv3d whose CPU backward runs the native kernel instead of oneDNN.

    Why: for 1-4 input channels (the first layer on silhouettes) oneDNN's weight gradient
    collapses when the cores are oversubscribed (other jobs, data-loader workers): measured
    1.96 s vs 0.28 s native for [8, 1, 30, 64, 44] -> 64 channels on a loaded 2-core machine.
    On an idle machine oneDNN is ~2x faster for this op (0.06 s vs 0.12 s), about 1% of a
    train step, so the native path is the robust choice. The forward is unchanged.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w: torch.Tensor, stride: Any, padding: Any
    ) -> torch.Tensor:
        ctx.dtypes = (x.dtype, w.dtype)
        x, w = _autocast_inputs(x, w)
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding = list(stride), list(padding)
        return F.conv3d(x, w, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        # Set the flag directly: mkldnn.flags() also toggles TF32 and warns on every call.
        mkldnn = torch.backends.mkldnn
        previous = mkldnn.enabled
        mkldnn.enabled = False  # type: ignore[assignment]
        try:
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad.to(x.dtype).contiguous(),
                x,
                w,
                None,
                ctx.stride,
                ctx.padding,
                [1, 1, 1],
                False,
                [0, 0, 0],
                1,
                [ctx.needs_input_grad[0], True, False],
            )
        finally:
            mkldnn.enabled = previous  # type: ignore[assignment]
        return (gx.to(ctx.dtypes[0]) if gx is not None else None), gw.to(ctx.dtypes[1]), None, None


class ConvBlock(nn.Module):
    """Plain 3x3x3 conv + LeakyReLU (the optional stem), length-aware."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = BasicConv3d(in_channels, out_channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Conv the zero-padded map, then re-zero padded frames."""
        return apply_time_mask(lrelu(self.conv(x)), valid, inplace=True)


class GLCL(nn.Module):
    """Global-local conv layer (Eq. 1-6): ``Y_A = G(X) + L(X)`` or ``Y_B = cat_H(G(X), L(X))``.

    ``local``: ``"mask"`` (a local branch, computed as the model's mask strategy says: Eq. 6's
    complementary pairs, Eq. 5's fixed parts for ``part_fixed``, or ``F(X)``) or ``"none"``
    (global only).  ``F`` is one shared non-linear map, conv + LeakyReLU.  ``parts``: this
    layer's part count for ``part_fixed`` (None: the strategy's).  ``use_global`` False gives
    the "local only" ablation.  The module names ``global_conv3d`` / ``local_conv3d`` follow
    the conference code so checkpoints map one to one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        local: str = "mask",
        parts: int | None = None,
        out_type: str = "A",
        use_global: bool = True,
    ) -> None:
        super().__init__()
        if local == "partition":
            raise ValueError(PARTITION_GONE)
        if local not in ("mask", "none"):
            raise ValueError(f"GLCL local must be mask or none, got {local!r}")
        if out_type not in ("A", "B"):
            raise ValueError(f"GLCL out_type must be 'A' or 'B', got {out_type!r}")
        if not use_global and local == "none":
            raise ValueError("GLCL needs at least one branch (use_global=False and local='none')")
        self.local = local
        self.parts = None if parts is None else int(parts)
        self.out_type = out_type
        self.global_conv3d = BasicConv3d(in_channels, out_channels) if use_global else None
        self.local_conv3d = BasicConv3d(in_channels, out_channels) if local != "none" else None
        # How a mask pair runs: None = by device (one conv over a doubled batch on GPU, two
        # conv calls on CPU); True / False force one form (tests compare them).
        self.pair_batched: bool | None = None

    @property
    def doubles_height(self) -> bool:
        """True when the output stacks two branches along H (type B with both branches)."""
        return (
            self.out_type == "B"
            and self.global_conv3d is not None
            and self.local_conv3d is not None
        )

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        """``F`` of Eq. 5-6: the shared local conv + LeakyReLU."""
        assert self.local_conv3d is not None
        return lrelu(self.local_conv3d(x))

    def _local(
        self,
        x: torch.Tensor,
        strategy: MaskStrategy | None,
        draw: Callable[[int, int, int], torch.Tensor] | None,
    ) -> torch.Tensor:
        if strategy is None:
            return self._f(x)
        batched = self.pair_batched if self.pair_batched is not None else x.device.type != "cpu"
        return strategy.local_branch(self._f, x, draw, self.parts, batched)

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None,
        strategy: MaskStrategy | None = None,
        draw: Callable[[int, int, int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Apply the layer; ``draw(n, H, W)`` returns Mp [pairs, m, 1, 1, H, W] when masking."""
        if self.doubles_height:
            return torch.cat(self.halves(x, valid, strategy, draw), dim=3)
        g = lrelu(self.global_conv3d(x)) if self.global_conv3d is not None else None
        loc = self._local(x, strategy, draw) if self.local_conv3d is not None else None
        if g is None:
            assert loc is not None
            y = loc
        elif loc is None:
            y = g
        else:
            y = g.add_(loc) if not torch.is_grad_enabled() else g + loc
        return apply_time_mask(y, valid, inplace=True)

    def halves(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None,
        strategy: MaskStrategy | None = None,
        draw: Callable[[int, int, int], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Type B's two maps (global, local) before they are stacked along H.

        Why: when this is the last layer, temporal max and row pooling act on each row alone,
        so the network pools each half and stacks the small pooled maps instead of copying
        the largest map of the net into a stacked one (and its gradient out of it).
        """
        assert self.global_conv3d is not None and self.local_conv3d is not None
        g = lrelu(self.global_conv3d(x))
        loc = self._local(x, strategy, draw)
        return apply_time_mask(g, valid, inplace=True), apply_time_mask(loc, valid, inplace=True)


class LTA(nn.Module):
    """Local temporal aggregation: Conv3d (a,s,s), stride (b,1,1), + LeakyReLU.

    ``spatial`` is the kernel's spatial extent s: 1 is the conference code's (3,1,1); Eq. 1 of
    the journal reads a x a x a (s = a). Time is not padded, space is padded by s // 2 so the
    frame size stays the same (Sec. 3.2). Output length ``floor((L - a) / b) + 1`` per
    sequence; the new lengths are returned so the following layers stay length-aware.
    """

    def __init__(self, channels: int, kernel: int = 3, stride: int = 3, spatial: int = 1) -> None:
        super().__init__()
        if int(spatial) < 1 or int(spatial) % 2 == 0:
            raise ValueError(f"LTA spatial extent must be odd and >= 1, got {spatial}")
        self.kernel = int(kernel)
        self.stride = int(stride)
        self.spatial = int(spatial)
        pad = self.spatial // 2
        self.conv = BasicConv3d(
            channels,
            channels,
            (self.kernel, self.spatial, self.spatial),
            (self.stride, 1, 1),
            (0, pad, pad),
        )

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames each sequence keeps after aggregation."""
        return torch.div(lengths - self.kernel, self.stride, rounding_mode="floor") + 1

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return (y, new lengths, new valid mask)."""
        y = lrelu(self.conv(x))
        if lengths is None:
            return y, None, None
        new = self.out_lengths(lengths)
        valid = time_mask(new, y.shape[2])
        return apply_time_mask(y, valid, inplace=True), new, valid


def spatial_pool(x: torch.Tensor) -> torch.Tensor:
    """SP: MaxPool (1, 2, 2); padded frames are zero in and zero out."""
    return F.max_pool3d(x, kernel_size=(1, 2, 2), stride=(1, 2, 2))


def temporal_max(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Eq. 7, length-aware: max over the real frames only. [n,C,T,H,W] -> [n,C,H,W]."""
    if valid is not None:
        if torch.is_grad_enabled():
            x = x.masked_fill(~valid, float("-inf"))
        else:  # an intermediate map: fill only the padded tail, in place
            keep = int(valid.all(0).sum())
            if keep < x.shape[2]:
                x[:, :, keep:].masked_fill_(~valid[:, :, keep:], float("-inf"))
    # max, not amax: the same values, and a backward that scatters into one frame per value
    # (amax's backward compares the whole map with the result and divides by the tie count:
    # measured ~0.3 s of a 7 s opengait_gaitgl train step on a loaded 2-core CPU).
    return x.max(dim=2).values


class GeM(nn.Module):
    """Generalised-mean pooling over W per horizontal bin (Eq. 9-10), learnable scalar p.

    Computed in float32 (why: x**6.5 overflows fp16), and as ``m * mean((x / m)^p)^(1/p)`` with
    ``m`` the bin's max (why: the backbone has no normalisation, so under SGD lr 0.1 its output
    can grow past ~8.6e5, where ``x**6.5`` overflows float32 and the loss turns NaN although the
    BN head makes the loss blind to that scale; docs/model.md). The same function: ``m`` is
    held constant in autograd, as the value does not depend on it.  ``bins=None`` makes one bin
    per row.
    """

    def __init__(self, p: float = 6.5, eps: float = 1e-6, bins: int | None = None) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n, C, H, W] -> [n, C, bins]."""
        n, c, h = x.shape[:3]
        bins = self.bins or h
        with autocast_off(x.device):
            dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64
            z = x.to(dtype).reshape(n, c, bins, -1).clamp(min=self.eps)
            p = self.p.to(dtype)
            m = z.detach().amax(-1, keepdim=True)
            return z.div(m).pow(p).mean(-1).pow(1.0 / p).mul(m.squeeze(-1))


class RowPool(nn.Module):
    """Non-learnable row pooling for the Table 6 head ablation: max, avg or max+avg over W."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in ("max", "avg", "max_avg"):
            raise ValueError(f"row pooling must be max/avg/max_avg, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n, C, H, W] -> [n, C, H]."""
        if self.mode == "max":
            return x.amax(-1)
        if self.mode == "avg":
            return x.mean(-1)
        return x.amax(-1) + x.mean(-1)


class SeparateFCs(nn.Module):
    """One bias-free FC per part (Eq. 11): weight ``fc_bin`` [parts, in, out], xavier init."""

    def __init__(self, parts: int, in_channels: int, out_channels: int, norm: bool = False):
        super().__init__()
        self.norm = norm
        self.fc_bin = nn.Parameter(
            nn.init.xavier_uniform_(torch.zeros(parts, in_channels, out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n, C, p] -> [n, out, p]."""
        w = F.normalize(self.fc_bin, dim=1) if self.norm else self.fc_bin
        return _PartMatmul.apply(x, w.to(x.dtype))


class _PartMatmul(torch.autograd.Function):
    """``y[:, :, k] = x[:, :, k] @ w[k]`` with every bmm operand contiguous.

    Why: with x in [n, C, p] layout the per-part batch has stride 1 and the CPU bmm takes a
    per-matrix path: 2-3x slower on an idle machine and ~100x slower (1 s instead of 10 ms
    for 64 parts x 128 x 128) on a loaded one; an einsum or a permuted view hits it in the
    forward and again in the backward.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.dtypes = (x.dtype, w.dtype)
        x, w = _autocast_inputs(x, w)
        xp = x.permute(2, 0, 1).contiguous()  # [p, n, C]
        ctx.save_for_backward(xp, w)
        return torch.bmm(xp, w).permute(1, 2, 0).contiguous()  # [n, out, p]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp, w = ctx.saved_tensors
        gp = grad.to(xp.dtype).permute(2, 0, 1).contiguous()  # [p, n, out]
        gx = torch.bmm(gp, w.transpose(1, 2).contiguous()).permute(1, 2, 0)
        gw = torch.bmm(xp.transpose(1, 2).contiguous(), gp)
        return gx.to(ctx.dtypes[0]), gw.to(ctx.dtypes[1])
