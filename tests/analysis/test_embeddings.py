"""Checkpoint embeddings for Fig. 5: the right sequences, the network's own outputs, seeded."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from analysis_helpers import AnalysisRuns

from gaitgl_lightning.analysis import (
    checkpoint_embeddings,
    checkpoints_by_model,
    choose_sequences,
    class_compactness,
    find_runs,
    tsne_2d,
)
from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.errors import CheckpointError
from gaitgl_lightning.runtime.checkpoints import load_network


def _meta(subjects: int, per: int) -> SequenceMeta:
    ids = [f"{s:03d}" for s in range(subjects) for _ in range(per)]
    return SequenceMeta.from_lists(ids, ["nm-01"] * len(ids), ["090"] * len(ids))


def test_choose_sequences_is_seeded_and_balanced() -> None:
    meta = _meta(30, 25)
    rows = choose_sequences(meta, subjects=10, per_subject=20, seed=3)
    assert len(rows) == 200 and len(set(rows)) == 200 and list(rows) == sorted(rows)
    counts = np.unique(meta.subjects[rows], return_counts=True)[1]
    assert list(counts) == [20] * 10
    assert np.array_equal(rows, choose_sequences(meta, 10, 20, seed=3))
    assert not np.array_equal(rows, choose_sequences(meta, 10, 20, seed=4))
    assert len(choose_sequences(_meta(3, 5), 10, 20)) == 15  # fewer available: all of them


def test_checkpoint_embeddings_are_the_networks_outputs(analysis_runs: AnalysisRuns) -> None:
    ckpt = analysis_runs.single / "checkpoints" / "last.ckpt"
    emb = checkpoint_embeddings(ckpt, subjects=3, per_subject=4, seed=0)
    assert emb.embeddings.shape[0] == 12 and len(set(emb.subjects)) == 3 and emb.step == 12
    # The same rows embedded one sequence at a time, by hand, give the same vectors.
    loaded = load_network(ckpt)
    from hydra.utils import instantiate

    data = instantiate(loaded.config.dataset, _recursive_=False)
    data.setup("validate")
    rows = choose_sequences(data.eval_meta, 3, 4, 0)
    assert list(data.eval_meta.subjects[rows]) == list(emb.subjects)
    with torch.no_grad():
        for i, row in enumerate(rows[:3]):
            x = torch.from_numpy(np.array(data.eval_dataset[int(row)]["sils"]))[None, None] / 255.0
            np.testing.assert_allclose(
                loaded.net(x).embeddings.flatten(1)[0].numpy(), emb.embeddings[i], atol=1e-5
            )


def test_one_checkpoint_per_model_kind(analysis_runs: AnalysisRuns) -> None:
    runs = find_runs([analysis_runs.ratio_sweep, analysis_runs.model_sweep])
    found = checkpoints_by_model(runs)
    assert list(found) == ["global only", "local only", "GLCL"]
    assert found["GLCL"] == analysis_runs.ratio_sweep / "2" / "checkpoints" / "last.ckpt"  # strip V


def test_class_compactness_orders_tight_and_loose_clusters() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 20)
    centres = rng.normal(size=(5, 16)) * 10
    tight = centres[labels] + rng.normal(size=(100, 16)) * 0.1
    loose = centres[labels] + rng.normal(size=(100, 16)) * 10
    assert class_compactness(tight, labels) < 0.05 < class_compactness(loose, labels) < 1.0
    shuffled = class_compactness(rng.normal(size=(100, 16)), labels)
    assert shuffled == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="two or more"):
        class_compactness(np.zeros((3, 2)), np.array([0, 1, 2]))


def test_tsne_is_seeded_and_separates_clusters() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 15)
    x = np.eye(3, 8)[labels] * 20 + rng.normal(size=(45, 8))
    a, b = tsne_2d(x, seed=0), tsne_2d(x, seed=0)
    assert a.shape == (45, 2) and np.allclose(a, b)
    assert class_compactness(a, labels) < 0.5
    with pytest.raises(ValueError, match="at least 4"):
        tsne_2d(x[:3])


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_network(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape("junk.ckpt: not a torch checkpoint")):
        load_network(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(
        CheckpointError, match=re.escape("other.ckpt: the checkpoint holds no run config")
    ):
        load_network(other)


def test_moved_store_is_named(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    ckpt = analysis_runs.single / "checkpoints" / "last.ckpt"
    with pytest.raises(FileNotFoundError, match="pass store="):
        checkpoint_embeddings(ckpt, store=tmp_path / "elsewhere")
