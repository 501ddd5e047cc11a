"""Probe x gallery distances, computed in chunks of probes on the embeddings' device.

Why chunks: an OU-MVLP or GREW test set has tens of thousands of probes and gallery sequences;
the full probe x gallery matrix (and worse, the per-part tensor OpenGait builds) does not fit in
memory. Every protocol therefore walks the probes ``chunk_size`` rows at a time and only ever
holds a ``[chunk_size, gallery]`` block, so peak memory is set by the chunk, not by the data set.

Three distances are offered because the two public reference codes differ and the difference
moves reported rank-1 (see ``docs/evaluation.md``):

- ``euc_parts``: for every horizontal part, the Euclidean distance of the ``C``-dim part vectors;
  then the mean over parts (the field's framework, ``metric: euc``).
- ``euc_flat``: the Euclidean distance of the flattened ``C * p`` vectors (the authors' early code).
- ``cos``: one minus the mean over parts of the per-part cosine similarity.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

DISTANCES: tuple[str, ...] = ("euc_parts", "euc_flat", "cos")
DEFAULT_CHUNK_SIZE = 1024
_BUILD_ROWS = 4096  # gallery rows converted at a time when preparing a flat gallery
# Elements of the [n, columns] block that euc_parts works on per gallery tile (16 MiB float32;
# measured on a shared 2-core CPU, 512 probes x 8192 gallery x 128 x 64: 1.5x the former per-part
# mm + 5 passes; 1 MiB tiles were slower: a GEMM on a strided gallery slice loses more than the
# cache gains).
_TILE_ELEMS = 1 << 22


def check_distance(name: str) -> str:
    """Validate a distance name early, so a typo fails before any work is done."""
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; choose one of {', '.join(DISTANCES)}")
    return name


def as_parts(embeddings: Tensor, what: str = "embeddings") -> Tensor:
    """Return embeddings as ``[N, C, p]`` (a ``[N, D]`` input is one part of ``D`` channels).

    Protocols accept plain ``[N, D]`` feature matrices too so that users' own models can be
    evaluated without faking a part axis.
    """
    if not isinstance(embeddings, Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() == 2:
        return embeddings.unsqueeze(-1)
    if embeddings.dim() != 3:
        raise ValueError(
            f"{what}: expected shape [N, C, p] or [N, D], got {tuple(embeddings.shape)}"
        )
    if not torch.is_floating_point(embeddings):
        raise ValueError(f"{what}: expected a floating-point tensor, got {embeddings.dtype}")
    return embeddings


def _part_major(x: Tensor) -> Tensor:
    """``[n, C, p]`` -> ``[p, n, C]`` in float32 (half precision loses ties and small gaps)."""
    return x.permute(2, 0, 1).float()


class GalleryCache:
    """Gallery tensors prepared once (transposed, norms, normalised) for every probe chunk.

    Why: the gallery is reused by every probe chunk; preparing it per chunk would repeat work
    proportional to the gallery for each chunk.
    """

    def __init__(self, gallery: Tensor, distance: str, rows: Tensor | None = None) -> None:
        self.distance = check_distance(distance)
        gallery = as_parts(gallery, "gallery")
        if rows is not None:
            rows = rows.to(gallery.device)
        self.size = gallery.shape[0] if rows is None else rows.shape[0]
        self.device = gallery.device
        num, chans, parts = self.size, gallery.shape[1], gallery.shape[2]
        self.parts, self.chans = parts, chans
        # Built one part at a time: a whole-gallery float32 copy per step would multiply the
        # peak memory of a large gallery several times over.
        if distance == "euc_flat":
            self.mat = torch.empty(chans * parts, num, dtype=torch.float32, device=self.device)
            self.sq = torch.zeros(num, dtype=torch.float32, device=self.device)
            for start in range(0, num, _BUILD_ROWS):
                block = (
                    gallery[start : start + _BUILD_ROWS]
                    if rows is None
                    else gallery[rows[start : start + _BUILD_ROWS]]
                )
                flat = block.reshape(block.shape[0], -1).float()
                self.mat[:, start : start + block.shape[0]] = flat.t()
                self.sq[start : start + block.shape[0]] = (flat * flat).sum(1)
            return
        if distance == "cos":
            self.mat = torch.empty(parts, chans, num, dtype=torch.float32, device=self.device)
            for k in range(parts):
                col = gallery[:, :, k] if rows is None else gallery[rows, :, k]
                self.mat[k] = torch.nn.functional.normalize(col.float(), p=2, dim=1).t()
            return
        # euc_parts: per part the augmented [C + 2, G] matrix (-2 y, |y|^2, 1), so that ONE
        # GEMM with the probe's (x, 1, |x|^2) gives |x|^2 + |y|^2 - 2 x.y (no separate passes
        # to scale and add the norms over the [n, G] block).
        self.mat = torch.empty(parts, chans + 2, num, dtype=torch.float32, device=self.device)
        for k in range(parts):
            col = gallery[:, :, k] if rows is None else gallery[rows, :, k]
            part = col.float()  # [G, C]
            self.mat[k, :chans] = part.t().mul(-2.0)
            self.mat[k, chans] = (part * part).sum(1)
            self.mat[k, chans + 1] = 1.0


def distance_to_gallery(probe: Tensor, cache: GalleryCache) -> Tensor:
    """Distances ``[n, G]`` of a (small) block of probes to a prepared gallery.

    Per-part distances are accumulated one part at a time so that the working memory stays
    ``[n, G]`` instead of ``[p, n, G]``.
    """
    probe = as_parts(probe, "probe").to(cache.device)
    n = probe.shape[0]
    if cache.distance == "euc_flat":
        flat = probe.reshape(n, -1).float()
        if flat.shape[1] != cache.mat.shape[0]:
            raise ValueError(
                f"probe and gallery embeddings differ in size ({flat.shape[1]} vs {cache.mat.shape[0]})"
            )
        d2 = (flat * flat).sum(1, keepdim=True) + cache.sq.unsqueeze(0) - 2.0 * (flat @ cache.mat)
        return d2.clamp_min_(0.0).sqrt_()
    parts = _part_major(probe)  # [p, n, C]
    if parts.shape[0] != cache.parts or parts.shape[2] != cache.chans:
        raise ValueError(
            "probe and gallery embeddings differ in shape "
            f"(probe [C={parts.shape[2]}, p={parts.shape[0]}], "
            f"gallery [C={cache.chans}, p={cache.parts}])"
        )
    num_parts = parts.shape[0]
    out = torch.zeros(n, cache.size, dtype=torch.float32, device=cache.device)
    if cache.distance == "cos":
        parts = torch.nn.functional.normalize(parts, p=2, dim=2)
        for k in range(num_parts):
            out.addmm_(parts[k], cache.mat[k])
        return out.div_(-float(num_parts)).add_(1.0)
    ones = parts.new_ones(num_parts, n, 1)
    aug = torch.cat([parts, ones, (parts * parts).sum(2, keepdim=True)], 2)  # [p, n, C + 2]
    # Gallery tiles: the per-part block is clamped, rooted and accumulated while in cache.
    tile = max(1, min(cache.size, _TILE_ELEMS // max(n, 1)))
    flat = torch.empty(n * tile, dtype=torch.float32, device=cache.device)
    for t0 in range(0, cache.size, tile):
        w = min(tile, cache.size - t0)
        buf = flat[: n * w].view(n, w)
        acc = out[:, t0 : t0 + w]
        for k in range(num_parts):
            torch.mm(aug[k], cache.mat[k, :, t0 : t0 + w], out=buf)
            acc.add_(buf.clamp_min_(0.0).sqrt_())
    return out.div_(float(num_parts))


def iter_distance_chunks(
    probe: Tensor,
    gallery: Tensor,
    distance: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    gallery_rows: Tensor | None = None,
    probe_rows: Tensor | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, distances [chunk, G])`` over consecutive blocks of probes.

    This is the single place protocols get distances from, so every protocol is chunked.
    ``gallery_rows`` / ``probe_rows`` select (and order) rows of ``gallery`` / ``probe`` without
    copying the whole tensor: protocols pass the full embedding matrix and their row indices.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    probe = as_parts(probe, "probe")
    cache = GalleryCache(gallery, distance, gallery_rows)
    total = probe.shape[0] if probe_rows is None else probe_rows.shape[0]
    for start in range(0, total, chunk_size):
        if probe_rows is None:
            block = probe[start : start + chunk_size]
        else:
            block = probe[probe_rows[start : start + chunk_size].to(probe.device)]
        yield start, distance_to_gallery(block, cache)


def pairwise_distance(
    probe: Tensor,
    gallery: Tensor,
    distance: str = "euc_parts",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Full ``[P, G]`` distance matrix (for small sets, tests and users' own analyses)."""
    blocks = [d for _, d in iter_distance_chunks(probe, gallery, distance, chunk_size)]
    if not blocks:
        return torch.zeros(0, as_parts(gallery, "gallery").shape[0])
    return torch.cat(blocks, 0)
