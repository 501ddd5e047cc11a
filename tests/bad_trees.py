"""Dataset trees as users hold them (docs: datasets as shipped), with the damage real copies have.

Built here by hand, never by the package's own writer: raw CASIA-B frames are 320x240 PNGs named
``<id>-<type>-<view>-<frame>.png`` in ``<id>/<type>/<view>/``; OpenGait pickles are
``<id>/<type>/<view>/<view>.pkl`` holding uint8 [T, 64, 64]; GREW frames are aligned 64x64 PNGs
in ``train/<id>/<seq>/`` and ``test/gallery/<id>/<seq>/``, probes in ``test/probe/<seq>/``.
Each builder returns the tree and ``{what is wrong: the path the output must name}``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

SUBJECTS = ("001", "002", "003", "004", "005")  # 001-003 train, 004-005 test
TYPES = ("nm-01", "nm-02", "nm-05", "bg-01", "cl-01")
VIEWS = ("000", "090")


def silhouette(height: int, width: int, t: int) -> np.ndarray:
    """A walking blob: a body and a head that sway with the frame index."""
    frame = np.zeros((height, width), np.uint8)
    cx = width // 2 + int(width * 0.03 * np.sin(t))
    top, bottom = height // 6, height - height // 12
    half = max(2, width // 16)
    frame[top + height // 8 : bottom, cx - half : cx + half] = 255
    frame[top : top + height // 8, cx - half // 2 : cx + half // 2] = 255
    return frame


def write_partition(path: Path, train: tuple[str, ...], test: tuple[str, ...]) -> Path:
    path.write_text(json.dumps({"TRAIN_SET": list(train), "TEST_SET": list(test)}))
    return path


def casia_b_raw(root: Path, frames: int = 6) -> Path:
    """A clean raw CASIA-B tree (320x240 frames)."""
    for s in SUBJECTS:
        for t in TYPES:
            for v in VIEWS:
                folder = root / s / t / v
                folder.mkdir(parents=True)
                for i in range(frames):
                    img = Image.fromarray(silhouette(240, 320, i))
                    img.save(folder / f"{s}-{t}-{v}-{i + 1:03d}.png")
    return root


def damage_png_tree(root: Path) -> dict[str, str]:
    """Every kind of damage a raw PNG tree has; returns what the output must name."""
    seq = root / "001" / "nm-01" / "000"
    truncated = seq / "001-nm-01-000-002.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    foreign = seq / "001-nm-01-000-003.png"  # a download that saved an error page
    foreign.write_text("<html><body>403 Forbidden</body></html>")
    empty = root / "001" / "nm-02" / "090" / "001-nm-02-090-001.png"
    empty.write_bytes(b"")
    stray = seq / "Thumbs.db"
    stray.write_bytes(b"\x00" * 16)
    notes = root / "notes.txt"
    notes.write_text("downloaded 2019")
    # A view folder missing: the frames sit one level too high.
    high = root / "002" / "nm-02"
    for f in (high / "090").iterdir():
        f.rename(high / f.name)
    (high / "090").rmdir()
    for f in (high / "000").iterdir():
        f.rename(high / f"x{f.name}")
    (high / "000").rmdir()
    empty_view = root / "003" / "cl-01" / "090"
    for f in empty_view.iterdir():
        f.unlink()
    (root / "006").mkdir()  # an empty subject folder
    blank = root / "004" / "bg-01" / "000"  # real data: a sequence whose frames are all blank
    for f in blank.iterdir():
        Image.fromarray(np.zeros((240, 320), np.uint8)).save(f)
    return {
        "truncated PNG": str(truncated),
        "foreign PNG": str(foreign),
        "empty PNG": str(empty),
        "stray file": str(stray),
        "stray file at the top": str(notes),
        "frames at the wrong depth": str(high),
        "empty view folder": str(empty_view),
        "empty subject folder": str(root / "006"),
    }


class _Payload:
    """A pickle that runs a command when loaded with plain ``pickle.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def opengait_pickles(root: Path, frames: int = 6) -> Path:
    """A clean OpenGait pickle tree (aligned uint8 [T, 64, 64] per sequence)."""
    for s in SUBJECTS:
        for t in TYPES:
            for v in VIEWS:
                folder = root / s / t / v
                folder.mkdir(parents=True)
                seq = np.stack([silhouette(64, 64, i) for i in range(frames)])
                (folder / f"{v}.pkl").write_bytes(pickle.dumps(seq, protocol=4))
    return root


def damage_pickle_tree(root: Path, marker: Path) -> dict[str, str]:
    """Every kind of damage an OpenGait pickle tree has; returns what the output must name."""

    def put(s: str, t: str, v: str, data: bytes) -> str:
        path = root / s / t / v / f"{v}.pkl"
        path.write_bytes(data)
        return str(path)

    good = np.stack([silhouette(64, 64, i) for i in range(4)])
    cases = {
        "truncated pickle": put("001", "nm-01", "000", pickle.dumps(good)[:100]),
        "foreign pickle": put("001", "nm-01", "090", pickle.dumps(_Payload(marker))),
        "float frames": put("001", "nm-02", "000", pickle.dumps(good.astype(np.float32))),
        "one 2-D frame": put("001", "nm-02", "090", pickle.dumps(good[0])),
        "a dict": put("002", "nm-01", "000", pickle.dumps({"sils": good})),
        "32x32 frames": put("002", "nm-01", "090", pickle.dumps(good[:, ::2, ::2].copy())),
        "empty file": put("002", "nm-02", "000", b""),
    }
    high = root / "003" / "nm-02"  # a view folder missing
    (high / "090" / "090.pkl").rename(high / "090.pkl")
    (high / "090").rmdir()
    cases["pickle at the wrong depth"] = str(high)
    stray = root / "003" / "nm-01" / "000" / "000.pkl.bak"
    stray.write_bytes(b"old")
    cases["stray file"] = str(stray)
    return cases


def grew_tree(root: Path) -> dict[str, str]:
    """A small GREW tree (aligned 64x64 frames) with one frame of the wrong size."""
    for i, subject in enumerate(("00001", "00002", "00003")):
        for j in range(2):
            seq = root / "train" / subject / f"tr{i}{j}abcd"
            seq.mkdir(parents=True)
            for t in range(5):
                Image.fromarray(silhouette(64, 64, t)).save(seq / f"{t + 1:03d}.png")
    for i, subject in enumerate(("00004", "00005")):
        for j in range(2):
            seq = root / "test" / "gallery" / subject / f"ga{i}{j}wxyz"
            seq.mkdir(parents=True)
            for t in range(5):
                Image.fromarray(silhouette(64, 64, t)).save(seq / f"{t + 1:03d}.png")
    probe = root / "test" / "probe" / "k3j9q2zz"
    probe.mkdir(parents=True)
    for t in range(5):
        Image.fromarray(silhouette(64, 64, t)).save(probe / f"{t + 1:03d}.png")
    wrong = root / "train" / "00001" / "tr00abcd" / "003.png"
    Image.fromarray(silhouette(48, 48, 2)).save(wrong)  # not aligned to 64x64
    return {"frame of the wrong size": str(wrong)}
