"""Build a packed store from what users hold (a raw PNG tree or OpenGait pickles), or from
the synthetic generator.

Sequences are aligned in parallel worker processes, written as they finish, and logged, so an
interrupted build resumes without redoing finished sequences (see ``store.StoreWriter``).

One bad item never aborts the build: an unreadable, foreign, wrongly shaped or typed frame file
or pickle is skipped, and so is a sequence left with no usable frame; the layout is audited for
frames at the wrong depth, stray files and empty folders. Everything skipped is counted by
reason, the first few of each reason are logged, and every one is listed in
``<store>/prepare-report.json``. ``strict=True`` turns damaged files and layout mistakes into an
error (after the report is written, with the finished sequences kept for the next try).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from gaitgl_lightning.data.formats import (
    DataFormatError,
    SequenceSource,
    detect_layout,
    get_layout,
    read_pickle_array,
    read_png,
    walk,
)
from gaitgl_lightning.data.pretreatment import DAMAGE, SkipReport, align_sequence
from gaitgl_lightning.data.store import PackedStore, StoreDamaged, StoreError, StoreWriter, salvage
from gaitgl_lightning.data.synthetic import SyntheticGait
from gaitgl_lightning.errors import PrepareIncomplete
from gaitgl_lightning.fileio import atomic_write_json

log = logging.getLogger(__name__)

Job = tuple[tuple[str, str, str], np.ndarray, SkipReport]

#: The report file every ``prepare`` writes into the store directory.
REPORT = "prepare-report.json"
#: Items of each skip reason named in the log (the report file names all of them).
LOG_EXAMPLES = 3

#: Short skip reasons for reader errors (the reader's message names the file and the detail).
_FILE_REASONS = (
    ("unreadable PNG", "unreadable PNG (truncated, or not an image)"),
    ("rejected pickle", "foreign pickle (holds objects other than a numpy array)"),
    ("truncated or corrupt pickle", "unreadable pickle (truncated or corrupt)"),
    ("empty file", "empty file (0 bytes)"),
    ("cannot read", "unreadable file"),
    ("expected a numpy array", "pickle of the wrong type (not a numpy array)"),
    ("expected uint8", "pickle of the wrong type or shape (not uint8 [T, H, W])"),
    ("empty sequence", "pickle with no frames"),
    ("frames are", "pickle of the wrong frame size"),
)


def _file_reason(err: DataFormatError) -> str:
    text = str(err)
    for key, reason in _FILE_REASONS:
        if key in text:
            return reason
    return text.split(": ", 1)[-1].split(" (")[0]


def _read_frames(
    source: SequenceSource, suffix: str, height: int, aligned: bool, report: SkipReport
) -> list[np.ndarray] | np.ndarray:
    """The usable frames of one sequence; every file that cannot be used goes to ``report``."""
    if suffix == ".pkl":  # one pickled [T, H, W] array per sequence: the first usable one
        size = (height, height) if aligned else (None, None)
        for f in source.files:
            try:
                return read_pickle_array(f, *size)
            except DataFormatError as err:
                report.add("files", _file_reason(err), str(f))
        return []
    frames = []
    for f in source.files:
        try:
            frame = read_png(f)
        except DataFormatError as err:
            report.add("files", _file_reason(err), str(f))
            continue
        if aligned and frame.shape != (height, height):
            reason = f"frame is not {height}x{height} (this layout's frames are aligned)"
            report.add("files", reason, f"{f} ({frame.shape[0]}x{frame.shape[1]})")
            continue
        frames.append(frame)
    return frames


def _align_source(args: tuple[SequenceSource, str, int, bool]) -> Job:
    """Read and align one sequence (runs in a worker process); never raises on bad data."""
    source, suffix, height, aligned = args
    report = SkipReport()
    where = "/".join(source.key)
    stack = np.zeros((0, height, height), np.uint8)
    try:
        frames = _read_frames(source, suffix, height, aligned, report)
        if len(frames) and aligned:  # GREW and OpenGait pickles are aligned: pass through
            stack = np.ascontiguousarray(np.asarray(frames, dtype=np.uint8))
        elif len(frames):
            stack = align_sequence(frames, height, where=where, report=report)
    except Exception as err:  # one bad item never aborts a long job; the report names it
        report.add("files", f"could not be read ({type(err).__name__})", f"{where}: {err}")
    if source.files and len(stack) == 0:
        report.add_sequence("no usable frame", where)
    return source.key, stack, report


def _align_synthetic(args: tuple[SyntheticGait, tuple[str, str, str], int]) -> Job:
    gen, key, height = args
    report = SkipReport()
    frames = align_sequence(gen.sequence(*key), height, where="/".join(key), report=report)
    return key, frames, report


def _run(
    jobs: Iterable[Any],
    total: int,
    work: Callable[[Any], Job],
    writer: StoreWriter,
    workers: int,
    report: SkipReport,
    label: str,
) -> None:
    """Run ``work`` over ``jobs`` in parallel, appending results to the store as they come."""
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    with progress:
        task = progress.add_task(label, total=total)
        results: Iterator[Job]
        if workers > 1:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(work, jobs, chunksize=8)
        else:
            pool = None
            results = map(work, jobs)
        try:
            for key, frames, sub in results:
                report.merge(sub)
                if len(frames):
                    if len(frames) < 5:
                        report.add_sequence("kept with fewer than 5 frames", "/".join(key))
                    writer.append(*key, frames)
                progress.advance(task)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)


def audit_layout(root: Path, sources: Iterable[SequenceSource], suffix: str) -> SkipReport:
    """Name what the layout's walker does not read: frame files at the wrong depth (a view
    folder missing, frames beside sub-folders), stray files, empty folders."""
    report = SkipReport()
    used = {f for s in sources for f in s.files}
    sequence_dirs = {f.parent for f in used}
    misplaced: Counter[Path] = Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        if not dirnames and not filenames:
            report.add("layout", "empty folder", str(folder))
        for name in sorted(filenames):
            path = folder / name
            if path in used:
                continue
            if path.suffix.lower() != suffix:
                report.add("layout", f"stray file (not a *{suffix} frame file)", str(path))
            elif folder not in sequence_dirs:  # (frames the layout ignores on purpose: gei.png)
                misplaced[folder] += 1
    for folder, n in sorted(misplaced.items()):
        reason = f"*{suffix} files at the wrong depth (in no sequence folder of the layout)"
        report.add("layout", reason, f"{folder} ({n} files)")
    return report


def open_writer(store: str | Path, height: int) -> StoreWriter:
    """The writer of ``store``; a damaged finished store is salvaged first, so that the build
    rewrites only the damaged or missing sequences."""
    try:
        PackedStore(store)
    except StoreDamaged as err:
        kept = salvage(store)
        log.warning("%s. Repairing: %d intact sequences kept, the rest is redone", err, kept)
    except StoreError:
        pass  # no store yet, or an interrupted build: the writer resumes it
    return StoreWriter(store, height, height)


def _log_report(report: SkipReport, dataset: str, path: Path) -> None:
    for line in report.lines(examples=LOG_EXAMPLES):
        damaged = any(line.startswith(f"{kind}:") for kind in DAMAGE)
        log.log(logging.WARNING if damaged else logging.INFO, "prepare %s: %s", dataset, line)
    log.info("prepare %s: every skipped item is listed in %s", dataset, path)


def prepare_store(
    source: str | Path,
    store: str | Path,
    dataset: str,
    partition: Mapping[str, list[str]],
    layout: str = "auto",
    height: int = 64,
    workers: int = 2,
    strict: bool = False,
) -> SkipReport:
    """Convert a dataset tree into a packed store (resuming a previous interrupted build).

    Bad items are skipped and reported (see the module docstring); with ``strict`` any damaged
    file or layout mistake raises ``PrepareIncomplete`` instead of finishing the store.
    """
    root = Path(source)
    layout = detect_layout(root) if layout == "auto" else layout
    aligned, suffix = get_layout(layout).aligned, get_layout(layout).suffix
    writer = open_writer(store, height)
    sources = list(walk(root, layout))
    report = audit_layout(root, sources, suffix)
    done = writer.done
    todo = [s for s in sources if s.key not in done]
    log.info(
        "prepare %s: %d sequences to align from %s (%s layout)", dataset, len(todo), root, layout
    )
    jobs = ((s, suffix, height, aligned) for s in todo)
    try:
        _run(jobs, len(todo), _align_source, writer, workers, report, f"prepare {dataset}")
    finally:
        report_path = Path(store) / REPORT
        atomic_write_json(report_path, report.to_dict())
    _log_report(report, dataset, report_path)
    if strict and report.damage:
        writer.close()
        first = next(w[0] for k in DAMAGE for w in report.items[k].values())
        raise PrepareIncomplete(
            f"{root}: {report.damage} damaged files or layout mistakes, e.g. {first} "
            f"(dataset.strict=true); every one is listed in {report_path}: fix them and run "
            "prepare again (finished sequences are kept), or set dataset.strict=false to skip them"
        )
    writer.finish(dataset, partition, report.summary())
    return report


def generate_store(
    gen: SyntheticGait, store: str | Path, height: int, workers: int = 2
) -> SkipReport:
    """Render the synthetic dataset straight into a packed store (through the pretreatment)."""
    writer = open_writer(store, height)
    done = writer.done
    keys = [k for k in gen.sequence_keys() if k not in done]
    report = SkipReport()
    jobs = ((gen, key, height) for key in keys)
    _run(jobs, len(keys), _align_synthetic, writer, workers, report, "generate synthetic gait")
    writer.finish(
        "synthetic",
        gen.partition(),
        report.summary(),
    )
    return report


def store_problem(store: str | Path) -> StoreError | None:
    """None when ``store`` holds a finished, intact packed store; else what is wrong with it
    (``StoreDamaged`` for a damaged one, a plain ``StoreError`` for none or an unfinished one)."""
    try:
        PackedStore(store)
    except StoreError as err:
        return err
    return None


def is_complete(store: str | Path) -> bool:
    """True when ``store`` holds a finished, intact packed store."""
    return store_problem(store) is None
