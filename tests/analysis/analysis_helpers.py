"""Shared by the analysis tests: the session's runs and the figure check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AnalysisRuns:
    """The session's runs, each made on first use by ``make(name)`` (conftest.py): a test made
    to wait only for the runs it reads, and two xdist workers make two different runs at once.
    ``root`` (the outputs' parent, for the tests that search every run) makes them all."""

    outputs_parent: Path
    make: Callable[[str], Path]

    @property
    def root(self) -> Path:
        for name in ("single", "retrieval", "ratio_sweep", "model_sweep"):
            self.make(name)
        return self.outputs_parent

    @property
    def single(self) -> Path:
        return self.make("single")

    @property
    def retrieval(self) -> Path:
        return self.make("retrieval")

    @property
    def ratio_sweep(self) -> Path:
        return self.make("ratio_sweep")

    @property
    def model_sweep(self) -> Path:
        return self.make("model_sweep")


def assert_png_not_blank(path: Path) -> None:
    """The file is a PNG image of a real figure: not tiny, not one flat colour."""
    assert path.is_file(), f"missing figure {path}"
    with Image.open(path) as image:
        assert image.format == "PNG", path
        assert image.width >= 200 and image.height >= 150, (path, image.size)
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert grey.std() > 5.0, f"{path}: nearly uniform image"
    assert (grey < 200).mean() > 0.01, f"{path}: almost nothing drawn"
