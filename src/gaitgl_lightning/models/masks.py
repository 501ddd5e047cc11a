"""The local branch of a GLCL layer, one strategy each (paper Sec. 3.3, Eq. 5-6, Table 5).

A random pair ``(Mp, Mq)`` satisfies ``Mp + Mq == 1``: the *dropped* region is 1 in ``Mp`` and
0 in ``Mq``.  The local branch computes ``F(X * Mp) + F(X * Mq)`` with one shared, non-linear
``F`` (Eq. 6); ``part_fixed`` is Eq. 5 (F over fixed parts) and ``none`` is ``F(X)``.  Each
strategy computes its own branch (``MaskPattern.local_branch``): the layer only asks it.
Masks are built on the input's device in one vectorised op from a ``torch.Generator`` so that
a seed reproduces them exactly (see ``GaitGL.set_mask_seed``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from gaitgl_lightning.registration import Registered

EVAL_MODES = ("none", "fixed", "mean")

Count = Callable[[int], int]
Gen = torch.Generator
Device = torch.device
#: ``F``: the layer's shared local conv and its activation.
Branch = Callable[[torch.Tensor], torch.Tensor]
#: ``draw(n, H, W)`` -> ``Mp`` [pairs, m, 1, 1, H, W] (m in {1, n}); None: no pair this call.
Draw = Callable[[int, int, int], torch.Tensor]

#: name -> strategy; every name ``MaskStrategy`` accepts, in the order the paper lists them.
MASK_PATTERNS: dict[str, MaskPattern] = {}


class MaskPattern(Registered, registry=MASK_PATTERNS, kind="mask strategy"):
    """One mask strategy of the registry: which region of an [H, W] map a random pair drops.

    A subclass with a ``name`` registers itself in ``MASK_PATTERNS`` (as protocols and layouts
    do): adding a strategy is one subclass and one ``conf/mask/<name>.yaml`` (docs/extending.md).
    A random strategy says which region ``dropped`` drops and inherits Eq. 6; ``random = False``
    marks a strategy that draws nothing and computes its branch itself (``local_branch``).
    """

    random: ClassVar[bool] = True

    def local_branch(
        self, f: Branch, x: torch.Tensor, draw: Draw | None, parts: int, batched: bool
    ) -> torch.Tensor:
        """The layer's local branch on ``x`` [n, C, T, H, W].

        Eq. 6 for a random pair (the mean over pairs when ``draw`` gives several); ``F(X)``
        when no pair is drawn (eval_mode ``none``). ``parts``: the layer's part count (used by
        ``part_fixed``); ``batched``: run a pair as one conv over a doubled batch.
        """
        if draw is None:
            return f(x)
        mp = draw(x.shape[0], x.shape[3], x.shape[4]).to(x.dtype)
        return complementary_sum(f, x, mp, batched)

    def dropped(
        self, m: int, height: int, width: int, count: Count, generator: Gen, device: Device
    ) -> torch.Tensor:
        """Bool [m, H, W], True where ``Mp`` drops; ``count(size)`` is the dropped size."""
        raise RuntimeError(f"mask strategy {self.name!r} draws no random masks")


def _band(m: int, size: int, k: int, gen: Gen, device: Device) -> torch.Tensor:
    """Bool [m, size]: one contiguous run of ``k`` at a random start per row."""
    pos = torch.arange(size, device=device)
    start = torch.randint(0, size - k + 1, (m, 1), generator=gen, device=device)
    return (pos >= start) & (pos < start + k)


def _subset(m: int, size: int, k: int, gen: Gen, device: Device) -> torch.Tensor:
    """Bool [m, size]: a random subset of ``k`` positions per row."""
    idx = torch.rand((m, size), generator=gen, device=device).topk(k, dim=1).indices
    return torch.zeros((m, size), dtype=torch.bool, device=device).scatter_(1, idx, True)


class NoMask(MaskPattern):
    """``none``: the local conv sees the unmasked map, F(X) (isolates the effect of masking)."""

    name = "none"
    random = False

    def local_branch(
        self, f: Branch, x: torch.Tensor, draw: Draw | None, parts: int, batched: bool
    ) -> torch.Tensor:
        return f(x)


class LineMask(MaskPattern):
    """Whole rows (``axis = "h"``) or columns (``"v"``) of the map, ``floor(d * size)`` of them:
    one contiguous band at a random start (``band = True``) or a random subset. The four line
    strategies of Table 5 differ in these two settings only."""

    axis: ClassVar[str] = "h"
    band: ClassVar[bool] = True

    def dropped(
        self, m: int, height: int, width: int, count: Count, generator: Gen, device: Device
    ) -> torch.Tensor:
        size = height if self.axis == "h" else width
        lines = (_band if self.band else _subset)(m, size, count(size), generator, device)
        shaped = lines[:, :, None] if self.axis == "h" else lines[:, None, :]
        return shaped.expand(m, height, width)


class PartH(LineMask):
    """Table 5 'part-level H': one contiguous band of floor(d*H) rows."""

    name, axis, band = "part_h", "h", True


class PartV(LineMask):
    """Table 5 'part-level V': one contiguous band of floor(d*W) columns."""

    name, axis, band = "part_v", "v", True


class StripH(LineMask):
    """Table 5 'strip-level H': a random subset of floor(d*H) rows."""

    name, axis, band = "strip_h", "h", False


class StripV(LineMask):
    """Table 5 'strip-level V' (the paper's final choice): a random subset of floor(d*W) columns."""

    name, axis, band = "strip_v", "v", False


class Pixel(MaskPattern):
    """Table 5 'pixel-level': a random subset of floor(d*H*W) pixels."""

    name = "pixel"

    def dropped(
        self, m: int, height: int, width: int, count: Count, generator: Gen, device: Device
    ) -> torch.Tensor:
        return _subset(m, height * width, count(height * width), generator, device).view(
            m, height, width
        )


class PartFixed(MaskPattern):
    """Table 5 'part-level fixed' = Eq. 5: ``parts`` equal-height parts, no randomness (the
    conference model's local branch, and OpenGait's)."""

    name = "part_fixed"
    random = False

    def local_branch(
        self, f: Branch, x: torch.Tensor, draw: Draw | None, parts: int, batched: bool
    ) -> torch.Tensor:
        return partition_conv(f, x, parts)


def partition_conv(f: Branch, x: torch.Tensor, parts: int) -> torch.Tensor:
    """Eq. 5: split H into parts of ``H // parts`` rows, apply ``f`` to each part alone, concat.

    Why not a loop over parts: the parts are folded into the batch dimension so one conv call
    covers them all.  A short last chunk (H not divisible, as ``Tensor.split`` makes it) is
    padded with zero rows, which is exactly the conv's own zero padding for that chunk; the
    extra output rows are then dropped.
    """
    n, c, t, h, w = x.shape
    size = max(h // parts, 1)
    chunks = -(-h // size)
    pad = chunks * size - h
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    y = x.view(n, c, t, chunks, size, w).permute(0, 3, 1, 2, 4, 5)
    y = f(y.reshape(n * chunks, c, t, size, w))
    co = y.shape[1]
    y = y.view(n, chunks, co, t, size, w).permute(0, 2, 3, 1, 4, 5).reshape(n, co, t, -1, w)
    return y[..., :h, :] if pad else y


def complementary_sum(f: Branch, x: torch.Tensor, mp: torch.Tensor, batched: bool) -> torch.Tensor:
    """Eq. 6, ``F(X * Mp) + F(X * Mq)`` with ``Mq = 1 - Mp``, averaged over the pairs of ``mp``
    [pairs, m, 1, 1, H, W].

    ``batched`` (GPU): every pair's Mp and Mq in one batch [2*pairs*n, C, T, H, W] for ONE conv
    call (fewer, larger kernels). Otherwise (CPU) separate conv calls, which avoid copying the
    input into a doubled batch: measured 10-20% faster fwd+bwd on a 2-core CPU.
    """
    pairs = mp.shape[0]
    if not batched:
        out: torch.Tensor | None = None
        for k in range(pairs):
            for m in (mp[k], 1 - mp[k]):
                z = f(x * m)
                out = z if out is None else out + z
        assert out is not None
        return out / pairs if pairs > 1 else out
    n = x.shape[0]
    xs = x.unsqueeze(0)
    both = torch.cat([xs * mp, xs * (1 - mp)], dim=0).flatten(0, 1)
    y = f(both)
    y = y.view(2 * pairs, n, *y.shape[1:])
    return y.sum(0) / pairs


def mask_names() -> tuple[str, ...]:
    """Every registered strategy name."""
    return tuple(MASK_PATTERNS)


#: Kept for callers that list the names; the registry is the source.
STRATEGIES = mask_names()


class MaskStrategy:
    """How the mask-based local branch occludes its input (one object per model).

    Why a plain object and not a module: it holds no weights, only a recipe; the model owns the
    random stream (seed + draw counter) so that a state_dict restores it.

    Args:
        strategy: a name of ``MASK_PATTERNS`` (the classes above say what each drops); an
            unknown name is an error.
        ratio: the dropping ratio d in (0, 1).  The dropped size is ``floor(d * size)`` clamped
            to ``[1, size - 1]`` so that both masks of a pair are never empty.
        per_sample: draw one pair per sample (True) or one pair for the whole batch (False).
        eval_mode: what mask-based layers do in eval mode: ``none`` (one conv on the unmasked
            map, ``F(X)``), ``fixed`` (one pair drawn from a fixed seed) or ``mean`` (mean of
            ``F(X*Mp) + F(X*Mq)`` over ``eval_pairs`` pairs from a fixed seed).
        eval_pairs: number of pairs for ``eval_mode="mean"``.
        parts: number of parts for ``part_fixed`` (a stage's ``parts`` overrides it for the
            layers of that stage, e.g. OpenGait's 2-part deep net).
    """

    def __init__(
        self,
        strategy: str = "strip_v",
        ratio: float = 0.25,
        per_sample: bool = True,
        eval_mode: str = "none",
        eval_pairs: int = 4,
        parts: int = 8,
    ) -> None:
        if strategy not in MASK_PATTERNS:
            raise ValueError(
                f"mask strategy {strategy!r} unknown; choose one of {mask_names()} "
                "(or register one: docs/extending.md)"
            )
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"mask eval_mode {eval_mode!r} unknown; choose one of {EVAL_MODES}")
        if not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
        if int(eval_pairs) < 1 or int(parts) < 1:
            raise ValueError("mask eval_pairs and parts must be >= 1")
        self.strategy = strategy
        self.pattern = MASK_PATTERNS[strategy]
        self.ratio = float(ratio)
        self.per_sample = bool(per_sample)
        self.eval_mode = eval_mode
        self.eval_pairs = int(eval_pairs)
        self.parts = int(parts)

    def __repr__(self) -> str:
        return (
            f"MaskStrategy(strategy={self.strategy!r}, ratio={self.ratio}, "
            f"per_sample={self.per_sample}, eval_mode={self.eval_mode!r}, "
            f"eval_pairs={self.eval_pairs}, parts={self.parts})"
        )

    @property
    def random(self) -> bool:
        """True when the strategy draws random complementary pairs."""
        return self.pattern.random

    def local_branch(
        self,
        f: Branch,
        x: torch.Tensor,
        draw: Draw | None,
        parts: int | None = None,
        batched: bool = False,
    ) -> torch.Tensor:
        """The local branch of a mask-based layer, as this strategy computes it (the layer
        passes its ``F``, the masks drawn for this call, and its own part count if it has one)."""
        return self.pattern.local_branch(f, x, draw, parts or self.parts, batched)

    def dropped_count(self, size: int) -> int:
        """Number of dropped rows / columns / pixels out of ``size`` (the paper's floor(d*size))."""
        return min(max(math.floor(self.ratio * size + 1e-9), 1), max(size - 1, 1))

    def draw(
        self, n: int, height: int, width: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """Return ``Mp`` as a float tensor [m, 1, 1, H, W] (m = n per sample, else 1).

        ``Mq`` is ``1 - Mp``.  Everything happens on ``device`` in a few vectorised ops.
        """
        if not self.random:
            raise RuntimeError(f"mask strategy {self.strategy!r} draws no random masks")
        m = n if self.per_sample else 1
        drop = self.pattern.dropped(m, height, width, self.dropped_count, generator, device)
        return drop.to(torch.float32)[:, None, None]

    # ------------------------------------------------------------------ signature
    def signature(self, sizes: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """What these masks are on maps of ``sizes`` (one (H, W) per masked layer, in order).

        Why: two settings can give the same masks (on a 16-column map ``ratio`` 0.25 and 0.3
        both drop floor(d * 16) = 4 columns); the ablation report groups runs by this and
        flags such arms instead of plotting them as two points. It is read off a drawn pair
        (rows, columns and pixels it drops), not computed from the setting's text, so that a
        registered strategy of one's own is described by what it does.
        """
        layers = [self._layer_signature(int(h), int(w)) for h, w in sizes]
        evaluation = self.eval_mode
        if self.random and self.eval_mode == "mean":
            evaluation = f"mean of {self.eval_pairs} pairs"
        elif not self.random:
            evaluation = "as training"
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "per_sample": self.per_sample if self.random else None,
            "eval": evaluation,
            "layers": layers,
        }
        out["text"] = _signature_text(out)
        return out

    def _layer_signature(self, height: int, width: int) -> dict[str, Any]:
        layer: dict[str, Any] = {"size": [height, width]}
        if self.strategy == "part_fixed":
            layer["parts"] = -(-height // max(height // self.parts, 1))
            return layer
        if not self.random:
            layer["dropped_pixels"] = 0
            return layer
        gen = torch.Generator().manual_seed(0)
        drop = self.pattern.dropped(1, height, width, self.dropped_count, gen, torch.device("cpu"))
        drop = drop[0]
        layer["dropped_pixels"] = int(drop.sum())
        layer["dropped_rows"] = int(drop.all(dim=1).sum())
        layer["dropped_cols"] = int(drop.all(dim=0).sum())
        return layer


def _signature_text(sig: dict[str, Any]) -> str:
    """One line for tables: ``strip_v: 32x22 -5 cols, 16x11 -2 cols; per sample; eval none``."""
    parts = []
    for layer in sig["layers"]:
        h, w = layer["size"]
        if "parts" in layer:
            what = f"{layer['parts']} parts"
        elif layer["dropped_pixels"] == 0:
            what = "unmasked"
        elif layer["dropped_cols"] and layer["dropped_pixels"] == layer["dropped_cols"] * h:
            what = f"-{layer['dropped_cols']} cols"
        elif layer["dropped_rows"] and layer["dropped_pixels"] == layer["dropped_rows"] * w:
            what = f"-{layer['dropped_rows']} rows"
        else:
            what = f"-{layer['dropped_pixels']} px"
        parts.append(f"{h}x{w} {what}")
    if not parts:
        return "no masked layer"
    text = f"{sig['strategy']}: {', '.join(parts)}"
    if sig["per_sample"] is not None:
        text += "; per sample" if sig["per_sample"] else "; per batch"
    return f"{text}; eval {sig['eval']}"
