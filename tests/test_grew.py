"""GREW end to end on trees built as GREW ships: hidden test labels, the submission file at every
evaluation, checkpoint selection without a metric, distractors, the validation split, the
OpenGait pickle form, task=eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from as_shipped import grew, grew_pkl, tiny_run
from helpers import compose_config, run_cli

from gaitgl_lightning.runtime.tasks import evaluate_checkpoint, prepare, train

HEADER = ["videoId", *(f"rank{k}" for k in range(1, 21))]


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    return rows[1:]


def _check_submission(path: Path, probes: set[str], gallery_ids: set[str]) -> None:
    rows = _rows(path)
    assert {r[0] for r in rows} == probes and len(rows) == len(probes)
    print(f"{path.name}: {len(rows)} rows")
    allowed = {str(int(s)) for s in gallery_ids} | {"0"}  # 0: a distractor
    for row in rows:
        assert len(row) == 21 and set(row[1:]) <= allowed


def test_grew_preset_trains_and_writes_a_submission_at_every_evaluation(tmp_path: Path) -> None:
    tree = grew(tmp_path / "data", train=6, test=25, height=16)
    cfg = compose_config(
        [
            "+experiment=grew_sgd",
            f"dataset.source={tree.root}",
            *tiny_run(tmp_path / "store", num_classes=6),
        ],
        tmp_path,
    )
    metrics = train(cfg)
    run = tmp_path / "run"
    subs = sorted(p.name for p in (run / "submissions").iterdir())
    assert subs == ["grew-step000003.csv", "grew-step000006.csv"]  # periodic + final, by step
    for name in subs:
        _check_submission(run / "submissions" / name, set(tree.probe_truth), set(tree.test_ids))
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert final["labels_hidden"] and "rank1" not in final["summary"]
    assert final["counts"]["num_hidden_probes"] == 50 and final["counts"]["num_gallery"] == 50
    assert final["summary"]["dist_top1_mean"] > 0
    assert final["files"]["submission"].endswith("grew-step000006.csv")
    assert final["submission"] == final["files"]["submission"]
    # No rank-1 to select by: the latest checkpoint is the one kept, named as such.
    assert metrics["best"]["checkpoint"].endswith("step000006-latest.ckpt")
    assert not list(run.glob("submissions/.*"))  # no temporary file left behind

    # task=eval on the trained checkpoint needs only the test split and writes its own file.
    ev = compose_config(
        [
            "+experiment=grew_sgd",
            "task=eval",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            *tiny_run(tmp_path / "store", num_classes=6),
        ],
        tmp_path / "eval",
    )
    out = evaluate_checkpoint(ev)
    assert out["eval"]["labels_hidden"]
    _check_submission(
        tmp_path / "eval" / "run" / "submissions" / "grew-step000006.csv",
        set(tree.probe_truth),
        set(tree.test_ids),
    )


def test_grew_distractors_and_validation_split(tmp_path: Path) -> None:
    tree = grew(tmp_path / "data", train=8, test=20, height=16, distractors=4)
    cfg = compose_config(
        [
            "+experiment=grew_sgd",
            f"dataset.source={tree.root}",
            "dataset.distractors=true",
            "dataset.val_ids=2",
            *tiny_run(tmp_path / "store", num_classes=6),
        ],
        tmp_path,
    )
    metrics = train(cfg)
    final = metrics["final"]
    assert not final["labels_hidden"] and 0.0 <= final["summary"]["rank1"] <= 1.0
    counts = final["counts"]
    assert counts["num_distractors"] == 4 and counts["num_hidden_probes"] == 40
    # 2 held-out ids x 4 sequences: 2 gallery + 2 probes each.
    assert counts["num_labelled_probes"] == 4
    assert counts["num_gallery"] == 2 * 20 + 4 + 2 * 2
    assert "-r1_" in metrics["best"]["checkpoint"]  # selected by the validation rank-1
    _check_submission(Path(final["files"]["submission"]), set(tree.probe_truth), set(tree.test_ids))


def test_grew_opengait_pickles_prepare_like_the_raw_tree(tmp_path: Path) -> None:
    tree = grew_pkl(tmp_path / "data", train=4, test=21, height=16)
    cfg = compose_config(
        [
            "+experiment=opengait_grew",
            "task=prepare",
            f"dataset.source={tree.root}",
            f"dataset.partition={tree.partition}",
            *tiny_run(tmp_path / "store", num_classes=4),
        ],
        tmp_path,
    )
    info = prepare(cfg)
    assert info["train_ids"] == 4 and info["eval_sequences"] == 21 * 3
    cfg = compose_config(
        [
            "+experiment=opengait_grew",
            f"dataset.source={tree.root}",
            f"dataset.partition={tree.partition}",
            *tiny_run(tmp_path / "store", num_classes=4),
        ],
        tmp_path,
    )
    final = train(cfg)["final"]
    assert final["labels_hidden"] and final["counts"]["num_hidden_probes"] == 21
    _check_submission(Path(final["files"]["submission"]), set(tree.probe_truth), set(tree.test_ids))


@pytest.mark.slow
@pytest.mark.extended  # 23 s in CI, where GREW runs on one process and DDP on the default set
def test_grew_under_two_process_ddp(tmp_path: Path) -> None:
    tree = grew(tmp_path / "data", train=6, test=21, height=16)
    args = [
        "+experiment=grew_sgd",
        f"dataset.source={tree.root}",
        *tiny_run(tmp_path / "store", num_classes=6),
        "trainer=ddp_cpu",
        "hydra.run.dir=" + str(tmp_path / "run"),
    ]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    run = tmp_path / "run"
    subs = sorted(p.name for p in (run / "submissions").iterdir())
    assert subs == ["grew-step000003.csv", "grew-step000006.csv"]
    _check_submission(run / "submissions" / subs[-1], set(tree.probe_truth), set(tree.test_ids))
    assert json.loads((run / "metrics.json").read_text())["final"]["labels_hidden"]


def test_a_gallery_of_fewer_than_20_sequences_gets_the_ranks_that_exist(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A subset of GREW: 5 test subjects, 2 gallery sequences each: 10 gallery rows.
    tree = grew(tmp_path / "data", train=6, test=5, height=16)
    cfg = compose_config(
        [
            "+experiment=grew_sgd",
            f"dataset.source={tree.root}",
            *tiny_run(tmp_path / "store", num_classes=6),
        ],
        tmp_path,
    )
    with caplog.at_level("WARNING", logger="gaitgl_lightning.evaluation.submission"):
        train(cfg)  # before: ValueError from write_grew_submission at the first evaluation
    path = tmp_path / "run" / "submissions" / "grew-step000006.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["videoId", *(f"rank{k}" for k in range(1, 11))]
    assert {r[0] for r in rows[1:]} == set(tree.probe_truth)
    assert all(len(r) == 11 for r in rows[1:])
    assert "only 10 sequences" in caplog.text and "GREW's server needs 20" in caplog.text
