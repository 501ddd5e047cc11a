"""Dataset trees built as the datasets ship (see the shared notes on the four benchmarks), never
with the package's own writer, and hiding what the real data hides.

Frames come from the synthetic walker (a renderer only: one identity per subject). Everything
else is the dataset's layout: folder names, id widths, random GREW sequence names, unlabelled
GREW probes and distractors, Gait3D's PROBE_SET entries, OpenGait's pickles and partitions.
Sizes are tiny; ``height`` is the aligned size for the layouts that ship aligned frames.
"""

from __future__ import annotations

import json
import pickle
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gaitgl_lightning.data.pretreatment import align_sequence
from gaitgl_lightning.data.synthetic import RenderSettings, SyntheticGait

RENDER = SyntheticGait(
    seed=5, subjects=2, train_subjects=1, frames=(6, 8), render=RenderSettings(height=48, width=48)
)
VIEWS = ("000", "018", "036", "054", "072", "090", "108", "126", "144", "162", "180")


def raw_frames(identity: int, take: int, view: int | str = 90, condition: str = "nm") -> np.ndarray:
    """A raw silhouette sequence (uint8 [T, 48, 48], 0 / 255) of walker ``identity``."""
    return RENDER.sequence(f"w{identity}", f"{condition}-{take:02d}", str(view))


def aligned_frames(identity: int, take: int, height: int, view: int | str = 90) -> np.ndarray:
    """As the datasets that ship aligned frames hold them: square, ``height`` high."""
    return align_sequence(raw_frames(identity, take, view), height)


def _pngs(folder: Path, frames: np.ndarray, name: str = "{i:03d}.png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / name.format(i=i + 1))


def _pickle(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(np.ascontiguousarray(frames, dtype=np.uint8), protocol=4))


def _random_name(rng: np.random.Generator) -> str:
    chars = np.asarray(list(string.ascii_lowercase + string.digits))
    return "".join(rng.choice(chars, 8))


# --------------------------------------------------------------------------- CASIA-B
CASIA_TYPES = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "cl-01")


def casia_b(root: Path, ids: list[int], views: tuple[str, ...] = ("000", "090")) -> Path:
    """``CASIA-B/<id>/<type>/<view>/<id>-<type>-<view>-<frame>.png``; like the real download,
    one frame of each sequence is blank and one sequence folder is empty."""
    top = root / "CASIA-B"
    for sid in ids:
        for take, seq_type in enumerate(CASIA_TYPES):
            for view in views:
                cond = seq_type[:2]
                frames = raw_frames(sid, take, view, cond)
                frames[0] = 0  # background subtraction left nothing
                sub = f"{sid:03d}"
                _pngs(top / sub / seq_type / view, frames, f"{sub}-{seq_type}-{view}-{{i:03d}}.png")
    (top / f"{ids[0]:03d}" / "bg-02" / views[0]).mkdir(parents=True)  # an empty sequence
    return top


def casia_b_pkl(
    root: Path, ids: list[int], height: int, views: tuple[str, ...] = ("000", "090")
) -> Path:
    """OpenGait's pickles: ``<id>/<type>/<view>/<view>.pkl``, uint8 [T, h, h] aligned."""
    top = root / "CASIA-B-pkl"
    for sid in ids:
        for take, seq_type in enumerate(CASIA_TYPES):
            for view in views:
                frames = align_sequence(raw_frames(sid, take, view, seq_type[:2]), height)
                _pickle(top / f"{sid:03d}" / seq_type / view / f"{view}.pkl", frames)
    return top


# --------------------------------------------------------------------------- OU-MVLP
def oumvlp(root: Path, ids: list[int], views: tuple[str, ...] = ("000", "090", "180")) -> Path:
    """``OUMVLP/Silhouette_<view>-<seq>/<id>/<frame>.png``; not every id has every view: the
    last id lacks its gallery sequence (``01``) in the first view."""
    top = root / "OUMVLP"
    for view in views:
        for seq in ("00", "01"):
            for sid in ids:
                if sid == ids[-1] and seq == "01" and view == views[0]:
                    continue
                frames = raw_frames(sid, int(seq), view)
                _pngs(top / f"Silhouette_{view}-{seq}" / f"{sid:05d}", frames, "{i:04d}.png")
    return top


# --------------------------------------------------------------------------- GREW
@dataclass
class GrewTree:
    root: Path
    train_ids: list[str]
    test_ids: list[str]
    probe_truth: dict[str, str] = field(default_factory=dict)  # probe folder -> subject (hidden)
    partition: Path | None = None


def grew(
    root: Path,
    train: int,
    test: int,
    height: int,
    train_seqs: int = 4,
    probes_per_id: int = 2,
    distractors: int = 3,
) -> GrewTree:
    """GREW unpacked: ``train/<id>/<seq>/``, ``test/gallery/<id>/<seq>/`` (2 each),
    ``test/probe/<seq>/`` and ``distractor/<seq>/``; every ``<seq>`` is a random 8-character
    name, and nothing on disk says whose walk a probe is. Frames are aligned squares."""
    rng = np.random.default_rng(7)
    top = root / "GREW"
    tree = GrewTree(top, [], [])
    for k in range(train):
        sid = f"{k + 1:05d}"
        tree.train_ids.append(sid)
        for take in range(train_seqs):
            _pngs(top / "train" / sid / _random_name(rng), aligned_frames(k, take, height))
    for k in range(test):
        sid = f"{k + 1:05d}"  # test ids restart at 00001: they are other people
        tree.test_ids.append(sid)
        identity = 1000 + k
        for take in range(2):
            _pngs(
                top / "test" / "gallery" / sid / _random_name(rng),
                aligned_frames(identity, take, height),
            )
        for take in range(2, 2 + probes_per_id):
            name = _random_name(rng)
            tree.probe_truth[name] = sid
            _pngs(top / "test" / "probe" / name, aligned_frames(identity, take, height))
    for k in range(distractors):
        _pngs(top / "distractor" / _random_name(rng), aligned_frames(5000 + k, 0, height))
    return tree


def grew_pkl(root: Path, train: int, test: int, height: int, train_seqs: int = 4) -> GrewTree:
    """OpenGait's rearranged GREW: ``<id>train/00/<seq>/<seq>.pkl``, ``<id>/01|02/<seq>/``,
    ``probe/03/<seq>/`` (subject literally ``probe``), and its partition JSON, whose TEST_SET
    lists ``probe``."""
    rng = np.random.default_rng(8)
    top = root / "GREW-pkl"
    tree = GrewTree(top, [], [])
    for k in range(train):
        sid = f"{k + 1:05d}train"
        tree.train_ids.append(sid)
        for take in range(train_seqs):
            seq = _random_name(rng)
            _pickle(top / sid / "00" / seq / f"{seq}.pkl", aligned_frames(k, take, height))
    for k in range(test):
        sid = f"{k + 1:05d}"
        tree.test_ids.append(sid)
        for take, seq_type in enumerate(("01", "02")):
            seq = _random_name(rng)
            _pickle(
                top / sid / seq_type / seq / f"{seq}.pkl", aligned_frames(1000 + k, take, height)
            )
        seq = _random_name(rng)
        tree.probe_truth[seq] = sid
        _pickle(top / "probe" / "03" / seq / f"{seq}.pkl", aligned_frames(1000 + k, 2, height))
    tree.partition = root / "GREW.json"
    tree.partition.write_text(
        json.dumps({"TRAIN_SET": tree.train_ids, "TEST_SET": [*tree.test_ids, "probe"]})
    )
    return tree


# --------------------------------------------------------------------------- Gait3D
@dataclass
class Gait3DTree:
    root: Path
    partition: Path
    probe_set: list[str]


def gait3d(root: Path, train: int, test: int, seqs: int = 4) -> Gait3DTree:
    """``Gait3D/2D_Silhouettes/<id>/camid<c>_videoid<v>/seq<k>/*.png`` (4-digit ids) and the
    official partition form: TRAIN_SET, TEST_SET and PROBE_SET entries
    ``<id>-camid<c>_videoid<v>-seq<k>``, one per test id, naming its LAST sequence (not the
    first one in name order)."""
    top = root / "Gait3D"
    ids = [f"{k + 1:04d}" for k in range(train + test)]
    probe_set = []
    for n, sid in enumerate(ids):
        keys = []
        for take in range(seqs):
            video = f"camid{10 + take % 2}_videoid{take // 2 + 1}"
            seq = f"seq{take % 2}"
            keys.append(f"{sid}-{video}-{seq}")
            _pngs(top / "2D_Silhouettes" / sid / video / seq, raw_frames(n, take, 30 * take))
        if n >= train:
            probe_set.append(keys[-1])
    partition = root / "Gait3D.json"
    partition.write_text(
        json.dumps({"TRAIN_SET": ids[:train], "TEST_SET": ids[train:], "PROBE_SET": probe_set})
    )
    return Gait3DTree(top, partition, probe_set)


# --------------------------------------------------------------------------- tiny runs
def tiny_run(store: Path, num_classes: int, height: int = 16, steps: int = 6) -> list[str]:
    """Overrides that shrink a paper preset to a CPU test: tiny widths, tiny batches, few
    steps, CSV logs, one process (DDP tests add ``trainer=ddp_cpu``)."""
    return [
        "trainer=cpu",
        "logger=csv",
        "model=tiny",
        f"model.input_size=[{height},{height * 3 // 4}]",
        f"dataset.height={height}",
        f"dataset.store={store}",
        f"dataset.num_classes={num_classes}",
        "dataset.P=3",
        "dataset.K=2",
        "dataset.frames=8",
        "dataset.num_workers=0",
        "dataset.prepare_workers=1",
        f"trainer.max_steps={steps}",
        f"eval_every={steps // 2}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "callbacks.progress=null",
    ]


# --------------------------------------------------------------------------- OpenGait
def _glconv(prefix: str, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{b}_conv3d.conv3d.weight": (cout, cin, 3, 3, 3) for b in ("global", "local")}


def opengait_shallow_state(
    classes: int, seed: int = 1, gem_p: float = 3.0, tracked: int = 10
) -> dict[str, Any]:
    """Random weights under OpenGait's CASIA-B GaitGL key names and shapes (channels
    32/64/128, the layer table of its GaitGL), without DDP's ``module.`` prefix."""
    import torch

    shapes: dict[str, tuple[int, ...]] = {
        "conv3d.0.conv3d.weight": (32, 1, 3, 3, 3),
        "LTA.0.conv3d.weight": (32, 32, 3, 1, 1),
        **_glconv("GLConvA0", 32, 64),
        **_glconv("GLConvA1", 64, 128),
        **_glconv("GLConvB2", 128, 128),
        "HPP.p": (1,),
        "Head0.fc_bin": (64, 128, 128),
        "Bn.weight": (128,),
        "Bn.bias": (128,),
        "Bn.running_mean": (128,),
        "Bn.running_var": (128,),
        "Head1.fc_bin": (64, 128, classes),
    }
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}
    state["HPP.p"] = torch.tensor([gem_p])
    state["Bn.running_var"] = torch.rand(128, generator=g) + 0.5
    state["Bn.num_batches_tracked"] = torch.tensor(tracked)
    return state


def opengait_gaitgl_checkpoint(path: Path, classes: int, iteration: int = 80000) -> Path:
    """A checkpoint as OpenGait saves its CASIA-B GaitGL (``GaitGL-80000.pt``): the state dict
    under ``model`` with OpenGait's module names (DDP's ``module.`` prefix included), the
    optimizer and scheduler states, and ``iteration``."""
    import torch

    state = opengait_shallow_state(classes, seed=11, gem_p=6.5, tracked=iteration)
    model = {f"module.{k}": v for k, v in state.items()}
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [70000], gamma=0.1)
    optimizer, scheduler = opt.state_dict(), sched.state_dict()  # milestones: a Counter
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": model, "optimizer": optimizer, "scheduler": scheduler, "iteration": iteration},
        path,
    )
    return path
