"""Complementary mask pairs for the mask-based local branch (paper Sec. 3.3.2, Table 5).

A pair ``(Mp, Mq)`` satisfies ``Mp + Mq == 1``: the *dropped* region is 1 in ``Mp`` and 0 in
``Mq``.  The local branch computes ``F(X * Mp) + F(X * Mq)`` with one shared, non-linear ``F``.
Masks are built on the input's device in one vectorised op from a ``torch.Generator`` so that
a seed reproduces them exactly (see ``GaitGL.set_mask_seed``).
"""

from __future__ import annotations

import math

import torch

STRATEGIES = ("none", "part_h", "part_v", "strip_h", "strip_v", "pixel", "part_fixed")
EVAL_MODES = ("none", "fixed", "mean")


class MaskStrategy:
    """How the mask-based local branch occludes its input (one object per model).

    Why a plain object and not a module: it holds no weights, only a recipe; the model owns the
    random stream (seed + draw counter) so that a state_dict restores it.

    Args:
        strategy: one of ``none`` (local conv on the unmasked map), ``part_h``, ``part_v``
            (one contiguous band of ``floor(d*H)`` rows / ``floor(d*W)`` columns), ``strip_h``,
            ``strip_v`` (a random subset of ``floor(d*H)`` rows / ``floor(d*W)`` columns),
            ``pixel`` (a random subset of ``floor(d*H*W)`` pixels), ``part_fixed`` (the Eq. 5
            partition into ``parts`` equal-height parts, no randomness).
        ratio: the dropping ratio d in (0, 1).  The dropped size is ``floor(d * size)`` clamped
            to ``[1, size - 1]`` so that both masks of a pair are never empty.
        per_sample: draw one pair per sample (True) or one pair for the whole batch (False).
        eval_mode: what mask-based layers do in eval mode: ``none`` (one conv on the unmasked
            map, ``F(X)``), ``fixed`` (one pair drawn from a fixed seed) or ``mean`` (mean of
            ``F(X*Mp) + F(X*Mq)`` over ``eval_pairs`` pairs from a fixed seed).
        eval_pairs: number of pairs for ``eval_mode="mean"``.
        parts: number of parts for ``part_fixed``.
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
        if strategy not in STRATEGIES:
            raise ValueError(f"mask strategy {strategy!r} unknown; choose one of {STRATEGIES}")
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"mask eval_mode {eval_mode!r} unknown; choose one of {EVAL_MODES}")
        if not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
        if int(eval_pairs) < 1 or int(parts) < 1:
            raise ValueError("mask eval_pairs and parts must be >= 1")
        self.strategy = strategy
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
        return self.strategy not in ("none", "part_fixed")

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
        s = self.strategy
        if s in ("part_h", "strip_h"):
            size = height
        elif s in ("part_v", "strip_v"):
            size = width
        else:
            size = height * width
        k = self.dropped_count(size)
        pos = torch.arange(size, device=device)
        if s.startswith("part"):
            start = torch.randint(0, size - k + 1, (m, 1), generator=generator, device=device)
            drop = (pos >= start) & (pos < start + k)
        else:
            scores = torch.rand((m, size), generator=generator, device=device)
            idx = scores.topk(k, dim=1).indices
            drop = torch.zeros((m, size), dtype=torch.bool, device=device)
            drop.scatter_(1, idx, True)
        if s.endswith("_h"):
            mp = drop[:, :, None].expand(m, height, width)
        elif s.endswith("_v"):
            mp = drop[:, None, :].expand(m, height, width)
        else:
            mp = drop.view(m, height, width)
        return mp.to(torch.float32)[:, None, None]
