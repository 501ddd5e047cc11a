"""The GaitGL network assembled from a list of stages given as data (paper Sec. 3, Fig. 2).

Every reading of the paper (journal 3-stage / 4-stage, OpenGait's conference nets) is a list of
``stages``; the ablation rows of Tables 5-7 are one model key each over it (``local``,
``global_branch``, ``pools``, ``pooling``) and the mask group. See docs/model.md for the format.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .heads import BNHead, BNNeckHead
from .layers import (
    GLCL,
    LTA,
    PARTITION_GONE,
    ConvBlock,
    GeM,
    RowPool,
    SeparateFCs,
    apply_time_mask,
    spatial_pool,
    temporal_max,
    time_mask,
)
from .masks import MaskStrategy

_MASK64 = (1 << 64) - 1
EVAL_MASK_SEED = 0x5EED  # eval-time masks (eval_mode fixed/mean) are the same on every rank/run


def _mix(*values: int) -> int:
    """splitmix64 over a tuple of ints -> a 63-bit seed (why: nearby (seed, step, layer)
    tuples must give unrelated generator streams)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def _xavier_uniform(weight: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A xavier_uniform draw of ``weight``'s shape from ``gen``, on the CPU (so that a seed
    gives the same weights whatever device the model is built on)."""
    out = torch.empty(weight.shape, dtype=weight.dtype)
    return nn.init.xavier_uniform_(out, generator=gen)


def _hooked(module: nn.Module) -> bool:
    """True when forward hooks would see the module's output (a caller tracing layer outputs
    gets the stacked map, as without the halves fast path)."""
    from torch.nn.modules import module as mod

    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or mod._global_forward_hooks
        or mod._global_forward_pre_hooks
    )


def silhouettes_to_input(sils: torch.Tensor) -> torch.Tensor:
    """uint8 silhouettes [n, T, H, W] (0..255) -> the network's float input [n, 1, T, H, W] in
    [0, 1], on their device; a float tensor is taken as already scaled.

    Why one function here: the scaling is the network's input contract, and every caller
    (training, evaluation, extraction, the analysis helpers) must scale the same way; the
    loaders keep uint8 (four times less to copy) and the scaling happens on the device.
    """
    if sils.dtype == torch.uint8:
        return sils.unsqueeze(1).float().div_(255.0)
    return sils.unsqueeze(1).float()


class GaitGLOutput(NamedTuple):
    """Network output: ``embeddings`` [n, C, parts] and ``logits`` [n, classes, parts]."""

    embeddings: torch.Tensor
    logits: torch.Tensor


@dataclass(frozen=True)
class StageSpec:
    """One stage of the network, as read from the model config.

    kind: ``glcl`` (GLCL layers) or ``conv`` (plain conv + LeakyReLU, e.g. a stem).
    channels: output channels of every layer of the stage.  layers: number of layers.
    local: ``mask`` (a local branch computed by the model's mask strategy: Eq. 6, or Eq. 5
    for ``part_fixed``) or ``none`` (global only).  parts: the stage's part count for
    ``part_fixed`` (None: the strategy's ``parts``).  global_branch: False for "local only".
    last: output type of the stage's last layer (``A`` add / ``B`` concat along H; the other
    layers are A).  pool: ``lta`` / ``sp`` / ``none`` after the stage.
    ``channels``, ``local``, ``global_branch`` and ``pool`` default to the model's settings
    (``GaitGL``'s ``channels``, ``local``, ``global_branch``, ``pools``); a stage's own key wins.
    """

    channels: int
    layers: int = 1
    kind: str = "glcl"
    local: str = "mask"
    parts: int | None = None
    global_branch: bool = True
    last: str = "A"
    pool: str = "none"
    lta_kernel: int = 3
    lta_stride: int = 3

    @classmethod
    def parse(
        cls,
        raw: Mapping[str, Any] | StageSpec,
        index: int,
        defaults: Mapping[str, Any] | None = None,
    ) -> StageSpec:
        """Build from a config mapping over the model's ``defaults``, naming the stage and the
        bad key on error."""
        if isinstance(raw, StageSpec):
            return raw
        if not isinstance(raw, Mapping):
            raise TypeError(f"model stages[{index}] must be a mapping, got {type(raw).__name__}")
        own = {str(k): v for k, v in raw.items()}
        if "global" in own:
            own["global_branch"] = own.pop("global")
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(own) - allowed)
        if unknown:
            raise ValueError(
                f"model stages[{index}]: unknown keys {unknown}; allowed {sorted(allowed)}"
            )
        if own.get("local") == "partition":
            raise ValueError(f"model stages[{index}]: {PARTITION_GONE}")
        data = {**(defaults or {}), **own}
        if data.get("channels") is None:
            raise ValueError(f"model stages[{index}]: 'channels' is required")
        spec = cls(**data)
        checks = [
            (spec.kind in ("glcl", "conv"), "kind must be glcl or conv"),
            (spec.local in ("mask", "none"), "local must be mask or none"),
            (spec.last in ("A", "B"), "last must be A or B"),
            (spec.pool in ("lta", "sp", "none"), "pool must be lta/sp/none"),
            (int(spec.channels) > 0 and int(spec.layers) > 0, "channels and layers must be > 0"),
            (spec.parts is None or int(spec.parts) > 0, "parts must be > 0"),
            (
                spec.kind == "conv" or spec.global_branch or spec.local != "none",
                "no branch left (global_branch false and local none)",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"model stages[{index}]: {msg} (got {dict(data)!r})")
        return spec


def stage_specs(
    stages: Sequence[Mapping[str, Any] | StageSpec],
    channels: Sequence[int] | None,
    pools: Sequence[str],
    local: str,
    global_branch: bool,
) -> list[StageSpec]:
    """The stages with the model-level settings filled in where a stage does not state its own:
    ``channels[i]`` and ``pools[i]`` for stage i (stages past the end of ``pools`` pool with
    nothing), ``local`` and ``global_branch`` for every stage."""
    if local == "partition":
        raise ValueError(f"model local: {PARTITION_GONE}")
    if local not in ("mask", "none"):
        raise ValueError(f"model local must be mask or none, got {local!r}")
    if len(pools) > len(stages):
        raise ValueError(f"model pools lists {len(pools)} poolings for {len(stages)} stages")
    if channels is not None and len(channels) != len(stages):
        raise ValueError(f"model channels lists {len(channels)} widths for {len(stages)} stages")
    specs = []
    for i, raw in enumerate(stages):
        defaults: dict[str, Any] = {"local": local, "global_branch": bool(global_branch)}
        if i < len(pools):
            defaults["pool"] = str(pools[i])
        if channels is not None:
            defaults["channels"] = int(channels[i])
        specs.append(StageSpec.parse(raw, i, defaults))
    return specs


class GaitGL(nn.Module):
    """GaitGL: stages of GLCL layers with LTA / SP pooling, temporal max, row pooling, head.

    Args:
        num_classes: classifier width (0 for no classifier; logits are then an empty tensor).
        stages: list of stage mappings (see ``StageSpec``).
        mask: the mask strategy of ``local: mask`` layers (a ``MaskStrategy`` or its kwargs).
        channels: the width of each stage, for stages that do not state their own (why: a size
            variant of a layout is then one key, not a copy of its stage list).
        pools: the pooling after each stage (``lta`` / ``sp`` / ``none``), in order; stages past
            its end do not pool. ``[lta, sp]`` is Table 7's "1st = LTA, 2nd = SP".
        local: ``mask`` (GLCL layers have a local branch) or ``none`` (Table 5 "global only").
        global_branch: False for Table 5 "local only".  A stage's own ``pool`` / ``local`` /
            ``global`` wins over these three.
        input_size: (H, W) of the silhouettes; fixes the number of parts of the head.
        pooling: row pooling over W: ``gem`` (Eq. 9-10), ``max``, ``avg``, ``max_avg``.
        head: ``bn`` (FC, BN shared over parts, per-part classifier) or ``bnneck``.
        embed_dim: width of the per-part FC (default: last stage's channels).
        gem_p: initial GeM p.  in_channels: input channels (1 for silhouettes).
        lta_spatial: spatial extent of every LTA kernel: 3 (default) gives Eq. 1's a x a x a,
            1 gives (a, 1, 1) as the conference code (the OpenGait configs set 1); see
            docs/model.md for the measurement behind the choice.
        compile: run the training forward through ``torch.compile`` (off by default: measured
            on 2 CPU cores, opengait_gaitgl's train step compiled in ~37 s and then ran at
            1.0x the eager step, since the convolutions dominate and stay oneDNN calls).
    """

    def __init__(
        self,
        num_classes: int,
        stages: Sequence[Mapping[str, Any] | StageSpec],
        mask: MaskStrategy | Mapping[str, Any] | None = None,
        channels: Sequence[int] | None = None,
        pools: Sequence[str] = (),
        local: str = "mask",
        global_branch: bool = True,
        input_size: Sequence[int] = (64, 44),
        pooling: str = "gem",
        head: str = "bn",
        embed_dim: int | None = None,
        gem_p: float = 6.5,
        in_channels: int = 1,
        lta_spatial: int = 3,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if int(num_classes) < 0:
            raise ValueError(f"GaitGL num_classes must be >= 0, got {num_classes}")
        if not stages:
            raise ValueError("GaitGL needs at least one stage")
        if mask is None:
            mask = MaskStrategy()
        elif isinstance(mask, Mapping):
            mask = MaskStrategy(**{str(k): v for k, v in mask.items() if k != "_target_"})
        if not isinstance(mask, MaskStrategy):
            raise TypeError(f"GaitGL mask must be a MaskStrategy, got {type(mask).__name__}")
        self.mask_strategy = mask
        self.num_classes = int(num_classes)
        self.specs = stage_specs(stages, channels, pools, local, global_branch)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_channels = int(in_channels)
        self._mask_seed = 0
        # How a padded batch is evaluated (no autograd): None = by device (on CPU as groups of
        # equal length, without padding; elsewhere padded); True / False force one form.
        self.eval_unpadded: bool | None = None
        self.compile_training = bool(compile)
        self._compiled: Callable[..., GaitGLOutput] | None = None
        self.mask_draws: torch.Tensor
        self.register_buffer("mask_draws", torch.zeros((), dtype=torch.int64))

        blocks: list[nn.Module] = []
        ltas: dict[int, LTA] = {}
        c, h, w = int(in_channels), self.input_size[0], self.input_size[1]
        for si, spec in enumerate(self.specs):
            layers: list[nn.Module] = []
            for li in range(spec.layers):
                out_type = spec.last if li == spec.layers - 1 else "A"
                if spec.kind == "conv":
                    layers.append(ConvBlock(c, spec.channels))
                else:
                    layer = GLCL(
                        c, spec.channels, spec.local, spec.parts, out_type, spec.global_branch
                    )
                    layers.append(layer)
                    if layer.doubles_height:
                        h *= 2
                c = spec.channels
            blocks.append(nn.ModuleList(layers))
            if spec.pool == "lta":
                ltas[si] = LTA(c, spec.lta_kernel, spec.lta_stride, lta_spatial)
            elif spec.pool == "sp":
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"model stages[{si}]: input_size {input_size} pools to nothing")
        self.stages = nn.ModuleList(blocks)
        # The last layer stacks global over local along H and nothing follows it but temporal
        # max and row pooling (both per row): pool the two halves apart (see GLCL.halves).
        last = list(blocks[-1].children())[-1]
        self.pool_halves = (
            isinstance(last, GLCL) and last.doubles_height and self.specs[-1].pool == "none"
        )
        self.ltas = nn.ModuleDict({str(k): v for k, v in ltas.items()})
        self.parts = h
        self.out_channels = c
        self.min_frames = self._min_frames()

        if pooling == "gem":
            self.pool: nn.Module = GeM(p=gem_p)
        else:
            self.pool = RowPool(pooling)
        dim = int(embed_dim) if embed_dim else c
        if head == "bn":
            self.head: nn.Module = BNHead(self.parts, c, dim, self.num_classes)
        elif head == "bnneck":
            self.head = BNNeckHead(self.parts, c, dim, self.num_classes)
        else:
            raise ValueError(f"GaitGL head must be 'bn' or 'bnneck', got {head!r}")
        self.reset_parameters()

    # ------------------------------------------------------------------ set-up helpers
    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Reference-code init: xavier_uniform convs and per-part FCs, BN weight N(1, 0.02), bias 0.

        Each layer draws from its own generator seeded by ``(seed, its name)`` (``seed`` defaults
        to ``torch.initial_seed()``, which ``seed_everything`` sets). Why: two networks built
        with one seed then start a layer they both have (same name, same shape) from the same
        weights, whatever other layers either has; drawn in turn from one global stream, every
        layer after the first extra one shifted (measured: global only and GLCL shared 97 of
        76,593 common initial values), and the arms of an ablation seed were not paired there.
        """
        base = torch.initial_seed() if seed is None else int(seed)
        for name, m in self.named_modules():
            if not isinstance(m, (nn.Conv3d, SeparateFCs, nn.BatchNorm1d)):
                continue
            gen = torch.Generator().manual_seed(_mix(base, zlib.crc32(name.encode())))
            if isinstance(m, nn.Conv3d):
                m.weight.copy_(_xavier_uniform(m.weight, gen))
            elif isinstance(m, SeparateFCs):
                m.fc_bin.copy_(_xavier_uniform(m.fc_bin, gen))
            else:
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02 + 1.0)
                m.bias.zero_()

    def _min_frames(self) -> int:
        """Fewest input frames for which every LTA still outputs >= 1 frame."""
        need = 1
        for si in reversed(range(len(self.specs))):
            if str(si) in self.ltas:
                lta = self.ltas[str(si)]
                assert isinstance(lta, LTA)
                need = (need - 1) * lta.stride + lta.kernel
        return need

    def set_mask_seed(self, seed: int) -> None:
        """Seed the training mask stream (the Lightning module passes ``seed + rank``).

        Masks of draw ``k`` in mask layer ``l`` come from a generator seeded with
        ``mix(seed, k, l)``; ``k`` is the registered buffer ``mask_draws``, so a state_dict
        restores the exact stream on resume.
        """
        self._mask_seed = int(seed)

    @property
    def mask_seed(self) -> int:
        """The current mask seed."""
        return self._mask_seed

    def mask_signature(self) -> dict[str, Any]:
        """The effective masks of this network: per masked layer its map size and what a pair
        drops (``MaskStrategy.signature``); ``layers`` is empty without a masked layer."""
        return self.mask_strategy.signature(self.masked_map_sizes())

    def masked_map_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of the input of every ``local: mask`` layer, in forward order.

        Traced with one no-grad eval forward of a zero clip of ``min_frames`` frames (why: the
        sizes then come from the layers as built, whatever the stages, pools and type-B
        stacking do); eval mode draws nothing and moves no mask counter, so training is
        unaffected.
        """
        sizes: list[tuple[int, int]] = []

        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            sizes.append((int(args[0].shape[3]), int(args[0].shape[4])))

        layers = [m for m in self.modules() if isinstance(m, GLCL) and m.local == "mask"]
        hooks = [m.register_forward_pre_hook(record) for m in layers]
        was_training = self.training
        param = next(self.parameters())
        x = torch.zeros(
            (1, self.in_channels, self.min_frames, *self.input_size),
            device=param.device,
            dtype=param.dtype,
        )
        try:
            self.eval()
            with torch.no_grad():
                self._forward(x, None)
        finally:
            for hook in hooks:
                hook.remove()
            self.train(was_training)
        return sizes

    # ------------------------------------------------------------------ forward helpers
    def _mask_drawer(
        self, device: torch.device, layer_index: int, draw_index: int
    ) -> Callable[[int, int, int], torch.Tensor] | None:
        strategy = self.mask_strategy
        if not strategy.random:
            return None
        if self.training:
            seed, pairs = _mix(self._mask_seed, draw_index, layer_index), 1
        elif strategy.eval_mode == "none":
            return None
        else:
            pairs = 1 if strategy.eval_mode == "fixed" else strategy.eval_pairs
            seed = _mix(EVAL_MASK_SEED, layer_index)
        training = self.training

        def draw(n: int, height: int, width: int) -> torch.Tensor:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed)
            # At eval one pair (or set of pairs) serves every sample, so that an embedding does
            # not depend on the batch it was computed in.
            m = n if training else 1
            return torch.stack([strategy.draw(m, height, width, gen, device) for _ in range(pairs)])

        return draw

    def _repeat_short(
        self, x: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tile clips shorter than ``min_frames`` (OpenGait repeats 1 frame x3, 2 frames x2).

        Per sequence ``r = ceil(min_frames / L)`` copies, so a padded batch gives each short
        sequence exactly what it would get alone.
        """
        need = self.min_frames
        t = x.shape[2]
        if lengths is None:
            if t >= need:
                return x, None
            return x.repeat(1, 1, math.ceil(need / t), 1, 1), None
        if bool((lengths >= need).all()):
            return x, lengths
        reps = torch.div(need + lengths - 1, lengths, rounding_mode="floor").clamp(min=1)
        new = lengths * reps
        tn = max(t, int(new.max()))
        pos = torch.arange(tn, device=x.device)
        idx = pos[None, :] % lengths[:, None]
        n, c, _, h, w = x.shape
        x = x.gather(2, idx[:, None, :, None, None].expand(n, c, tn, h, w))
        return apply_time_mask(x, time_mask(new, tn)), new

    def _check_input(self, x: torch.Tensor, lengths: torch.Tensor | None) -> None:
        if x.dim() != 5:
            raise ValueError(f"GaitGL expects x of shape [n, 1, T, H, W], got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels or not x.is_floating_point():
            raise ValueError(
                f"GaitGL expects float x with {self.in_channels} channel(s), got {x.dtype} "
                f"with {x.shape[1]} (silhouettes: models.silhouettes_to_input(sils))"
            )
        if tuple(x.shape[3:]) != self.input_size:
            raise ValueError(
                f"GaitGL was built for input_size {self.input_size}, got frames of "
                f"{tuple(x.shape[3:])}; set the model's input_size"
            )
        if lengths is not None:
            if lengths.shape != (x.shape[0],):
                raise ValueError(
                    f"lengths must have shape [{x.shape[0]}], got {tuple(lengths.shape)}"
                )
            if bool((lengths < 1).any()) or bool((lengths > x.shape[2]).any()):
                raise ValueError(f"lengths must lie in [1, T={x.shape[2]}], got {lengths.tolist()}")

    def _forward_by_length(self, x: torch.Tensor, lengths: torch.Tensor) -> GaitGLOutput:
        """Evaluate a padded batch as groups of equal length, each without its padding.

        Why on CPU: a padded frame costs as much as a real one there, and a larger batch buys
        no convolution speed (measured: 4 single-sequence Conv3d calls vs one batch of 4,
        0.99-1.09x for the GLCL layers on 2 cores), so padding is pure loss. Each group is
        exactly the one-at-a-time computation of its sequences (eval masks, if any, are fixed
        per layer and do not depend on the batch).
        """
        embs: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        order: list[torch.Tensor] = []
        for length in torch.unique(lengths).tolist():
            idx = (lengths == length).nonzero().flatten()
            out = self._forward(x[idx, :, : int(length)], None)
            embs.append(out.embeddings)
            logits.append(out.logits)
            order.append(idx)
        inverse = torch.argsort(torch.cat(order))
        return GaitGLOutput(torch.cat(embs)[inverse], torch.cat(logits)[inverse])

    # ------------------------------------------------------------------ forward
    def __getstate__(self) -> dict[str, Any]:
        """Pickle / deepcopy without the compiled forward (it is rebuilt on first use)."""
        state = self.__dict__.copy()
        state["_compiled"] = None
        return state

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> GaitGLOutput:
        """[n, 1, T, H, W] (+ optional int64 lengths [n]) -> GaitGLOutput."""
        if self.compile_training and self.training and torch.is_grad_enabled():
            if self._compiled is None:
                self._compiled = torch.compile(self._forward)
            return self._compiled(x, lengths)
        return self._forward(x, lengths)

    def _forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> GaitGLOutput:
        self._check_input(x, lengths)
        if lengths is not None:
            lengths = lengths.to(device=x.device, dtype=torch.int64)
            if bool((lengths == x.shape[2]).all()):
                lengths = None  # every frame valid: skip the masking work
        if lengths is not None and not self.training and not torch.is_grad_enabled():
            unpadded = self.eval_unpadded
            if unpadded if unpadded is not None else x.device.type == "cpu":
                return self._forward_by_length(x, lengths)
        x, lengths = self._repeat_short(x, lengths)
        valid = time_mask(lengths, x.shape[2]) if lengths is not None else None
        x = apply_time_mask(x, valid)  # whatever the padding holds, it reads as zeros
        draw_index = int(self.mask_draws) if self.training else 0
        mask_layer = 0
        halves: tuple[torch.Tensor, torch.Tensor] | None = None
        last_layer = self.stages[-1][-1]  # type: ignore[index]
        for si, (spec, block) in enumerate(zip(self.specs, self.stages, strict=True)):
            assert isinstance(block, nn.ModuleList)
            for layer in block:
                if isinstance(layer, GLCL):
                    draw = None
                    if layer.local == "mask":
                        draw = self._mask_drawer(x.device, mask_layer, draw_index)
                        mask_layer += 1
                    strategy = self.mask_strategy if layer.local == "mask" else None
                    if self.pool_halves and layer is last_layer and not _hooked(layer):
                        halves = layer.halves(x, valid, strategy, draw)
                    else:
                        x = layer(x, valid, strategy, draw)
                else:
                    x = layer(x, valid)
            if spec.pool == "lta":
                x, lengths, valid = self.ltas[str(si)](x, lengths)
            elif spec.pool == "sp":
                x = spatial_pool(x)
        if self.training and mask_layer and self.mask_strategy.random:
            with torch.no_grad():
                self.mask_draws += 1
        if halves is not None:  # stacked along H after the (per-row) temporal max
            pooled = torch.cat([temporal_max(h, valid) for h in halves], dim=2)
        else:
            pooled = temporal_max(x, valid)
        feat = self.pool(pooled)  # [n, C, parts]
        emb, logits = self.head(feat)
        if logits is None:
            logits = emb.new_zeros((emb.shape[0], 0, emb.shape[2]))
        return GaitGLOutput(emb, logits)
