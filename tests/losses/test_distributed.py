"""2-process gloo run: the gathered triplet term equals the single-process loss on the
concatenated batch, and world_size x the local gradient equals the single-process gradient."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gaitgl_lightning.losses import GaitGLLoss

WORLD = 2


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(8, 4, 3, generator=g)
    logits = torch.randn(8, 5, 3, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])[torch.randperm(8, generator=g)]
    return emb, logits, labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        emb, logits, labels = _data()
        # unequal shards (5 + 3): the gather pads and trims
        uneven = slice(0, 5) if rank == 0 else slice(5, 8)
        e = emb[uneven].clone().requires_grad_(True)
        GaitGLLoss(ce_weight=0.0)(e, None, labels[uneven]).total.backward()
        torch.save({"grad_e": e.grad}, Path(out_dir) / f"uneven{rank}.pt")
        shard = slice(rank * 4, rank * 4 + 4)
        e = emb[shard].clone().requires_grad_(True)
        z = logits[shard].clone().requires_grad_(True)
        out = GaitGLLoss()(e, z, labels[shard])
        out.total.backward()
        torch.save(
            {"parts": out.parts, "total": out.total.detach(), "grad_e": e.grad, "grad_z": z.grad},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_gathered_triplet_matches_single_process() -> None:
    emb, logits, labels = _data()
    e = emb.clone().requires_grad_(True)
    tri = GaitGLLoss(ce_weight=0.0)(e, None, labels)
    tri.total.backward()
    assert e.grad is not None
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(_free_port(), tmp), nprocs=WORLD, join=True)
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
        uneven = [torch.load(Path(tmp) / f"uneven{r}.pt", weights_only=True) for r in range(WORLD)]
    torch.testing.assert_close(uneven[0]["grad_e"] / WORLD, e.grad[:5])
    torch.testing.assert_close(uneven[1]["grad_e"] / WORLD, e.grad[5:])
    for r, res in enumerate(ranks):
        shard = slice(r * 4, r * 4 + 4)
        # the triplet term sees the global batch on every rank
        torch.testing.assert_close(res["parts"]["triplet"], tri.parts["triplet"])
        # CE stays local
        z = logits[shard].clone().requires_grad_(True)
        ce = GaitGLLoss(triplet_weight=0.0)(emb[shard], z, labels[shard])
        ce.total.backward()
        torch.testing.assert_close(res["parts"]["ce"], ce.parts["ce"])
        torch.testing.assert_close(res["grad_z"], z.grad)
        torch.testing.assert_close(res["total"], WORLD * tri.parts["triplet"] + ce.parts["ce"])
        # Each rank's triplet gradient is WORLD x d(global loss)/d(its shard); DDP's average over
        # WORLD ranks then leaves exactly the single-process gradient.
        torch.testing.assert_close(res["grad_e"] / WORLD, e.grad[shard])
