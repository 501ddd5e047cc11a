"""Readers for the layouts users hold: raw silhouette PNG trees, OpenGait pickles, partitions.

Each layout walker yields ``SequenceSource(subject, type, view, files)``: where the frames of one
sequence are, under the names the evaluation protocols use. Every reader error names the file
and the problem instead of surfacing a decoder traceback.

Layouts (``layout=`` of ``prepare``; ``auto`` detects) are ``Layout`` subclasses registered in
``LAYOUTS``: ``oumvlp``, ``grew``, ``gait3d``, ``pkl`` (OpenGait pickles) and ``casia_b`` (any
``<id>/<type>/<view>/*.png`` tree); each class's docstring gives its tree.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from gaitgl_lightning.errors import DataError
from gaitgl_lightning.registration import Registered


class DataFormatError(DataError):
    """A file or folder that is not what its layout promises (the message names it)."""


@dataclass(frozen=True)
class SequenceSource:
    """Where the frames of one sequence are."""

    subject: str
    type: str
    view: str
    files: tuple[Path, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.subject, self.type, self.view)


# ------------------------------------------------------------------------------ frames
def read_png(path: Path) -> np.ndarray:
    """A silhouette frame as grayscale uint8 [H, W]; a clear error for broken files."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataFormatError(f"{path}: unreadable PNG ({err})") from err


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("codecs", "encode"),  # protocol 2 pickles of arrays encode their bytes through it
    ("_codecs", "encode"),
}


class _Refused(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load {module}.{name}: only numpy arrays are accepted")


def read_pickle_array(
    path: Path, height: int | None = None, width: int | None = None
) -> np.ndarray:
    """An OpenGait sequence pickle as uint8 [T, H, W], with a restricted unpickler."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err})") from err
    if not data:
        raise DataFormatError(f"{path}: empty file (0 bytes)")
    try:
        array = _ArrayOnlyUnpickler(io.BytesIO(data)).load()
    except _Refused as err:
        raise DataFormatError(f"{path}: rejected pickle ({err})") from err
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as err:
        raise DataFormatError(
            f"{path}: truncated or corrupt pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(array, np.ndarray):
        raise DataFormatError(f"{path}: holds {type(array).__name__}, expected a numpy array")
    if array.dtype != np.uint8 or array.ndim != 3:
        raise DataFormatError(
            f"{path}: expected uint8 [T, H, W], got {array.dtype} with shape {array.shape}"
        )
    if len(array) == 0:
        raise DataFormatError(f"{path}: empty sequence (0 frames)")
    if (height and array.shape[1] != height) or (width and array.shape[2] != width):
        raise DataFormatError(
            f"{path}: frames are {array.shape[1]}x{array.shape[2]}, expected {height}x{width}"
        )
    return array


# ------------------------------------------------------------------------------ layouts
def _dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir())


def _frames(path: Path, suffix: str = ".png") -> tuple[Path, ...]:
    return tuple(
        sorted(p for p in path.iterdir() if p.suffix.lower() == suffix and p.name != "gei.png")
    )


def _three_level(root: Path, suffix: str) -> Iterator[SequenceSource]:
    """``<subject>/<type>/<view>/<frames>`` (CASIA-B, Gait3D, OpenGait pickles).

    A missing level yields nothing there (``prepare``'s layout audit names those frames)."""
    for subject in _dirs(root):
        for seq_type in _dirs(subject):
            for view in _dirs(seq_type):
                yield SequenceSource(subject.name, seq_type.name, view.name, _frames(view, suffix))


LAYOUTS: dict[str, Layout] = {}


class Layout(Registered, registry=LAYOUTS, kind="layout"):
    """One way a dataset is laid out on disk: how to recognise it and walk its sequences.

    A subclass with a ``name`` registers itself in ``LAYOUTS`` (adding a layout = one class);
    ``detect`` is tried in registration order, ``casia_b`` (any ``<id>/<type>/<view>``) last.
    ``aligned`` layouts hold frames that are aligned already (they pass through unchanged);
    ``suffix`` is the frame file type (``.pkl``: one pickled [T, H, W] array per sequence).
    """

    aligned: ClassVar[bool] = False
    suffix: ClassVar[str] = ".png"
    fallback: ClassVar[bool] = False  # detected when nothing else is

    def detect(self, root: Path, top: list[Path]) -> bool:
        """Whether ``root`` (with sub-folders ``top``) looks like this layout."""
        return False

    def walk(self, root: Path) -> Iterator[SequenceSource]:
        raise NotImplementedError


class OUMVLPLayout(Layout):
    """``Silhouette_<view>-<seq>/<id>/*.png`` (type = ``00`` / ``01``)."""

    name = "oumvlp"

    def detect(self, root: Path, top: list[Path]) -> bool:
        return any(p.name.startswith("Silhouette_") for p in top)

    def walk(self, root: Path) -> Iterator[SequenceSource]:
        for folder in _dirs(root):
            if not folder.name.startswith("Silhouette_") or "-" not in folder.name:
                raise DataFormatError(
                    f"{folder}: expected Silhouette_<view>-<seq> folders (OU-MVLP)"
                )
            view, seq = folder.name[len("Silhouette_") :].split("-", 1)
            for subject in _dirs(folder):
                yield SequenceSource(subject.name, seq, view, _frames(subject))


class GREWLayout(Layout):
    """GREW as unpacked: ``train/<id>/<seq>``, ``test/gallery/<id>/<seq>``,
    ``test/probe/<seq>`` (whose walk it is, is hidden), ``distractor/<seq>``; frames aligned.

    Named as OpenGait's rearranged form names them, so both forms give the same store:
    train subject ``<id>train`` type ``00``; gallery types ``01`` / ``02`` in name order;
    probes subject ``probe`` type ``03``; distractors subject ``distractor`` type ``04``; the
    view is the sequence folder name (the probe's video id in the submission).
    """

    name = "grew"
    aligned = True

    def detect(self, root: Path, top: list[Path]) -> bool:
        return bool({"train", "test"} & {p.name for p in top})

    def walk(self, root: Path) -> Iterator[SequenceSource]:
        if not (root / "train").is_dir() and not (root / "test").is_dir():
            raise DataFormatError(f"{root}: a GREW tree has train/ and test/ folders")
        if (root / "train").is_dir():
            for subject in _dirs(root / "train"):
                for seq in _dirs(subject):
                    yield SequenceSource(f"{subject.name}train", "00", seq.name, _frames(seq))
        gallery = root / "test" / "gallery"
        if gallery.is_dir():
            for subject in _dirs(gallery):
                for i, seq in enumerate(_dirs(subject)):
                    seq_type = f"{min(i + 1, 2):02d}"
                    yield SequenceSource(subject.name, seq_type, seq.name, _frames(seq))
        for folder, who, seq_type in (
            (root / "test" / "probe", "probe", "03"),
            (root / "distractor", "distractor", "04"),
        ):
            if folder.is_dir():
                for seq in _dirs(folder):
                    yield SequenceSource(who, seq_type, seq.name, _frames(seq))


class Gait3DLayout(Layout):
    """``[2D_Silhouettes/]<id>/<camid>_<videoid>/<seq>/*.png`` (type = camera_video, view = seq),
    so a row's ``<id>-<type>-<view>`` is its PROBE_SET entry."""

    name = "gait3d"

    def detect(self, root: Path, top: list[Path]) -> bool:
        return any(p.name == "2D_Silhouettes" for p in top)

    def walk(self, root: Path) -> Iterator[SequenceSource]:
        inner = root / "2D_Silhouettes"
        return _three_level(inner if inner.is_dir() else root, ".png")


class PickleLayout(Layout):
    """OpenGait's ``<id>/<type>/<view>/*.pkl`` (uint8 arrays [T, H, W], aligned)."""

    name = "pkl"
    aligned = True
    suffix = ".pkl"

    def detect(self, root: Path, top: list[Path]) -> bool:
        return any(f.suffix == ".pkl" for f in root.glob("*/*/*/*.pkl"))

    def walk(self, root: Path) -> Iterator[SequenceSource]:
        return _three_level(root, ".pkl")


class CasiaBLayout(Layout):
    """``<id>/<type>-<nn>/<view>/*.png`` (also any ``<id>/<type>/<view>/*.png`` tree)."""

    name = "casia_b"
    fallback = True

    def walk(self, root: Path) -> Iterator[SequenceSource]:
        return _three_level(root, ".png")


def get_layout(name: str) -> Layout:
    """The registered layout ``name``."""
    if name not in LAYOUTS:
        raise DataFormatError(f"unknown layout {name!r}; choose one of {sorted(LAYOUTS)} or auto")
    return LAYOUTS[name]


def detect_layout(root: Path) -> str:
    """Guess the layout of ``root`` from its first levels."""
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a directory")
    top = _dirs(root)
    if not top:
        raise DataFormatError(f"{root}: empty dataset folder")
    for layout in LAYOUTS.values():
        if not layout.fallback and layout.detect(root, top):
            return layout.name
    return next(layout.name for layout in LAYOUTS.values() if layout.fallback)


def walk(root: str | Path, layout: str = "auto") -> Iterator[SequenceSource]:
    """Every sequence of a dataset tree."""
    root = Path(root)
    name = detect_layout(root) if layout == "auto" else layout
    return get_layout(name).walk(root)


# ------------------------------------------------------------------------------ partitions
PARTITION_DIR = Path(__file__).resolve().parent / "partitions"


def load_partition(path: str | Path) -> dict[str, list[str]]:
    """An OpenGait partition JSON (``TRAIN_SET``, ``TEST_SET``, optional ``PROBE_SET``)."""
    path = Path(path)
    if not path.is_file() and (PARTITION_DIR / f"{path}.json").is_file():
        path = PARTITION_DIR / f"{path}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataFormatError(f"{path}: partition file not found") from err
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from err
    missing = {"TRAIN_SET", "TEST_SET"} - set(data)
    if missing:
        raise DataFormatError(f"{path}: partition lacks {sorted(missing)}")
    return {k: [str(x) for x in v] for k, v in data.items() if k.endswith("_SET")}
