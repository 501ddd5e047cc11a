"""No lost training, no rank left waiting.

Step checkpoints are written every ``checkpoint_every`` steps, independent of evaluation; a
failed evaluation saves a checkpoint first; a training process killed with SIGKILL resumes with
``ckpt_path=last`` to the same weights as an uninterrupted run; under 2-process gloo DDP a
failure on any rank ends both ranks with the same message (``tests/ddp_fault.py`` injects it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, cli_env, compose_config, run_cli, run_python, start_cli

from gaitgl_lightning.data.samplers import EvalShardSampler
from gaitgl_lightning.errors import EvaluationError
from gaitgl_lightning.runtime.checkpoints import newest_checkpoint
from gaitgl_lightning.runtime.tasks import train

QUIET = ["eval_best=false", "baseline_gei=false"]


def test_step_checkpoints_are_kept_independent_of_evaluation(tmp_path: Path) -> None:
    train(
        compose_config(
            [*TINY, *QUIET, "eval_every=100", "checkpoint_every=4", "checkpoint_keep=2"], tmp_path
        )
    )
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in (folder / "steps").iterdir()) == [
        "step000008.ckpt",
        "step000012.ckpt",
    ]  # no evaluation ran before the end, the newest 2 of 4, 8, 12 are kept, no temp file
    newest = newest_checkpoint(folder)
    assert newest is not None
    assert torch.load(newest, weights_only=False)["global_step"] == 12


def test_a_failed_evaluation_saves_a_checkpoint_then_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(name, embeddings, meta, **options):  # type: ignore[no-untyped-def]
        raise EvaluationError("casia_b: no probe subject appears in the gallery")

    monkeypatch.setattr("gaitgl_lightning.evaluation.metric.evaluate", fail)
    with pytest.raises(EvaluationError, match=r"no probe subject.*ckpt_path=last"):
        train(compose_config([*TINY, *QUIET, "eval_every=6", "checkpoint_every=100"], tmp_path))
    saved = tmp_path / "run" / "checkpoints" / "failed-step000006.ckpt"
    assert torch.load(saved, weights_only=False)["global_step"] == 6
    assert newest_checkpoint(tmp_path / "run" / "checkpoints") == saved


@pytest.mark.slow
@pytest.mark.extended  # 43 s in CI, where test_resume's SIGKILL case checks the same weights
def test_sigkill_then_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    # 30 steps, killed at step 3-11: at least 19 steps and two evaluations are still ahead when
    # the kill lands (a tiny step takes tens of ms on a quiet machine, so a kill near the end
    # could find the run already finished).
    common = [
        *TINY,
        *QUIET,
        "trainer.deterministic=true",
        "trainer.max_steps=30",
        "checkpoint_every=2",
        "eval_every=10",
    ]
    full = run_cli(common, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    (full_run,) = (tmp_path / "full" / "outputs" / "train" / "runs").iterdir()

    proc = start_cli(common, tmp_path / "killed", output=subprocess.DEVNULL)
    kill_after = random.Random().choice([3, 5, 7, 9, 11])  # an arbitrary step
    deadline = time.monotonic() + 300
    steps: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        steps = list((tmp_path / "killed" / "outputs").glob("train/runs/*/checkpoints/steps/*"))
        if any(int(p.stem[4:10]) >= kill_after - 1 for p in steps if p.stem.startswith("step")):
            time.sleep(random.uniform(0.0, 0.2))  # somewhere inside the next steps
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = (tmp_path / "killed" / "outputs" / "train" / "runs").iterdir()
    assert not (run / "metrics.json").exists()

    resumed = run_cli([*common, "ckpt_path=last", f"hydra.run.dir={run}"], tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = torch.load(full_run / "checkpoints" / "last.ckpt", weights_only=False)
    got = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert got["global_step"] == want["global_step"] == 30
    for key, value in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)


# ----------------------------------------------------------------------------- DDP
FAULT_SCRIPT = Path(__file__).with_name("ddp_fault.py")


def _ddp_with_fault(tmp_path: Path, fault: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path, GAITGL_TEST_FAULT=fault)
    args = [*TINY, *QUIET, "trainer=ddp_cpu", "eval_every=4", "trainer.max_steps=8", *extra]
    start = time.monotonic()
    proc = run_python([str(FAULT_SCRIPT), *args], tmp_path, env, timeout=300)
    proc.elapsed = time.monotonic() - start  # type: ignore[attr-defined]
    return proc


def test_ddp_rank0_failing_in_evaluation_ends_both_ranks(tmp_path: Path) -> None:
    proc = _ddp_with_fault(tmp_path, "protocol")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    # Printed once, by the rank that failed; rank 1, told by a collective, ends without a line.
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: casia_b: no probe subject") and "ckpt_path=last" in lines[0]
    assert "Connection closed" not in output  # not ended by a dead peer's socket
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert (run / "checkpoints" / "failed-step000004.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "message", "saved"),
    [
        ("eval_forward_rank1", "rank 1 failed in evaluation", "failed-step000004.ckpt"),
        ("train_forward_rank1", "rank 1 failed in training step 2", None),
    ],
    ids=["evaluation", "training"],
)
def test_ddp_rank1_failing_ends_both_ranks(
    tmp_path: Path, fault: str, message: str, saved: str | None
) -> None:
    proc = _ddp_with_fault(tmp_path, fault)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{message}: RuntimeError: injected out of memory" in output
    assert "Connection closed" not in output
    if saved:
        (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
        assert (run / "checkpoints" / saved).is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "extra", "message"),
    [
        ("loader_rank1", ["dataset.num_workers=1"], "OSError: injected: cannot read the store"),
        (
            "collective_rank1",
            ["callbacks.rank_failure.grace_s=5"],
            "injected failure before SyncBN",
        ),
    ],
    ids=["data-loader-worker", "inside-a-collective"],
)
def test_a_failure_no_collective_shares_ends_every_rank(
    tmp_path: Path, fault: str, extra: list[str], message: str
) -> None:
    """Rank 1 fails where no collective carries it (its data-loader worker; its forward while
    rank 0 waits in SyncBN's all-gather): both ranks end with status 1 well before any process
    group timeout, not killed by Lightning's process observer, and the message is there once."""
    proc = _ddp_with_fault(tmp_path, fault, *extra)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]  # rank 0 ended by itself (SIGKILL: -9)
    assert output.count(message) >= 1, output[-3000:]
    assert len([line for line in output.splitlines() if line.startswith("error: ")]) <= 1
    assert "Forcefully terminating" not in output, output[-3000:]
    assert proc.elapsed < 240  # type: ignore[attr-defined]


@pytest.mark.slow
def test_ddp_rank_without_an_evaluation_share_evaluates_normally(tmp_path: Path) -> None:
    proc = _ddp_with_fault(tmp_path, "no_share_rank1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["final"]["summary"]["rank1"] <= 1.0


def test_a_rank_with_no_share_repeats_a_sequence_the_gather_drops() -> None:
    shares = [EvalShardSampler([5], batch_size=4, rank=r, world_size=3).batches for r in range(3)]
    assert shares == [[[0]], [[0]], [[0]]]
