"""Shared by the analysis tests: the session's runs and the figure check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AnalysisRuns:
    root: Path
    single: Path
    retrieval: Path
    ratio_sweep: Path
    model_sweep: Path


def assert_png_not_blank(path: Path) -> None:
    """The file is a PNG image of a real figure: not tiny, not one flat colour."""
    assert path.is_file(), f"missing figure {path}"
    with Image.open(path) as image:
        assert image.format == "PNG", path
        assert image.width >= 200 and image.height >= 150, (path, image.size)
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert grey.std() > 5.0, f"{path}: nearly uniform image"
    assert (grey < 200).mean() > 0.01, f"{path}: almost nothing drawn"
