"""The multi-node path without SLURM: ``torchrun --nnodes=2`` on localhost, two "nodes" of one
process each meeting through a c10d rendezvous, trains exactly what 2 processes on one node do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli

pytestmark = pytest.mark.slurm


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_two_node_torchrun_matches_two_processes_on_one_node(tmp_path: Path) -> None:
    root, run = tmp_path / "two-nodes", tmp_path / "two-nodes" / "run"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # not a SLURM job
    env.update(
        GAITGL_ROOT=str(root),
        GAITGL_RUN_DIR=str(run),  # both nodes write one run dir, as on a shared filesystem
        WANDB_MODE="offline",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    node = [
        *(sys.executable, "-m", "torch.distributed.run"),
        *("--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d"),
        *(f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=gaitgl-test"),
        *("--local-addr=127.0.0.1", "-m", "gaitgl_lightning"),
        *(*TINY, "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2"),
    ]
    nodes = [
        subprocess.Popen(
            node, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=600)[0] for proc in nodes]
    finally:
        for proc in nodes:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(nodes, outputs, strict=True):
        assert proc.returncode == 0, out[-6000:]
    assert "world size 2" in "".join(outputs)

    one_node = run_cli([*TINY, "trainer=ddp_cpu"], tmp_path / "one-node")
    assert one_node.returncode == 0, one_node.stderr[-6000:]
    (reference,) = (tmp_path / "one-node" / "outputs" / "train" / "runs").iterdir()

    got, want = _weights(run), _weights(reference)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    got_m, want_m = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert got_m["steps"] == want_m["steps"] == 12
    assert got_m["final"]["summary"] == pytest.approx(want_m["final"]["summary"], abs=1e-6)
