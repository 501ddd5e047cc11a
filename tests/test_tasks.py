"""task=prepare (a raw PNG tree into the packed store) and task=extract (user PNG folders)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from as_shipped import CASIA_TYPES, casia_b
from helpers import TINY, assert_file_modes, compose_config, umask
from synthetic_trees import write_png_tree

from gaitgl_lightning.data.synthetic import SyntheticGait
from gaitgl_lightning.errors import MissingDataError
from gaitgl_lightning.runtime.tasks import extract, prepare, train


def _raw_tree(root: Path) -> tuple[Path, Path]:
    gen = SyntheticGait(
        seed=1,
        subjects=5,
        train_subjects=3,
        views=("000", "090"),
        types=("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "bg-01", "cl-01"),
        frames=(8, 10),
    )
    raw = write_png_tree(gen, root / "raw", "casia_b")
    partition = root / "partition.json"
    partition.write_text(json.dumps(gen.partition()))
    return raw, partition


def test_prepare_converts_a_raw_casia_b_tree(tmp_path: Path) -> None:
    raw, partition = _raw_tree(tmp_path)
    cfg = compose_config(
        [
            "task=prepare",
            "dataset=casia_b",
            f"dataset.source={raw}",
            f"dataset.store={tmp_path / 'store'}",
            f"dataset.partition={partition}",
            "dataset.num_classes=3",
            "dataset.P=2",
            "dataset.K=2",
            "dataset.prepare_workers=1",
        ],
        tmp_path,
    )
    with umask(0o022):
        info = prepare(cfg)
    assert info["sequences"] == 5 * 7 * 2 and info["train_ids"] == 3
    assert info["eval_sequences"] == 2 * 7 * 2
    assert (tmp_path / "store" / "index.json").is_file()
    assert assert_file_modes(tmp_path / "store") >= 2  # index.json included: group-readable


def test_a_missing_source_names_the_setting(tmp_path: Path) -> None:
    cfg = compose_config(
        ["task=prepare", "dataset=casia_b", f"dataset.source={tmp_path / 'nope'}"], tmp_path
    )
    with pytest.raises(MissingDataError, match=r"^dataset\.source=.*nope: not a directory"):
        prepare(cfg)


def test_prepare_accepts_a_tree_of_the_test_subjects_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Users who only evaluate (a downloaded checkpoint) often hold the test split alone:
    CASIA-B as downloaded, ids 075-076 only, with the benchmark's own partition."""
    raw = casia_b(tmp_path / "data", [75, 76])
    cfg = compose_config(
        [
            "task=prepare",
            "dataset=casia_b",
            f"dataset.source={raw}",
            f"dataset.store={tmp_path / 'store'}",
            "dataset.prepare_workers=1",
        ],
        tmp_path,
    )
    with caplog.at_level(logging.INFO):
        info = prepare(cfg)
    assert info["train_ids"] == 0 and info["eval_sequences"] == 2 * len(CASIA_TYPES) * 2
    assert "serves task=eval" in caplog.text


def test_extract_embeds_and_ranks_user_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with umask(0o022):  # every file of the run and of the extraction: 0644 (group-readable)
        _train_and_extract(tmp_path)
    assert assert_file_modes(tmp_path / "t" / "run") > 5
    assert assert_file_modes(tmp_path / "x" / "run") == 1
    # The ranking is printed: each input, its nearest gallery sequence (itself) and distance.
    lines = [line for line in capsys.readouterr().out.splitlines() if ": 1. " in line]
    assert len(lines) == 14
    assert all(line.split(":")[0] in line.split(": 1. ")[1] for line in lines)
    # Distance to itself: 0 up to the rounding of the expanded form |a|^2 + |b|^2 - 2ab
    # (0.0001 seen with some initial weights).
    assert all(float(line.rsplit("(", 1)[1].rstrip(")")) <= 1e-3 for line in lines), lines


def _train_and_extract(tmp_path: Path) -> None:
    train(compose_config([*TINY, "trainer.max_steps=4", "eval_every=4"], tmp_path / "t"))
    ckpt = tmp_path / "t" / "run" / "checkpoints" / "last.ckpt"
    raw, _ = _raw_tree(tmp_path)
    probe = raw / "004"  # one subject's sequences, one sub-folder per sequence
    cfg = compose_config(
        [
            *TINY,
            "task=extract",
            f"ckpt_path={ckpt}",
            f"extract.input={probe}",
            f"extract.gallery={probe}",
            "extract.top=1",
        ],
        tmp_path / "x",
    )
    result = extract(cfg)
    data = np.load(result["file"])
    assert data["embeddings"].shape[0] == result["sequences"] == 14
    # Each sequence's nearest gallery entry is itself.
    assert data["rank_index"][:, 0].tolist() == list(range(14))
    assert np.allclose(data["rank_distance"][:, 0], 0.0, atol=1e-4)
