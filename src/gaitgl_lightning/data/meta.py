"""Sequence metadata: the one type that ``data`` defines and ``evaluation`` reads.

Evaluation protocols need to know, for every embedded sequence, who walked (subject), under
which condition / sequence name (type, e.g. ``nm-01``, ``00``, ``03``) and from where (view, e.g.
``090``). They must not need the dataset objects themselves, so the data code hands them this
small column store instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SequenceMeta:
    """Per-sequence labels as three equal-length string columns.

    Row ``i`` describes sequence ``i`` of an evaluation set: the row order is the dataset index
    that the evaluation loaders report with each embedding.
    """

    subjects: np.ndarray
    types: np.ndarray
    views: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.subjects)
        if len(self.types) != n or len(self.views) != n:
            raise ValueError(
                "SequenceMeta: columns differ in length "
                f"(subjects={n}, types={len(self.types)}, views={len(self.views)})"
            )

    @classmethod
    def from_lists(
        cls, subjects: Sequence[str], types: Sequence[str], views: Sequence[str]
    ) -> SequenceMeta:
        """Build from Python sequences; every value is stored as ``str``."""
        return cls(
            subjects=np.asarray([str(s) for s in subjects], dtype=object).astype(str),
            types=np.asarray([str(t) for t in types], dtype=object).astype(str),
            views=np.asarray([str(v) for v in views], dtype=object).astype(str),
        )

    def __len__(self) -> int:
        return len(self.subjects)

    def select(self, index: np.ndarray | Sequence[int]) -> SequenceMeta:
        """Rows ``index`` (integer positions or a boolean mask), as a new ``SequenceMeta``."""
        idx = np.asarray(index)
        return SequenceMeta(self.subjects[idx], self.types[idx], self.views[idx])
