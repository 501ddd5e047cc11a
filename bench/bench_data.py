"""Data benchmark: random sequence and clip reads from the packed store vs OpenGait pickles,
and the train loader's batches per second.

Baseline, measured in the same run: the same sequences as an OpenGait pickle tree
(``<id>/<type>/<view>/<view>.pkl``) read as OpenGait's dataset reads them: ``pickle.load`` of
the whole file (its ``DataSet.__loader__``), then the clip's frames picked one by one into an
array (its ``CollateFn``, ``fixed_ordered``). Target: >= 10x more 30-frame clips per second
from the store. OpenGait applies the 64x44 side cut later, in its model's input transform; the
package cuts while copying the clip into the batch (``collate``): that cost is printed on its
own line, for both readers alike. The loader part reports CASIA-B-sized batches
(P x K = 8 x 16, 30 frames, 64x44) per second for 0, 1 and 2 worker processes, to compare with
a GPU step of the ``gaitgl`` network.

Usage: python bench/bench_data.py [--sequences 400]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gaitgl_lightning.data.datasets import TrainClips, collate, copy_frames
from gaitgl_lightning.data.pretreatment import side_cut
from gaitgl_lightning.data.samplers import PKBatchSampler
from gaitgl_lightning.data.store import PackedStore, StoreWriter


def build(root: Path, n: int, rng: np.random.Generator) -> tuple[list[Path], PackedStore]:
    writer = StoreWriter(root / "store", 64, 64)
    paths = []
    for i in range(n):
        subject, seq_type, view = (
            f"{i // 20:03d}",
            f"nm-{i % 10 + 1:02d}",
            f"{(i // 10) % 2 * 90:03d}",
        )
        frames = (rng.random((int(rng.integers(60, 100)), 64, 64)) > 0.8).astype(np.uint8) * 255
        folder = root / "pkl" / subject / seq_type / view
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{view}.pkl"
        path.write_bytes(pickle.dumps(frames, protocol=4))
        paths.append(path)
        writer.append(subject, seq_type, view, frames)
    subjects = sorted({f"{i // 20:03d}" for i in range(n)})
    writer.finish("bench", {"TRAIN_SET": subjects, "TEST_SET": []})
    return paths, PackedStore(root / "store")


def alternated_rates(reads: dict[str, object], order: np.ndarray, block: int) -> dict[str, float]:
    """Reads per second of each reader, timed in alternating blocks of ``block`` reads (so that
    load from other processes hits all alike); the median block rate of each."""
    rates: dict[str, list[float]] = {k: [] for k in reads}
    for s in range(0, len(order) - block + 1, block):
        for name, read in reads.items():
            start = time.perf_counter()
            for i in order[s : s + block]:
                read(int(i))  # type: ignore[operator]
            rates[name].append(block / (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in rates.items()}


def loader_rate(store: PackedStore, workers: int, batches: int) -> float:
    from torch.utils.data import DataLoader

    labels = [int(r.subject) for r in store.records]
    dataset = TrainClips(store, range(len(store)), labels, frames=30)
    sampler = PKBatchSampler(labels, p=8, k=16, seed=0)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not counted
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    assert batch["sils"].shape == (128, 30, 64, 44)
    return batches / (time.perf_counter() - start)


def opengait_load(path: Path) -> np.ndarray:
    """OpenGait's ``DataSet.__loader__`` for one ``.pkl`` (a plain ``pickle.load``)."""
    with open(path, "rb") as f:
        return pickle.load(f)  # the baseline's own reader: files this bench wrote


def opengait_pick(seq: np.ndarray, start: int, frames: int) -> np.ndarray:
    """OpenGait's ``CollateFn.sample_frames`` for ``fixed_ordered`` (sequence longer than the
    clip): a window of the index list, the frames appended one by one, then one array."""
    indices = list(range(len(seq)))[start : start + frames]
    return np.asarray([seq[j] for j in indices])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, default=400)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths, store = build(Path(tmp), args.sequences, rng)
        order = rng.integers(0, args.sequences, args.reads)
        seqs = alternated_rates(
            {
                "pickle": lambda i: opengait_load(paths[i]),
                "store": lambda i: np.array(store.sequence(i)),
            },
            order,
            100,
        )
        print(f"random sequence reads ({args.sequences} sequences of 60-99 frames, 64x64):")
        print(f"  OpenGait pickles (pickle.load):          {seqs['pickle']:10.0f} seq/s")
        print(f"  packed store (memory map, one copy):     {seqs['store']:10.0f} seq/s")
        print(f"  ratio store / pickles: {seqs['store'] / seqs['pickle']:.1f}x (whole sequences)")
        # What a training step reads: a 30-frame window from a random start. Pickles:
        # OpenGait's way (the whole file, then the window's frames picked into an array);
        # store: TrainClips' way (a slice of the map), copied once. The store orders sequences
        # by key; map each pickle to its store record.
        where = {r.key: j for j, r in enumerate(store.records)}
        rec = [where[(p.parts[-4], p.parts[-3], p.parts[-2])] for p in paths]

        def pickle_clip(i: int) -> np.ndarray:
            return opengait_pick(opengait_load(paths[i]), i % 30, 30)

        def store_clip(i: int) -> np.ndarray:
            return np.array(store.clip(rec[i], i % 30, 30))

        def cut(read):  # type: ignore[no-untyped-def]
            """The read, then its 64x44 side cut copied out as ``collate`` copies it."""

            def read_cut(i: int) -> np.ndarray:
                clip = side_cut(read(i))
                out = np.empty(clip.shape, np.uint8)
                copy_frames(out, clip)
                return out

            return read_cut

        np.testing.assert_array_equal(pickle_clip(3), store_clip(3))
        np.testing.assert_array_equal(cut(pickle_clip)(3), side_cut(store_clip(3)))
        reads = {"pickle": pickle_clip, "store": store_clip}
        reads |= {f"{k}+cut": cut(v) for k, v in reads.items()}
        rates = alternated_rates(reads, order, 100)
        print("random 30-frame clip reads, 64x64 (what a training step reads):")
        print(
            f"  OpenGait pickles: {rates['pickle']:10.0f} clips/s   packed store: "
            f"{rates['store']:10.0f} clips/s (medians of alternated blocks of 100)"
        )
        print(f"  ratio store / pickles: {rates['store'] / rates['pickle']:.1f}x (goal >= 10x)")
        print(
            f"  with the 64x44 side cut copied out (collate's copy): pickles "
            f"{rates['pickle+cut']:.0f}, store {rates['store+cut']:.0f} clips/s, ratio "
            f"{rates['store+cut'] / rates['pickle+cut']:.1f}x (OpenGait cuts in its model's "
            "input transform instead)"
        )
        print("train loader, P x K = 8 x 16, 30 frames, 64x44 (uint8):")
        for workers in (0, 1, 2):
            rate = loader_rate(store, workers, 40)
            print(f"  {workers} workers: {rate:6.1f} batches/s ({rate * 128:7.0f} seq/s)")


if __name__ == "__main__":
    main()
