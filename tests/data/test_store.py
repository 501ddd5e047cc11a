"""The packed store returns exactly what was written; interrupted builds resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_trees import write_png_tree

from gaitgl_lightning.data import prepare as prepare_mod
from gaitgl_lightning.data.prepare import generate_store, prepare_store
from gaitgl_lightning.data.store import PackedStore, StoreError, StoreWriter
from gaitgl_lightning.data.synthetic import SyntheticGait


def _tiny(**kw: object) -> SyntheticGait:
    return SyntheticGait(
        seed=3,
        subjects=4,
        train_subjects=2,
        views=("000", "090"),
        types=("nm-01", "cl-01"),
        frames=(6, 9),
        **kw,  # type: ignore[arg-type]
    )


def test_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    seqs = {
        ("1", "a", "0"): rng.integers(0, 256, (3, 8, 8), dtype=np.uint8),
        ("2", "b", "9"): rng.integers(0, 256, (5, 8, 8), dtype=np.uint8),
    }
    w = StoreWriter(tmp_path / "s", 8, 8)
    for key, frames in seqs.items():
        w.append(*key, frames)
    w.finish("x", {"TRAIN_SET": ["1"], "TEST_SET": ["2"]})
    store = PackedStore(tmp_path / "s")
    for i, r in enumerate(store.records):
        np.testing.assert_array_equal(store.sequence(i), seqs[r.key])
    assert store.meta().subjects.tolist() == ["1", "2"]


def test_clip_reads_are_the_sequence_windows(tmp_path: Path) -> None:
    """store.clip is the window of store.sequence; TrainClips gives the same clip whether it
    reads a contiguous window as a slice (fixed_ordered) or gathers frames (short sequences)."""
    from gaitgl_lightning.data.datasets import TrainClips, sample_frames
    from gaitgl_lightning.data.pretreatment import side_cut

    rng = np.random.default_rng(0)
    w = StoreWriter(tmp_path / "s", 8, 64)
    for i, n in enumerate((40, 7, 33)):
        w.append(str(i), "nm-01", "000", rng.integers(0, 256, (n, 8, 64), dtype=np.uint8))
    w.finish("x", {"TRAIN_SET": ["0", "1", "2"], "TEST_SET": []})
    store = PackedStore(tmp_path / "s")
    for i, r in enumerate(store.records):
        np.testing.assert_array_equal(store.clip(i, 2, 5), store.sequence(i)[2:7])
        assert store.clip(i, 0, r.length).shape[0] == r.length
        with pytest.raises(IndexError, match="outside sequence"):
            store.clip(i, r.length - 1, 2)
    for mode in ("fixed_ordered", "fixed_unordered"):
        clips = TrainClips(store, range(3), [0, 1, 2], frames=30, sample_type=mode)
        for pos in range(3):
            for seed in range(12):  # 33 frames: starts 0-3, the last window ends at the end
                item = clips[(pos, seed)]
                chosen = sample_frames(
                    store.records[pos].length, 30, mode, np.random.default_rng(seed)
                )
                np.testing.assert_array_equal(item["sils"], side_cut(store.sequence(pos)[chosen]))
                assert item["sils"].shape == (30, 8, 44)


def test_sample_clip_is_sample_frames_with_the_window_as_a_start() -> None:
    """The fast path's draw: a start exactly when the clip is a window inside the sequence
    (fixed_ordered, sequence at least as long), else sample_frames' indices; same seed, same
    frames (short sequences, a sequence as long as the clip, windows at the very end)."""
    from gaitgl_lightning.data.datasets import sample_clip, sample_frames

    ends = set()
    for mode in ("fixed_ordered", "fixed_unordered"):
        for length in (1, 7, 29, 30, 31, 33, 50):
            for seed in range(25):
                clip = sample_clip(length, 30, mode, np.random.default_rng(seed))
                frames = sample_frames(length, 30, mode, np.random.default_rng(seed))
                window = mode == "fixed_ordered" and length >= 30
                assert isinstance(clip, int) == window
                if isinstance(clip, int):
                    assert clip >= 0 and clip + 30 <= length
                    np.testing.assert_array_equal(np.arange(clip, clip + 30), frames)
                    ends.add((length, clip + 30 == length))
                else:
                    np.testing.assert_array_equal(clip, frames)
    assert (33, True) in ends and (30, True) in ends


def test_copy_frames_equals_assignment() -> None:
    """collate's row-wise copy gives what ``dst[...] = src`` gives: side-cut views of a
    memory map, contiguous clips, empty clips; other layouts and dtypes fall back."""
    from gaitgl_lightning.data.datasets import copy_frames
    from gaitgl_lightning.data.pretreatment import side_cut

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (40, 16, 64), dtype=np.uint8)
    frames.flags.writeable = False
    cases = [
        side_cut(frames[3:33]),  # the training clip: rows of 44 of 64 bytes
        frames[5:9],  # contiguous
        side_cut(frames[40:40]),  # no frame
        frames[:4, :, ::2],  # every other column: not rows of bytes, numpy's copy
        frames[:4, ::3, 7:50],  # every third row, cut columns
    ]
    for src in cases:
        for dtype in (np.uint8, np.float32):
            dst = np.full(src.shape, 7, dtype)
            copy_frames(dst, src)
            np.testing.assert_array_equal(dst, src.astype(dtype))


def test_collate_in_a_worker_writes_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a data-loader worker the batch is allocated in shared memory (no second copy to send
    it); it equals the main-process batch, padding zeroed although the buffer starts empty."""
    import gaitgl_lightning.data.datasets as datasets

    rng = np.random.default_rng(0)
    items = [
        {
            "sils": rng.integers(1, 256, (n, 8, 64), dtype=np.uint8)[..., 10:54],
            "label": n,
            "index": i,
        }
        for i, n in enumerate((5, 2, 5, 1))
    ]
    main = datasets.collate(items)
    assert not main["sils"].is_shared()
    monkeypatch.setattr(datasets, "get_worker_info", lambda: object())
    for _ in range(3):  # fresh buffers each time: the padding must be written, not assumed
        worker = datasets.collate(items)
        assert worker["sils"].is_shared()
        for key in main:
            assert torch.equal(main[key], worker[key]), key
    assert main["sils"].shape == (4, 5, 8, 44) and main["lengths"].tolist() == [5, 2, 5, 1]
    assert int(main["sils"][1, 2:].sum()) == 0 and int(main["sils"][3, 1:].sum()) == 0
    for i, it in enumerate(items):
        np.testing.assert_array_equal(main["sils"][i, : len(it["sils"])].numpy(), it["sils"])


def test_wrong_shape_and_empty_sequences_are_refused(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path / "s", 8, 8)
    with pytest.raises(StoreError, match="uint8 \\[T, 8, 8\\]"):
        w.append("1", "a", "0", np.zeros((2, 8, 9), np.uint8))
    with pytest.raises(StoreError, match="empty sequence"):
        w.append("1", "a", "0", np.zeros((0, 8, 8), np.uint8))


def test_damaged_store_is_detected(tmp_path: Path) -> None:
    generate_store(_tiny(), tmp_path / "s", 16, workers=1)
    frames = tmp_path / "s" / "frames.u8"
    frames.write_bytes(frames.read_bytes()[:-10])
    with pytest.raises(StoreError, match="damaged"):
        PackedStore(tmp_path / "s")


def test_interrupted_prepare_resumes_without_redoing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = _tiny()
    raw = write_png_tree(gen, tmp_path / "raw")
    partition = gen.partition()
    calls: list[tuple[str, str, str]] = []
    real = prepare_mod._align_source

    def flaky(args):  # type: ignore[no-untyped-def]
        calls.append(args[0].key)
        if len(calls) == 5:
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle
        return real(args)

    monkeypatch.setattr(prepare_mod, "_align_source", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_store(raw, tmp_path / "store", "synthetic", partition, height=16, workers=1)
    assert not (tmp_path / "store" / "index.json").exists()
    with pytest.raises(StoreError, match="interrupted build"):
        PackedStore(tmp_path / "store")
    calls.clear()
    monkeypatch.setattr(prepare_mod, "_align_source", real)
    calls_after: list[tuple[str, str, str]] = []

    def counting(args):  # type: ignore[no-untyped-def]
        calls_after.append(args[0].key)
        return real(args)

    monkeypatch.setattr(prepare_mod, "_align_source", counting)
    prepare_store(raw, tmp_path / "store", "synthetic", partition, height=16, workers=1)
    assert len(calls_after) == len(gen) - 4  # the 4 finished sequences were not redone
    resumed = PackedStore(tmp_path / "store")
    generate_store(gen, tmp_path / "direct", 16, workers=1)
    direct = PackedStore(tmp_path / "direct")
    assert [r.key for r in resumed.records] == [r.key for r in direct.records]
    for i in range(len(direct)):
        np.testing.assert_array_equal(resumed.sequence(i), direct.sequence(i))


def test_synthetic_is_deterministic_and_seed_dependent() -> None:
    a, b, c = _tiny(), _tiny(), SyntheticGait(seed=4, subjects=4, train_subjects=2)
    np.testing.assert_array_equal(
        a.sequence("001", "nm-01", "090"), b.sequence("001", "nm-01", "090")
    )
    assert not np.array_equal(
        a.sequence("001", "nm-01", "090")[:5], c.sequence("001", "nm-01", "090")[:5]
    )
    frames = a.sequence("002", "cl-01", "000")
    assert frames.dtype == np.uint8 and set(np.unique(frames)) <= {0, 255}


@pytest.mark.parametrize("layout", ["casia_b", "oumvlp", "gait3d", "grew", "pkl"])
def test_every_emitted_layout_converts_into_a_store(tmp_path: Path, layout: str) -> None:
    gen = _tiny()
    raw = write_png_tree(gen, tmp_path / "raw", layout)
    report = prepare_store(
        raw,
        tmp_path / "store",
        layout,
        {"TRAIN_SET": [], "TEST_SET": []},
        layout=layout,
        height=64,
        workers=1,
    )
    store = PackedStore(tmp_path / "store")
    assert len(store) == len(gen)
    assert not report.sequences
    if layout == "grew":
        assert {r.type for r in store.records} == {"00", "01", "02", "03"}
        assert any(r.subject.endswith("train") for r in store.records)
    if layout == "oumvlp":
        assert {r.view for r in store.records} == {"000", "090"}
