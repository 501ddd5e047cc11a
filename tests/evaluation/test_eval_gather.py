"""gather_by_index on one process and on two gloo processes (spawned), metrics identical."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from eval_bruteforce import make_casia

from gaitgl_lightning.evaluation import evaluate, gather_by_index


def test_single_process_sorts_and_dedups() -> None:
    emb = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    idx = torch.tensor([4, 1, 3, 1, 0, 2])
    out, oi = gather_by_index(emb, idx)
    assert oi.tolist() == [0, 1, 2, 3, 4]
    assert out[:, 0].tolist() == [8.0, 2.0, 10.0, 4.0, 0.0]  # first of the repeated index 1 kept


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        gather_by_index(torch.zeros(3, 2), torch.arange(4))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        emb, meta = make_casia(subjects=3, views=("000", "090"), seed=11)
        n = emb.shape[0]
        # uneven shards, like a padded DistributedSampler: rank 0 gets 0, 2, 4, ... plus a
        # repeated row; rank 1 gets the odd rows but not the last one, which rank 0 takes.
        mine = list(range(rank, n - 1, world))
        if rank == 0:
            mine += [n - 1, 0]
        idx = torch.tensor(mine)
        g_emb, g_idx = gather_by_index(emb[idx], idx)
        res = evaluate("casia_b", g_emb, meta)
        torch.save(
            {"emb": g_emb, "idx": g_idx, "summary": res.summary()},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    emb, meta = make_casia(subjects=3, views=("000", "090"), seed=11)
    single = evaluate("casia_b", emb, meta).summary()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["idx"].tolist() == list(range(emb.shape[0]))
        assert torch.equal(got["emb"], emb)
        assert got["summary"] == single
