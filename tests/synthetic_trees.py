"""The synthetic gait set written in a real dataset's layout (PNG frames, GREW's split, OpenGait
pickles), so that tests run the real readers on data whose answer they know. Test-only: the
package renders the synthetic set straight into its store (``data.prepare.generate_store``)."""

from __future__ import annotations

import pickle
from pathlib import Path

from PIL import Image

from gaitgl_lightning.data.pretreatment import align_sequence
from gaitgl_lightning.data.synthetic import SyntheticGait


def write_png_tree(gen: SyntheticGait, root: str | Path, layout: str = "casia_b") -> Path:
    """Write the synthetic set in a real dataset's layout, so that tests run the real readers.

    ``casia_b``, ``oumvlp`` (type = sequence ``00``/``01``...), ``gait3d``: raw PNG frames;
    ``grew``: train subjects under ``train/``, test subjects' first two types as gallery
    sequences, the rest as probes; ``pkl``: OpenGait pickles of the aligned 64x64 frames.
    """
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
