"""The CSV curves of a run, kept whole across a stop and a resume.

Why: Lightning's ``CSVLogger`` deletes the ``metrics.csv`` it finds when it starts, so a resumed
run lost every step before the resume point; and it writes every 100 steps, so a killed run lost
the rows since the last write. :class:`ResumableCSVLogger` keeps the rows logged before the
checkpoint a run resumes from, drops the ones logged after it (the resumed run logs those steps
again), writes every row as it is logged (appended, a few hundred bytes), and replaces a row the
resumed run logs again at the same step (an evaluation repeated at the resume point), so that the
file holds every logged step once.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from gaitgl_lightning.fileio import atomic_write_text

log = logging.getLogger(__name__)


def _row_key(row: dict[str, Any]) -> tuple[str, frozenset[str]]:
    """A logged row's identity: its step and which metrics it holds (train or val row)."""
    keys = frozenset(
        k for k, v in row.items() if k not in ("step", "epoch") and v not in ("", None)
    )
    return str(row.get("step", "")), keys


class KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps the file's rows before ``keep_before`` (a step).

    Lightning's writer deletes the ``metrics.csv`` it finds when it starts, and has no public
    switch for it. So the file is first moved aside (one atomic rename, to ``metrics.csv.kept``),
    the writer starts on a dir without it, and the kept rows are written back (atomically) before
    the aside copy goes. A run killed in between finds the aside copy at its next start and
    reads that: no step is lost at any point.
    """

    ASIDE_SUFFIX = ".kept"

    def __init__(self, log_dir: str, keep_before: int | None) -> None:
        self.keep_before = keep_before
        self._kept: list[dict[str, str]] = []
        path = Path(log_dir, self.NAME_METRICS_FILE)
        aside = path.with_name(path.name + self.ASIDE_SUFFIX)
        if path.is_file():
            os.replace(path, aside)
        with warnings.catch_warnings():  # "... will be deleted": not this file, set aside
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            super().__init__(log_dir)
        self._load_kept(aside)
        aside.unlink(missing_ok=True)

    def _load_kept(self, path: Path) -> None:
        if not path.is_file():
            return
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        limit = -1 if self.keep_before is None else self.keep_before
        kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) < limit]
        if len(kept) < len(rows):
            log.info(
                "%s: kept the %d rows logged before step %d, dropped %d logged after it",
                self.metrics_file_path,
                len(kept),
                max(limit, 0),
                len(rows) - len(kept),
            )
        self.metrics_keys = sorted(set(fields))
        self._kept = kept
        self._rewrite(kept)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, buffer.getvalue())

    def save(self) -> None:
        """Append the new rows; a row logged again at a kept row's step replaces that row."""
        if self._kept and self.metrics:
            again = {_row_key(r) for r in self.metrics}
            kept = [r for r in self._kept if _row_key(r) not in again]
            if len(kept) < len(self._kept):
                self._kept = kept
                self._record_new_keys()
                self._rewrite(kept)
        super().save()


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (see the module docstring).

    The task that resumes calls :meth:`resume_at` with the checkpoint's step before training
    starts; a fresh run in a dir that holds an old file starts it anew, as Lightning's does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("flush_logs_every_n_steps", 1)
        super().__init__(*args, **kwargs)
        self._keep_before: int | None = None

    def resume_at(self, step: int) -> None:
        """Keep the rows logged before ``step`` (the resumed checkpoint's global step)."""
        self._keep_before = int(step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, KeepingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeepingWriter(self.log_dir, self._keep_before)
        return self._experiment


def previous_wandb_id(run_dir: Path) -> str | None:
    """The id of the W&B run a run dir already holds (``wandb/[offline-]run-<time>-<id>``)."""
    from gaitgl_lightning.analysis.history import wandb_dirs

    runs = wandb_dirs(run_dir)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def continue_curves(loggers: list[Any], run_dir: Path, step: int) -> None:
    """Make a resumed run's loggers continue its curves at ``step``: the CSV file keeps the rows
    before it; W&B logs into the run's own W&B run (same id, so that ``wandb sync`` appends to
    it; the reader of ``analysis`` joins the segments, each cut at the next one's first step)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.resume_at(step)
        elif isinstance(logger, WandbLogger) and logger._experiment is None:
            wandb_id = previous_wandb_id(run_dir)
            if wandb_id:
                logger._wandb_init.update(id=wandb_id, resume="allow")
                logger._id = wandb_id
                backfill_wandb(logger, run_dir, step)


def rows_missing_from_wandb(run_dir: Path, step: int) -> pd.DataFrame:
    """The CSV rows before ``step`` that the run's earlier W&B segments do not hold.

    Why: W&B's offline writer loses the rows it had not flushed when its process is killed
    (SIGKILL, an OOM kill, a node lost), so the killed segment ends before the checkpoint the run
    resumes from; the CSV file, written row by row, still holds them.
    """
    from gaitgl_lightning.analysis.history import read_csv_history, read_wandb_segments, wandb_dirs

    try:
        csv_rows = read_csv_history(run_dir)
    except (ValueError, FileNotFoundError):  # no CSV logger, or nothing readable in it
        return pd.DataFrame()
    try:
        last = int(read_wandb_segments(wandb_dirs(run_dir)).index.max())
    except ValueError:  # no earlier segment wrote a row
        last = -1
    return csv_rows[(csv_rows.index > last) & (csv_rows.index < step)]


def backfill_wandb(logger: Any, run_dir: Path, step: int) -> None:
    """Log into the resumed W&B segment, first, the rows a killed segment lost (see above), at
    their own steps, so that the joined W&B curves hold every step once, as the CSV does."""
    missing = rows_missing_from_wandb(run_dir, step)
    for at, row in missing.iterrows():
        logger.log_metrics({k: float(v) for k, v in row.dropna().items()}, step=int(at))
    if len(missing):
        log.info(
            "W&B: logged again the %d rows (steps %d-%d) that the stopped run's W&B writer lost",
            len(missing),
            int(missing.index.min()),
            int(missing.index.max()),
        )
