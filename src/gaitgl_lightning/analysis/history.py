"""Training / evaluation curves of one run as a DataFrame, from the CSV logger or from W&B.

One table shape for both sources, so that every plot works from either: the index is the
trainer's global step, one column per logged metric (``train/loss``, ``val/rank1``, ...), one
row per step holding the last value logged at that step. W&B's own bookkeeping keys
(``_step``, ``_runtime``, ``_timestamp``) are dropped; ``trainer/global_step`` becomes the index.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from gaitgl_lightning.analysis.wandb_offline import is_wandb_run, load_wandb_run

#: Where the CSV logger of ``conf/logger/csv.yaml`` writes, relative to the run dir.
CSV_FILE = Path("csv") / "metrics.csv"
_WANDB_BOOKKEEPING = ("_step", "_runtime", "_timestamp", "trainer/global_step")


def _by_step(frame: pd.DataFrame, step: str, where: Path) -> pd.DataFrame:
    if step not in frame.columns:
        raise ValueError(f"{where}: no {step!r} column to order the history by")
    frame = frame.dropna(subset=[step])
    frame = frame.astype({step: "int64"}).groupby(step, sort=True).last()
    frame.index.name = "step"
    return frame.dropna(axis=1, how="all")


def read_csv_history(path: str | Path) -> pd.DataFrame:
    """The history in a Lightning ``metrics.csv`` (a file, or a run dir holding ``csv/``)."""
    path = Path(path)
    file = path / CSV_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no CSV logger file")
    try:
        frame = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not a readable metrics CSV ({err})") from err
    history = _by_step(frame, "step", file)
    history.attrs["source"] = str(file)
    return history


def read_wandb_history(path: str | Path) -> pd.DataFrame:
    """The history of a W&B run (offline folder, run file, or a ``wandb`` dir with one run)."""
    run = load_wandb_run(path)
    frame = pd.DataFrame(run.history)
    if frame.empty:
        raise ValueError(f"{run.path}: the W&B run logged no scalar history")
    step = "trainer/global_step" if "trainer/global_step" in frame.columns else "_step"
    frame["__step"] = frame[step]
    frame = frame.drop(columns=[c for c in _WANDB_BOOKKEEPING if c in frame.columns])
    history = _by_step(frame, "__step", run.path)
    history.attrs["source"] = str(run.path)
    return history


def read_wandb_segments(runs: list[Path]) -> pd.DataFrame:
    """The history of a run dir's W&B runs, oldest first, joined into one: a resumed run logs
    into a new folder from its checkpoint's step, so each segment is cut where the next one
    starts (the steps a killed run logged after its last checkpoint were logged again)."""
    histories = []
    for run in runs:
        try:
            histories.append(read_wandb_history(run))
        except ValueError:
            if len(runs) == 1:
                raise
            # a segment killed (SIGKILL) before W&B wrote any of its rows: its steps are in the
            # next segment, which resumed from the last checkpoint before them
    if not histories:
        raise ValueError(f"{runs[0].parent}: no W&B run logged any scalar history")
    parts = [
        history[history.index < later.index.min()] if not later.empty else history
        for history, later in itertools.pairwise(histories)
    ]
    joined = pd.concat([*parts, histories[-1]])
    joined = joined.groupby(level=0, sort=True).last().dropna(axis=1, how="all")
    joined.index.name = "step"
    joined.attrs["source"] = ", ".join(str(run) for run in runs)
    return joined


def wandb_dirs(run_dir: str | Path) -> list[Path]:
    """The W&B run folders under a run dir (``wandb/offline-run-*`` or ``wandb/run-*``)."""
    return sorted(p for p in Path(run_dir).glob("wandb/*run-*") if p.is_dir())


def load_history(path: str | Path, prefer: str = "csv") -> pd.DataFrame:
    """The history of ``path``: a run dir, a ``metrics.csv``, or a W&B run folder / file.

    A run dir with both loggers is read from ``prefer`` (``csv`` or ``wandb``), the other one
    when the preferred log is missing.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run dir or log file")
    if prefer not in ("csv", "wandb"):
        raise ValueError(f"prefer must be 'csv' or 'wandb', not {prefer!r}")
    if path.suffix == ".csv":
        return read_csv_history(path)
    if is_wandb_run(path) or path.name == "wandb":
        return read_wandb_history(path)  # a run file, a run folder, or a wandb dir of one run
    has_csv, runs = (path / CSV_FILE).is_file(), wandb_dirs(path)
    if has_csv and (prefer == "csv" or not runs):
        return read_csv_history(path)
    if runs:
        return read_wandb_segments(runs)
    raise FileNotFoundError(
        f"{path}: no training log (neither {CSV_FILE} nor wandb/*run-*); was the run started "
        "with logger=none?"
    )
