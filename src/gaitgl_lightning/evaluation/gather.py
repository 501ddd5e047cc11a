"""Collect evaluation embeddings from every process, keyed by dataset index.

Why by index: a distributed evaluation sampler pads the last shard with repeated samples and
gives ranks differently sized shares, so concatenating what the ranks computed would count some
sequences twice and put rows in an order that depends on the number of processes. Gathering
(embedding, index) pairs, dropping repeated indices and sorting by index gives the same matrix
on 1 process, on CPU processes (gloo) and on GPUs (nccl), so every metric is identical too.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def dedup_sort_by_index(embeddings: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Sort rows by index and keep the first row of every repeated index."""
    if index.numel() == 0:
        return embeddings, index
    order = torch.sort(index, stable=True).indices
    idx = index[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    return embeddings[order[keep]], idx[keep]


def _check(embeddings: Tensor, index: Tensor) -> Tensor:
    if not isinstance(embeddings, Tensor) or not isinstance(index, Tensor):
        raise ValueError("gather_by_index: embeddings and index must be torch tensors")
    index = index.reshape(-1).to(torch.long)
    if embeddings.dim() == 0 or embeddings.shape[0] != index.shape[0]:
        raise ValueError(
            "gather_by_index: embeddings and index differ in length "
            f"({tuple(embeddings.shape)} vs {index.shape[0]} indices)"
        )
    return index


def gather_by_index(embeddings: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather ``(embeddings [n, ...], index [n])`` shards; return them de-duplicated, sorted.

    Call it on every rank (it is a collective). Shards may differ in size between ranks: sizes
    are gathered first, shards padded to the largest, gathered, and trimmed. Tensors stay on
    their device (nccl needs CUDA tensors; gloo gets CPU copies and the result is moved back).
    Without an initialised process group it only de-duplicates and sorts.
    """
    index = _check(embeddings, index)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dedup_sort_by_index(embeddings, index.to(embeddings.device))
    device = embeddings.device
    comm = device
    if dist.get_backend() == "gloo" and device.type != "cpu":
        comm = torch.device("cpu")
    world = dist.get_world_size()
    emb = embeddings.to(comm).contiguous()
    idx = index.to(comm)
    size = torch.tensor([emb.shape[0]], dtype=torch.long, device=comm)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    most = max(counts)
    if most == 0:
        return dedup_sort_by_index(embeddings, index.to(device))
    pad = most - emb.shape[0]
    if pad:
        emb = torch.cat([emb, emb.new_zeros((pad, *emb.shape[1:]))], 0)
        idx = torch.cat([idx, idx.new_full((pad,), -1)], 0)
    emb_list = [torch.empty_like(emb) for _ in range(world)]
    idx_list = [torch.empty_like(idx) for _ in range(world)]
    dist.all_gather(emb_list, emb)
    dist.all_gather(idx_list, idx)
    all_emb = torch.cat([e[:c] for e, c in zip(emb_list, counts, strict=True)], 0).to(device)
    all_idx = torch.cat([i[:c] for i, c in zip(idx_list, counts, strict=True)], 0).to(device)
    return dedup_sort_by_index(all_emb, all_idx)
