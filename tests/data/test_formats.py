"""Readers: every bad input gets a clear error that names the file."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from as_shipped import casia_b, casia_b_pkl, gait3d, grew, oumvlp
from PIL import Image

from gaitgl_lightning.data.formats import (
    LAYOUTS,
    DataFormatError,
    Layout,
    SequenceSource,
    detect_layout,
    load_partition,
    read_pickle_array,
    read_png,
    walk,
)


def _pkl(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_pickle_round_trip(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 255, (5, 64, 64), dtype=np.uint8)
    for protocol in (2, 4, 5):
        p = tmp_path / f"a{protocol}.pkl"
        p.write_bytes(pickle.dumps(arr, protocol=protocol))
        np.testing.assert_array_equal(read_pickle_array(p), arr)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (pickle.dumps(np.zeros((3, 64, 64), np.uint8))[:40], "truncated or corrupt"),
        (pickle.dumps(_Payload()), "refusing to load"),
        (pickle.dumps(np.zeros((3, 64, 64), np.float32)), "expected uint8"),
        (pickle.dumps(np.zeros((64, 64), np.uint8)), "expected uint8 \\[T, H, W\\]"),
        (pickle.dumps(np.zeros((0, 64, 64), np.uint8)), "empty sequence"),
        (pickle.dumps({"a": 1}), "expected a numpy array"),
    ],
)
def test_bad_pickles_are_rejected_with_the_file_name(
    tmp_path: Path, content: bytes, message: str
) -> None:
    p = tmp_path / "bad.pkl"
    p.write_bytes(content)
    with pytest.raises(DataFormatError, match=message) as err:
        read_pickle_array(p)
    assert str(p) in str(err.value)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "f.png"
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(DataFormatError, match="unreadable PNG") as err:
        read_png(p)
    assert str(p) in str(err.value)


def test_a_missing_level_yields_no_sequence(tmp_path: Path) -> None:
    # prepare's layout audit names such folders (tests/data/test_bad_inputs.py); the walker
    # itself must not abort the walk over the rest of the tree.
    (tmp_path / "001" / "nm-01").mkdir(parents=True)  # no <view> level
    (tmp_path / "002" / "nm-01" / "000").mkdir(parents=True)
    assert [s.key for s in walk(tmp_path, "casia_b")] == [("002", "nm-01", "000")]


def test_layouts_are_detected(tmp_path: Path) -> None:
    (tmp_path / "ou" / "Silhouette_000-00" / "00001").mkdir(parents=True)
    (tmp_path / "grew" / "train" / "00001" / "s1").mkdir(parents=True)
    (tmp_path / "pk" / "001" / "nm-01" / "090").mkdir(parents=True)
    _pkl(tmp_path / "pk" / "001" / "nm-01" / "090" / "090.pkl", np.zeros((2, 64, 64), np.uint8))
    assert detect_layout(tmp_path / "ou") == "oumvlp"
    assert detect_layout(tmp_path / "grew") == "grew"
    assert detect_layout(tmp_path / "pk") == "pkl"
    (src,) = walk(tmp_path / "ou")
    assert (src.subject, src.type, src.view) == ("00001", "00", "000")


def test_shipped_partitions() -> None:
    casia = load_partition("casia_b")
    assert len(casia["TRAIN_SET"]) == 74 and len(casia["TEST_SET"]) == 50
    ou = load_partition("oumvlp")
    assert (len(ou["TRAIN_SET"]), len(ou["TEST_SET"])) == (5153, 5154)
    with pytest.raises(DataFormatError, match="not found"):
        load_partition("no-such-partition")


#: One tree per registered layout, built as the dataset ships (the registry drives the tests).
LAYOUT_TREES = {
    "casia_b": lambda root: casia_b(root, [1], views=("000",)),
    "pkl": lambda root: casia_b_pkl(root, [1], height=16, views=("000",)),
    "oumvlp": lambda root: oumvlp(root, [1, 2], views=("000",)),
    "grew": lambda root: grew(root, train=1, test=1, height=16, train_seqs=1, distractors=1).root,
    "gait3d": lambda root: gait3d(root, train=1, test=1, seqs=2).root,
}


def test_every_registered_layout_has_a_tree() -> None:
    assert set(LAYOUT_TREES) == set(LAYOUTS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_is_detected_and_walked(name: str, tmp_path: Path) -> None:
    root = LAYOUT_TREES[name](tmp_path)
    assert detect_layout(root) == name
    sources = list(walk(root))
    assert sum(1 for s in sources if s.files) >= 2
    for s in sources:
        assert all(f.suffix == LAYOUTS[name].suffix for f in s.files)


def test_grew_probes_carry_no_subject(tmp_path: Path) -> None:
    tree = grew(tmp_path, train=1, test=2, height=16, train_seqs=1, distractors=1)
    sources = list(walk(tree.root))
    probes = [s for s in sources if s.type == "03"]
    assert {s.subject for s in probes} == {"probe"}
    assert {s.view for s in probes} == set(tree.probe_truth)  # the folder name is the video id
    assert {s.subject for s in sources if s.type == "04"} == {"distractor"}
    assert {s.subject for s in sources if s.type == "00"} == {"00001train"}


def test_a_layout_is_one_class(tmp_path: Path) -> None:
    class Flat(Layout):
        """``<id>_<type>_<view>/*.png``"""

        name = "test_flat"

        def detect(self, root: Path, top: list[Path]) -> bool:
            return all(p.name.count("_") == 2 for p in top)

        def walk(self, root: Path) -> Iterator[SequenceSource]:
            for folder in sorted(root.iterdir()):
                subject, seq_type, view = folder.name.split("_")
                yield SequenceSource(subject, seq_type, view, tuple(sorted(folder.glob("*.png"))))

    try:
        (tmp_path / "001_nm-01_090").mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "001_nm-01_090" / "1.png")
        assert detect_layout(tmp_path) == "test_flat"
        ((src),) = walk(tmp_path)
        assert src.key == ("001", "nm-01", "090")
    finally:
        LAYOUTS.pop("test_flat", None)
