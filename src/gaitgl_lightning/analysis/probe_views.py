"""Rank-1 per probe view, and where the seed-to-seed spread of an arm (or of a paired
difference between two arms) comes from.

A view-based protocol (CASIA-B, OU-MVLP) scores every probe view on its own: rank-1 of the
condition's probes at that view, averaged over the gallery views. Those per-view scores are the
test set's *units*: disjoint sets of probes. Over the seeds of one arm they split the seed sd of
the mean rank-1 in two (a two-way analysis of variance, seeds x units, one value a cell):

- the **network** part: every unit moving together, the seed trained a better or worse network.
  A larger test set does not shrink it; more training or another schedule might;
- the **test-set** part: the scatter of the seed x unit residuals over the units, i.e. which
  probes this seed's network happens to get right. It shrinks as 1 / sqrt(number of units), so
  it is what a test set k times larger would divide by sqrt(k).

``sd(mean)^2 = network^2 + test_set^2`` (the network part estimated as
``(MS_seed - MS_residual) / units``, clipped at 0). The mean is the plain mean over units, which is
the protocol's mean rank-1 when every condition has the same number of views (CASIA-B).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gaitgl_lightning.analysis.ablation import Arm, RunRow, Spread

#: Where the per-probe-view CSVs live, next to the per-run CSVs (``docs/results/probe_views``).
FOLDER = "probe_views"
COLUMNS = ("table", "arm", "seed", "condition", "probe_view", "rank1")


def probe_view_scores(result: Mapping[str, Any]) -> dict[str, float]:
    """``{"NM/000": rank-1 %, ...}`` from an evaluation's ``view_tables`` (empty without them)."""
    scores = {}
    for condition, table in (result.get("view_tables") or {}).items():
        for view, value in (table.get("per_probe_view") or {}).items():
            scores[f"{condition}/{view}"] = 100.0 * float(value)
    return scores


def csv_text(rows: Sequence[RunRow]) -> str:
    """One line per run x condition x probe view (the long form keeps any protocol's views)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        for key, value in row.probe_views.items():
            condition, _, view = key.partition("/")
            writer.writerow([row.table, row.arm, row.seed, condition, view, f"{value:.4f}"])
    return out.getvalue()


def attach(rows: Sequence[RunRow], folder: Path) -> None:
    """Give ``rows`` (read from the per-run CSVs in ``folder``) their probe-view scores from
    ``folder/probe_views/*.csv``, where those exist; rows without any keep an empty dict.
    A file without these columns or with a value that is not a number is a ``ReportError``."""
    from gaitgl_lightning.analysis.ablation import ReportError

    by_run = {(r.table, r.arm, r.seed): r for r in rows}
    for path in sorted((folder / FOLDER).glob("*.csv")):
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ReportError(
                    f"{path}: not a per-probe-view CSV (no column {', '.join(missing)}); the "
                    f"files in {FOLDER}/ have the columns {', '.join(COLUMNS)}"
                )
            for n, line in enumerate(reader, start=2):
                try:
                    row = by_run.get((line["table"], line["arm"], int(line["seed"])))
                    if row is not None:
                        key = f"{line['condition']}/{line['probe_view']}"
                        row.probe_views[key] = float(line["rank1"])
                except ValueError as err:
                    raise ReportError(f"{path}:{n}: {err}") from None


@dataclass(frozen=True)
class SeedNoise:
    """The split of one arm's seed sd of mean rank-1 (points) over ``seeds`` x ``units``."""

    seeds: int
    units: int
    total: float
    network: float
    test_set: float
    unit_residual: float

    def with_units(self, factor: float) -> float:
        """The seed sd a test set ``factor`` times larger (more units alike) would give."""
        return math.sqrt(self.network**2 + self.test_set**2 / factor)


def seed_noise(arm: Arm, ref: Arm | None = None) -> SeedNoise | None:
    """The split for ``arm`` (with ``ref``: for its paired difference ``arm - ref``, per seed
    and unit), or None with fewer than 2 seeds or 2 units shared by every seed."""
    arms = [arm] if ref is None else [arm, ref]
    seeds = sorted(set.intersection(*(set(a.runs) for a in arms)))
    runs = [a.runs[s] for a in arms for s in seeds]
    units = sorted(set.intersection(*(set(r.probe_views) for r in runs))) if runs else []
    if len(seeds) < 2 or len(units) < 2:
        return None

    def value(seed: int, unit: str) -> float:
        score = arm.runs[seed].probe_views[unit]
        return score if ref is None else score - ref.runs[seed].probe_views[unit]

    return _two_way([[value(s, u) for u in units] for s in seeds])


def _two_way(table: Sequence[Sequence[float]]) -> SeedNoise:
    s, u = len(table), len(table[0])
    grand = sum(map(sum, table)) / (s * u)
    seed_means = [sum(row) / u for row in table]
    unit_means = [sum(row[j] for row in table) / s for j in range(u)]
    residual = sum(
        (table[i][j] - seed_means[i] - unit_means[j] + grand) ** 2
        for i in range(s)
        for j in range(u)
    )
    ms_residual = residual / ((s - 1) * (u - 1))
    ms_seed = u * sum((m - grand) ** 2 for m in seed_means) / (s - 1)
    return SeedNoise(
        seeds=s,
        units=u,
        total=math.sqrt(ms_seed / u),
        network=math.sqrt(max(0.0, ms_seed - ms_residual) / u),
        test_set=math.sqrt(ms_residual / u),
        unit_residual=math.sqrt(ms_residual),
    )


def describe(name: str, noise: SeedNoise) -> str:
    """One line: the arm's seed sd, its two parts, and what a 4x larger test set would give."""
    return (
        f"{name}: sd over seeds {noise.total:.2f} = network {noise.network:.2f} (every probe view "
        f"moves together) + test set {noise.test_set:.2f} (seed x view scatter {noise.unit_residual:.2f} "
        f"over {noise.units} probe views), in quadrature; a test set 4x larger: "
        f"{noise.with_units(4):.2f}"
    )


def lines(arms: Iterable[Arm], ref: Arm) -> list[str]:
    """The split of every arm that has one (2+ seeds with probe-view scores), then of every
    arm's paired difference to ``ref``."""
    arms = list(arms)
    out = [describe(a.label, n) for a in arms if (n := seed_noise(a)) is not None]
    pairs = [(a, seed_noise(a, ref)) for a in arms if a is not ref]
    return out + [describe(f"{a.label} - {ref.label}", n) for a, n in pairs if n is not None]


# ------------------------------------------------------------------------------ by probe view
def paired_by_view(arm: Arm, ref: Arm) -> dict[str, Spread]:
    """``{"NM/000": Spread, ...}``: per probe view, the per-seed difference ``arm - ref``.

    Where a mean difference comes from (one view, or all of them) is what the per-condition
    table cannot say; the view is the unit the protocol scores, so this is the finest split
    the committed rows allow."""
    from gaitgl_lightning.analysis.ablation import Spread

    units = sorted({u for run in arm.runs.values() for u in run.probe_views})
    out = {}
    for unit in units:
        diffs = arm.differences(ref, partial(_view_score, unit))
        if diffs:
            out[unit] = Spread.of(diffs)
    return out


def _view_score(unit: str, run: RunRow) -> float | None:
    return run.probe_views.get(unit)


def views_by_condition(arms: Sequence[Arm], conditions: Sequence[str]) -> dict[str, list[str]]:
    """``{condition: [probe views in order]}`` over every run of ``arms``: the table's
    conditions first, in its order, then any other the views name."""
    found: dict[str, set[str]] = {}
    for arm in arms:
        for run in arm.runs.values():
            for unit in run.probe_views:
                condition, _, view = unit.partition("/")
                found.setdefault(condition, set()).add(view)
    order = [c for c in conditions if c in found] + sorted(set(found) - set(conditions))
    return {c: sorted(found[c]) for c in order}
