"""Build a packed store from what users hold (a raw PNG tree or OpenGait pickles), or from
the synthetic generator.

Sequences are aligned in parallel worker processes, written as they finish, and logged, so an
interrupted build resumes without redoing finished sequences (see ``store.StoreWriter``). The
report at the end says what was skipped and why.
"""

from __future__ import annotations

import logging
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
    read_pickle_array,
    read_png,
    walk,
)
from gaitgl_lightning.data.pretreatment import SkipReport, align_sequence
from gaitgl_lightning.data.store import PackedStore, StoreWriter
from gaitgl_lightning.data.synthetic import SyntheticGait

log = logging.getLogger(__name__)

Job = tuple[tuple[str, str, str], np.ndarray, SkipReport]


def _align_source(args: tuple[SequenceSource, str, int, bool]) -> Job:
    """Read and align one sequence (runs in a worker process)."""
    source, layout, height, aligned = args
    report = SkipReport()
    where = "/".join(source.key)
    if not source.files:
        report.add_sequence("no frame files", where)
        return source.key, np.zeros((0, height, height), np.uint8), report
    if layout == "pkl":
        arrays = [read_pickle_array(f) for f in source.files]
        frames: list[np.ndarray] | np.ndarray = arrays[0]
    else:
        frames = []
        for f in source.files:
            try:
                frames.append(read_png(f))
            except DataFormatError as err:
                report.add_frame("unreadable PNG", str(err).split(":")[0])
    if aligned:  # GREW and OpenGait pickles are aligned already: frames pass through
        stack = np.asarray(frames, dtype=np.uint8)
        if stack.ndim != 3 or stack.shape[1:] != (height, height):
            report.add_sequence(f"frames are not {height}x{height}", where)
            stack = np.zeros((0, height, height), np.uint8)
        return source.key, stack, report
    return source.key, align_sequence(frames, height, where=where, report=report), report


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
                if len(frames) == 0:
                    report.add_sequence("no usable frame", "/".join(key))
                else:
                    if len(frames) < 5:
                        report.add_sequence("kept with fewer than 5 frames", "/".join(key))
                    writer.append(*key, frames)
                progress.advance(task)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)


def prepare_store(
    source: str | Path,
    store: str | Path,
    dataset: str,
    partition: Mapping[str, list[str]],
    layout: str = "auto",
    height: int = 64,
    workers: int = 2,
) -> SkipReport:
    """Convert a dataset tree into a packed store (resuming a previous interrupted build)."""
    root = Path(source)
    layout = detect_layout(root) if layout == "auto" else layout
    aligned = layout in ("pkl", "grew")
    writer = StoreWriter(store, height, height)
    done = writer.done
    todo = [s for s in walk(root, layout) if s.key not in done]
    report = SkipReport()
    log.info(
        "prepare %s: %d sequences to align from %s (%s layout)", dataset, len(todo), root, layout
    )
    jobs = ((s, layout, height, aligned) for s in todo)
    _run(jobs, len(todo), _align_source, writer, workers, report, f"prepare {dataset}")
    writer.finish(
        dataset, partition, {"frames": dict(report.frames), "sequences": dict(report.sequences)}
    )
    for line in report.lines():
        log.info("prepare %s: %s", dataset, line)
    return report


def generate_store(
    gen: SyntheticGait, store: str | Path, height: int, workers: int = 2
) -> SkipReport:
    """Render the synthetic dataset straight into a packed store (through the pretreatment)."""
    writer = StoreWriter(store, height, height)
    done = writer.done
    keys = [k for k in gen.sequence_keys() if k not in done]
    report = SkipReport()
    jobs = ((gen, key, height) for key in keys)
    _run(jobs, len(keys), _align_synthetic, writer, workers, report, "generate synthetic gait")
    writer.finish(
        "synthetic",
        gen.partition(),
        {"frames": dict(report.frames), "sequences": dict(report.sequences)},
    )
    return report


def write_png_tree(gen: SyntheticGait, root: str | Path, layout: str = "casia_b") -> Path:
    """Write the synthetic set in a real dataset's layout, so that tests run the real readers.

    ``casia_b``, ``oumvlp`` (type = sequence ``00``/``01``...), ``gait3d``: raw PNG frames;
    ``grew``: train subjects under ``train/``, test subjects' first two types as gallery
    sequences, the rest as probes; ``pkl``: OpenGait pickles of the aligned 64x64 frames.
    """
    import pickle

    from PIL import Image

    root = Path(root)
    train = set(gen.partition()["TRAIN_SET"])
    counters: dict[str, int] = {}
    for subject, seq_type, view, frames in gen.sequences():
        name = f"{seq_type}_{view}"
        if layout in ("casia_b", "gait3d", "pkl"):
            folder = root / subject / seq_type / view
        elif layout == "oumvlp":
            folder = root / f"Silhouette_{view}-{seq_type}" / subject
        elif layout == "grew":
            if subject in train:
                folder = root / "train" / subject / name
            else:
                counters[subject] = counters.get(subject, 0) + 1
                part = "gallery" if counters[subject] <= 2 else "probe"
                folder = root / "test" / part / subject / name
                if part == "probe":
                    folder = root / "test" / "probe" / f"{subject}_{name}"
        else:
            raise ValueError(f"write_png_tree: layout {layout!r} not supported")
        folder.mkdir(parents=True, exist_ok=True)
        if layout == "pkl":
            aligned = align_sequence(frames, 64)
            (folder / f"{view}.pkl").write_bytes(pickle.dumps(aligned, protocol=4))
            continue
        if layout == "grew":  # GREW ships aligned frames
            frames = align_sequence(frames, 64)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i:03d}.png")
    return root


def is_complete(store: str | Path) -> bool:
    """True when ``store`` holds a finished packed store."""
    try:
        PackedStore(store)
    except Exception:
        return False
    return True
