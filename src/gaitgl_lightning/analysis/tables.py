"""The paper's ablation tables filled from finished runs (Table 5: mask strategies).

Which row a run belongs to is read from its config, not from its name: a model whose stages
have no local branch is "global only" (``model.local: none``), one whose stages have no global
branch is "local only" (``model.global_branch: false``), and every other run is a GLCL model
named by its mask strategy (and dropping ratio d).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from gaitgl_lightning.analysis.runs import RunInfo

STRATEGY_NAMES = {
    "part_fixed": "part-level fixed",
    "part_h": "part-level (H)",
    "part_v": "part-level (V)",
    "strip_h": "strip-level (H)",
    "strip_v": "strip-level (V)",
    "pixel": "pixel-level",
    "none": "no mask, F(X)",
}
#: Strategies whose masks do not depend on d (its value in the config is unused).
RATIO_FREE = ("part_fixed", "none")

#: Table 5 of the paper (CASIA-B, rank-1 %, NM / BG / CL / mean), in the paper's row order.
PAPER_TABLE5: dict[str, tuple[float, float, float, float]] = {
    "global only": (97.4, 94.5, 85.1, 92.3),
    "local only, strip-level (V)": (97.3, 94.8, 85.8, 92.6),
    "part-level fixed": (97.7, 95.0, 86.0, 92.9),
    "part-level (H)": (97.9, 95.6, 86.9, 93.5),
    "part-level (V)": (98.0, 95.6, 87.0, 93.5),
    "strip-level (H)": (97.7, 95.4, 87.2, 93.4),
    "strip-level (V)": (98.0, 95.4, 87.3, 93.6),
    "pixel-level": (97.8, 95.5, 86.3, 93.2),
}
CONDITIONS = {"NM": "NM/rank1", "BG": "BG/rank1", "CL": "CL/rank1", "mean": "rank1"}


def _branches(config: dict[str, Any]) -> list[tuple[str, bool]]:
    """(local, global branch) of each GLCL stage: the stage's own key, else the model's
    (``model.local`` / ``model.global_branch``)."""
    model = config.get("model") or {}
    stages = [s for s in model.get("stages") or [] if isinstance(s, dict)]
    local = str(model.get("local", "mask"))
    glob = model.get("global_branch", True) is not False
    return [
        (str(s.get("local", local)), s.get("global", s.get("global_branch", glob)) is not False)
        for s in stages
        if s.get("kind", "glcl") == "glcl"
    ]


def mask_setting(config: dict[str, Any]) -> tuple[str, float]:
    """(strategy, d) of a run's masks as its config sets them (d NaN when the config has none)."""
    mask = (config.get("model") or {}).get("mask") or config.get("mask") or {}
    if not isinstance(mask, dict):  # an unresolved interpolation: fall back to the mask group
        mask = config.get("mask") or {}
    return str(mask.get("strategy", "none")), float(mask.get("ratio", math.nan))


def table5_row(run: RunInfo) -> tuple[str, float]:
    """The Table 5 row of ``run`` and its d (NaN where d does not apply)."""
    branches = _branches(run.config)
    strategy, ratio = mask_setting(run.config)
    d = math.nan if strategy in RATIO_FREE else ratio
    if branches and all(local == "none" for local, _ in branches):
        return "global only", math.nan
    name = STRATEGY_NAMES.get(strategy, strategy)
    if branches and not any(glob for _, glob in branches):
        return f"local only, {name}", d
    return name, d


def model_kind(run: RunInfo) -> str:
    """``global only``, ``local only`` or ``GLCL``: the three models of the paper's Fig. 5."""
    row, _ = table5_row(run)
    return row if row == "global only" else "local only" if row.startswith("local only") else "GLCL"


def mask_strategy_table(runs: Sequence[RunInfo], which: str = "final") -> pd.DataFrame:
    """Table 5 from ``runs``: rank-1 (%) per condition for each (row, d), with the number of runs
    averaged (seeds) and the paper's mean for the rows it has. Runs without results are left out.
    """
    records = []
    for run in runs:
        summary = run.summary(which)
        if "rank1" not in summary:
            continue
        row, d = table5_row(run)
        values = {k: 100.0 * summary[m] for k, m in CONDITIONS.items() if m in summary}
        records.append({"row": row, "d": d, **values})
    if not records:
        raise ValueError("none of the runs has a rank-1 result (metrics.json / W&B summary)")
    frame = pd.DataFrame(records)
    grouped = frame.groupby(["row", "d"], dropna=False)
    table = grouped.mean(numeric_only=True)
    table["runs"] = grouped.size()
    table = table.reset_index()
    table["paper mean"] = table["row"].map(lambda r: PAPER_TABLE5.get(r, (math.nan,) * 4)[3])
    order = {name: i for i, name in enumerate(PAPER_TABLE5)}
    table["_order"] = table["row"].map(lambda r: order.get(r, len(order)))
    table = table.sort_values(["_order", "row", "d"]).drop(columns="_order")
    return table.reset_index(drop=True)
