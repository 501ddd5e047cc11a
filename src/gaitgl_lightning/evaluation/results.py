"""Result objects: every number a protocol produced, plus which variant and distance produced it.

Why one class for all protocols: the training module, the checkpoint callback and the report
code only need ``summary()`` (flat floats, ``rank1`` always present), ``to_dict()`` (JSON) and a
table; the per-protocol detail (cross-view matrices, rank-k curves) lives in optional fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ViewTable:
    """Rank-1 accuracy for every (probe view, gallery view) pair of one probe condition.

    ``acc[i, j]`` is the rank-1 of probes seen from ``probe_views[i]`` against the gallery
    sequences seen from ``gallery_views[j]``; NaN marks a pair without any probe to score (it
    is left out of every average and written as ``null`` in JSON).
    """

    probe_views: list[str]
    gallery_views: list[str]
    acc: np.ndarray
    per_probe_view: dict[str, float]
    mean: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes ``None``)."""
        return {
            "probe_views": list(self.probe_views),
            "gallery_views": list(self.gallery_views),
            "acc": [[_json_float(v) for v in row] for row in self.acc.tolist()],
            "per_probe_view": {k: _json_float(v) for k, v in self.per_probe_view.items()},
            "mean": _json_float(self.mean),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViewTable:
        """Inverse of ``to_dict`` (``None`` back to NaN)."""
        acc = [[math.nan if v is None else float(v) for v in row] for row in data["acc"]]
        return cls(
            probe_views=[str(v) for v in data["probe_views"]],
            gallery_views=[str(v) for v in data["gallery_views"]],
            acc=np.asarray(acc, dtype=np.float64).reshape(
                len(data["probe_views"]), len(data["gallery_views"])
            ),
            per_probe_view={
                str(k): math.nan if v is None else float(v)
                for k, v in data["per_probe_view"].items()
            },
            mean=math.nan if data["mean"] is None else float(data["mean"]),
        )


def _json_float(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


@dataclass
class EvalResult:
    """What one protocol run produced.

    ``protocol`` is the registry name (``casia_b``, ...); ``variant`` names the protocol
    variant in words (e.g. ``identical views excluded``); ``distance`` the distance used.
    ``metrics`` is the flat summary. ``view_tables`` holds cross-view matrices by condition
    (CASIA-B, OU-MVLP), ``cmc`` the rank-k curve (rank k -> accuracy, k = 1, 2, ...),
    ``alt_metrics`` the summaries of the protocol's other variants computed in the same pass.
    ``probe_ids`` / ``top_gallery_ids`` keep the top-ranked gallery subjects per probe when a
    protocol needs them for a submission file; they are not part of ``to_dict``.
    ``labels_hidden``: the probes' labels are unknown (GREW's test set), so there is no
    ``rank1``; ``metrics`` holds what can be known (distance statistics) and checkpoint
    selection falls back to the latest. ``submission`` names the submission format the kept
    ranking is for (``grew``), ``files`` what was written from this result (name -> path).
    """

    protocol: str
    variant: str
    distance: str
    metrics: dict[str, float]
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    view_tables: dict[str, ViewTable] = field(default_factory=dict)
    cmc: dict[int, float] = field(default_factory=dict)
    alt_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    probe_ids: np.ndarray | None = None
    top_gallery_ids: np.ndarray | None = None
    labels_hidden: bool = False
    submission: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "rank1" not in self.metrics and not self.labels_hidden:
            raise ValueError(f"{self.protocol}: result has no 'rank1' metric")
        for k, v in self.metrics.items():
            if not math.isfinite(float(v)):
                raise ValueError(f"{self.protocol}: metric {k!r} is not finite ({v})")

    @property
    def rank1(self) -> float:
        """The headline number (what checkpoints are selected by); NaN when labels are hidden."""
        return float(self.metrics.get("rank1", math.nan))

    def summary(self) -> dict[str, float]:
        """Flat ``name -> value``; ``rank1`` is present unless ``labels_hidden``."""
        return {k: float(v) for k, v in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready, with the protocol, variant, distance and options."""
        return {
            "protocol": self.protocol,
            "variant": self.variant,
            "distance": self.distance,
            "options": _jsonable(self.options),
            "summary": self.summary(),
            "labels_hidden": self.labels_hidden,
            "files": dict(self.files),
            # The submission file at the entry's top level too: what the end-of-run summary reads.
            **({"submission": self.files["submission"]} if "submission" in self.files else {}),
            "counts": {k: int(v) for k, v in self.counts.items()},
            "view_tables": {k: t.to_dict() for k, t in self.view_tables.items()},
            "cmc": {str(k): float(v) for k, v in self.cmc.items()},
            "other_variants": {
                name: {k: float(v) for k, v in m.items()} for name, m in self.alt_metrics.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Rebuild a result from ``to_dict`` output (e.g. a run's ``metrics.json`` entry), so
        that the report figures can be drawn after the run. Submission ids are not restored."""
        try:
            return cls(
                protocol=str(data["protocol"]),
                variant=str(data.get("variant", "")),
                distance=str(data.get("distance", "")),
                metrics={str(k): float(v) for k, v in data["summary"].items()},
                options=dict(data.get("options") or {}),
                counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
                view_tables={
                    str(k): ViewTable.from_dict(t)
                    for k, t in (data.get("view_tables") or {}).items()
                },
                cmc={int(k): float(v) for k, v in (data.get("cmc") or {}).items()},
                alt_metrics={
                    str(n): {str(k): float(v) for k, v in m.items()}
                    for n, m in (data.get("other_variants") or {}).items()
                },
                labels_hidden=bool(data.get("labels_hidden", False)),
                files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"not an evaluation result dict ({type(err).__name__}: {err})"
            ) from err

    def table(self) -> Any:
        """A ``rich.table.Table`` of the summary (see ``report`` for the cross-view tables)."""
        from rich.table import Table

        t = Table(title=self.protocol, caption=f"{self.variant}; distance {self.distance}")
        t.add_column("metric")
        t.add_column("value (%)", justify="right")
        for k, v in self.summary().items():
            t.add_row(k, f"{100.0 * v:.2f}")
        return t

    def __rich__(self) -> Any:
        """Let ``rich.print(result)`` show the table."""
        return self.table()


def _jsonable(obj: Any) -> Any:
    """Options may hold tuples / numpy values; make them plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
