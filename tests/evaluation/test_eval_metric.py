"""GaitEvaluation (the protocol as a torchmetrics Metric): de-duplication by index, the count
check, and two gloo processes with uneven, padded shares giving the 1-process numbers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from eval_bruteforce import make_casia

from gaitgl_lightning.errors import EvaluationError
from gaitgl_lightning.evaluation import GaitEvaluation, evaluate

CASIA = {"name": "casia_b"}


def test_repeated_indices_are_dropped_and_rows_sorted_by_index() -> None:
    emb, meta = make_casia(subjects=3, views=("000", "090"), seed=11)
    n = emb.shape[0]
    metric = GaitEvaluation(meta, CASIA)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    metric.update(emb[order[: n // 2]], order[: n // 2])
    # the padding of a distributed sampler: sequences seen again, with different rows (the
    # first one seen must be kept, whatever its value)
    metric.update(torch.zeros_like(emb[order[:3]]), order[:3])
    metric.update(emb[order[n // 2 :]], order[n // 2 :])
    got, index = metric.gathered()
    assert index.tolist() == list(range(n))
    assert torch.equal(got, emb)
    assert metric.compute().summary() == evaluate("casia_b", emb, meta).summary()


def test_a_missing_sequence_is_an_error_naming_the_counts() -> None:
    emb, meta = make_casia(subjects=3, views=("000", "090"), seed=11)
    n = emb.shape[0]
    metric = GaitEvaluation(meta, CASIA)
    metric.update(emb[1:], torch.arange(1, n))  # sequence 0 never embedded
    with pytest.raises(EvaluationError, match=rf"gathered {n - 1} distinct .* has {n} "):
        metric.compute()
    metric.update(emb[:1], torch.tensor([n]))  # as many rows as the set, but one out of range
    with pytest.raises(EvaluationError, match=rf"indices 1..{n}\)"):
        metric.compute()


def test_nothing_to_evaluate_and_mismatched_batches_are_errors() -> None:
    emb, meta = make_casia(subjects=2, views=("000",), seed=1)
    metric = GaitEvaluation(meta, CASIA)
    with pytest.raises(EvaluationError, match="no embeddings"):
        metric.gathered()
    with pytest.raises(ValueError, match="4 indices"):
        metric.update(emb[:3], torch.arange(4))


def test_reset_forgets_the_previous_evaluation() -> None:
    emb, meta = make_casia(subjects=2, views=("000", "090"), seed=1)
    metric = GaitEvaluation(meta, CASIA)
    metric.update(torch.zeros_like(emb), torch.arange(len(meta)))
    metric.compute()
    metric.reset()
    metric.update(emb, torch.arange(len(meta)))
    assert torch.equal(metric.gathered()[0], emb)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shares(rank: int, world: int, emb: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Uneven, padded shares as batches: rank 0 gets 0, 2, 4, ..., then the last row and a
    repeat of row 0 (zeros: the first-seen row must win); rank 1 the odd rows but the last."""
    n = emb.shape[0]
    mine = list(range(rank, n - 1, world))
    batches = [mine[:2], mine[2:]]
    if rank == 0:
        batches.append([n - 1])
    out = [(emb[b], torch.tensor(b)) for b in batches]
    if rank == 0:
        out.append((torch.zeros_like(emb[:1]), torch.tensor([0])))
    return out


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        emb, meta = make_casia(subjects=3, views=("000", "090"), seed=11)
        metric = GaitEvaluation(meta, CASIA)
        manual = GaitEvaluation(meta, CASIA, sync_on_compute=False)
        for batch in _shares(rank, world, emb):
            metric.update(*batch)
            manual.update(*batch)
        summary = metric.compute().summary()  # torchmetrics syncs on every rank first
        manual.sync()  # the module's way: sync on every rank, compute on one
        got, index = manual.gathered()
        manual.reset()  # the states are synced tensors now; reset must still work
        assert manual.index == []
        torch.save({"summary": summary, "emb": got, "idx": index}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_with_uneven_padded_shares_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    emb, meta = make_casia(subjects=3, views=("000", "090"), seed=11)
    single = evaluate("casia_b", emb, meta).summary()
    sizes = [sum(len(i) for _, i in _shares(r, 2, emb)) for r in (0, 1)]
    assert sizes[0] > sizes[1] + 1  # uneven, and rank 0's share holds a repeat
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["summary"] == single
        assert got["idx"].tolist() == list(range(emb.shape[0]))
        assert torch.equal(got["emb"], emb)
