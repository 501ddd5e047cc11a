"""A procedurally generated gait dataset: the package's embedded default.

No real gait dataset may be downloaded here, so the package renders one. Each identity is a
seeded articulated walker: body proportions (leg, thigh / shin split, torso, arm lengths, limb
widths, head size), stride (hip and knee swing), cadence, arm swing and lateral sway. Each
sequence starts at its own gait-cycle phase. Bodies are rendered as binary silhouettes of
capsules, orthographically projected from several viewing angles (yaw), with CASIA-B-like
covariates: ``nm`` (normal), ``bg`` (a carried bag), ``cl`` (a long coat that hides the thighs
and widens the torso), plus boundary noise and missing pixels.

Names follow CASIA-B (subjects ``001``..., types ``nm-01``..``nm-06``, ``bg-01``..``bg-02``,
``cl-01``..``cl-02``, views such as ``090``) so that the CASIA-B protocol runs unchanged.
Everything derives from one seed: the same seed gives the same pixels.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from gaitgl_lightning.errors import ConfigError

from .synthetic_scene import realistic_sequence

#: CASIA-B sequence types, in order.
SEQUENCE_TYPES = (
    *(f"nm-{i:02d}" for i in range(1, 7)),
    "bg-01",
    "bg-02",
    "cl-01",
    "cl-02",
)

#: Preset sizes: ``tiny`` for tests (seconds), ``default`` for the main job (CPU, minutes).
SIZES: dict[str, dict[str, object]] = {
    "tiny": {
        "subjects": 12,
        "train_subjects": 8,
        "views": ("072", "090", "108"),
        "types": ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "bg-01", "cl-01"),
        "frames": (16, 22),
    },
    "default": {
        "subjects": 90,
        "train_subjects": 60,
        "views": ("018", "054", "090", "126", "162"),
        "types": SEQUENCE_TYPES,
        "frames": (28, 40),
    },
    # CASIA-B's shape with the realistic scene (docs/data.md, "The casia preset").
    "casia": {
        "subjects": 124,
        "train_subjects": 74,
        "views": tuple(f"{v:03d}" for v in range(0, 181, 18)),
        "types": SEQUENCE_TYPES,
        "frames": (30, 44),
        "scene": "casia",
    },
}


def _rng(*keys: int | str) -> np.random.Generator:
    """A generator for a tuple of keys (why: every (seed, subject, type, view) gets its own
    stream, so adding a view or a subject does not change the others' pixels)."""
    words = [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


@dataclass(frozen=True)
class Walker:
    """The identity of one synthetic subject (all lengths in body-height units)."""

    leg: float
    thigh_ratio: float
    torso: float
    arm: float
    head: float
    hip_width: float
    shoulder_width: float
    thigh_w: float
    shin_w: float
    arm_w: float
    torso_w: float
    hip_swing: float  # radians, amplitude of thigh swing
    knee_flex: float  # radians, peak knee flexion
    arm_swing: float  # radians
    cadence: float  # frames per gait cycle
    sway: float  # lateral torso sway amplitude
    bob: float  # vertical bob amplitude
    lean: float  # forward torso lean (radians)

    @classmethod
    def sample(cls, rng: np.random.Generator, spread: float = 1.0) -> Walker:
        """Draw an identity; ``spread`` scales how different identities are (difficulty)."""

        def u(lo: float, hi: float) -> float:
            mid = (lo + hi) / 2
            return float(mid + (rng.uniform(lo, hi) - mid) * spread)

        return cls(
            leg=u(0.44, 0.54),
            thigh_ratio=u(0.44, 0.56),
            torso=u(0.27, 0.33),
            arm=u(0.30, 0.40),
            head=u(0.055, 0.075),
            hip_width=u(0.07, 0.12),
            shoulder_width=u(0.12, 0.19),
            thigh_w=u(0.040, 0.065),
            shin_w=u(0.028, 0.045),
            arm_w=u(0.022, 0.036),
            torso_w=u(0.07, 0.11),
            hip_swing=u(0.30, 0.52),
            knee_flex=u(0.45, 1.05),
            arm_swing=u(0.15, 0.65),
            cadence=u(20.0, 30.0),
            sway=u(0.0, 0.03),
            bob=u(0.005, 0.025),
            lean=u(-0.05, 0.15),
        )


@dataclass(frozen=True)
class RenderSettings:
    """How frames are drawn: canvas size and the noise that makes silhouettes realistic."""

    height: int = 64
    width: int = 64
    boundary_noise: float = 0.12  # probability to flip a pixel on the silhouette's boundary
    missing_blobs: float = 1.5  # mean number of holes per frame
    jitter: float = 0.04  # per-sequence variation of stride / cadence / swing (same identity)


@dataclass
class SyntheticGait:
    """The generator: ``sequences()`` yields ``(subject, type, view, frames uint8 [T, H, W])``."""

    seed: int = 0
    subjects: int = 90
    train_subjects: int = 60
    views: tuple[str, ...] = ("018", "054", "090", "126", "162")
    types: tuple[str, ...] = SEQUENCE_TYPES
    frames: tuple[int, int] = (28, 40)
    identity_spread: float = 1.0
    render: RenderSettings = field(default_factory=RenderSettings)
    # "basic": orthographic capsules, one bag and one coat (tiny, default); "casia": the
    # perspective scene with per-subject outfits and segmentation faults (synthetic_scene.py).
    scene: str = "basic"

    @classmethod
    def preset(cls, size: str, seed: int = 0, **overrides: object) -> SyntheticGait:
        """The ``tiny`` / ``default`` presets, with optional overrides."""
        if size not in SIZES:
            raise ConfigError(f"synthetic dataset size {size!r} is not one of {sorted(SIZES)}")
        kwargs = {**SIZES[size], **overrides}
        render = kwargs.pop("render", None)
        gen = cls(seed=seed, **kwargs)  # type: ignore[arg-type]
        if isinstance(render, dict):
            gen.render = RenderSettings(**render)
        elif isinstance(render, RenderSettings):
            gen.render = render
        return gen

    def __post_init__(self) -> None:
        self.views = tuple(str(v) for v in self.views)
        self.types = tuple(str(t) for t in self.types)
        self.frames = (int(self.frames[0]), int(self.frames[1]))
        if not 0 < self.train_subjects < self.subjects:
            raise ConfigError(
                f"synthetic dataset: train_subjects={self.train_subjects} must be between 1 "
                f"and subjects-1={self.subjects - 1}"
            )
        if self.frames[0] < 1 or self.frames[1] < self.frames[0]:
            raise ConfigError(f"synthetic dataset: bad frame range {self.frames}")
        if self.scene not in ("basic", "casia"):
            raise ConfigError(f"synthetic dataset: scene {self.scene!r} is not basic or casia")

    # ------------------------------------------------------------------------ metadata
    @property
    def subject_ids(self) -> list[str]:
        return [f"{i:03d}" for i in range(1, self.subjects + 1)]

    def partition(self) -> dict[str, list[str]]:
        """CASIA-B style split: the first ``train_subjects`` ids train, the rest test."""
        ids = self.subject_ids
        return {"TRAIN_SET": ids[: self.train_subjects], "TEST_SET": ids[self.train_subjects :]}

    def sequence_keys(self) -> Iterator[tuple[str, str, str]]:
        for subject in self.subject_ids:
            for seq_type in self.types:
                for view in self.views:
                    yield subject, seq_type, view

    def __len__(self) -> int:
        return self.subjects * len(self.types) * len(self.views)

    # ------------------------------------------------------------------------ generation
    def walker(self, subject: str) -> Walker:
        return Walker.sample(_rng(self.seed, "walker", subject), self.identity_spread)

    def sequence(self, subject: str, seq_type: str, view: str) -> np.ndarray:
        """Render one sequence: uint8 [T, H, W], values 0 / 255."""
        if self.scene == "casia":
            return realistic_sequence(
                lambda *keys: _rng(self.seed, *keys),
                self.walker(subject),
                (subject, seq_type, view),
                self.frames,
            )
        rng = _rng(self.seed, "sequence", subject, seq_type, view)
        walker = _jittered(self.walker(subject), rng, self.render.jitter)
        n_frames = int(rng.integers(self.frames[0], self.frames[1] + 1))
        phase0 = float(rng.uniform(0, 2 * np.pi))
        t = np.arange(n_frames, dtype=np.float64)
        phase = phase0 + 2 * np.pi * t / walker.cadence
        condition = seq_type.split("-")[0].lower()
        segments, widths = _body_segments(walker, phase, condition, rng)
        yaw = np.deg2rad(float(view))
        frames = _render(segments, widths, yaw, self.render, rng)
        return frames

    def sequences(self) -> Iterator[tuple[str, str, str, np.ndarray]]:
        for subject, seq_type, view in self.sequence_keys():
            yield subject, seq_type, view, self.sequence(subject, seq_type, view)


def _jittered(w: Walker, rng: np.random.Generator, amount: float) -> Walker:
    """Per-sequence variation of the dynamic parameters (the same person never walks twice
    exactly the same way)."""

    def j(v: float) -> float:
        return float(v * (1.0 + rng.normal(0.0, amount)))

    return Walker(
        **{
            **w.__dict__,
            "hip_swing": j(w.hip_swing),
            "knee_flex": j(w.knee_flex),
            "arm_swing": j(w.arm_swing),
            "cadence": j(w.cadence),
        }
    )


def _body_segments(
    w: Walker, phase: np.ndarray, condition: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """3-D capsule segments per frame: ([T, S, 2, 3] end points, [S] or [T, S] radii).

    Axes: x forward (walking direction), y lateral, z up; the feet touch z = 0.
    """
    n = len(phase)
    z_hip = w.leg + w.bob * np.cos(2 * phase)
    sway = w.sway * np.sin(phase)
    hip_c = np.stack([np.zeros(n), sway, z_hip], axis=-1)
    thigh, shin = w.leg * w.thigh_ratio, w.leg * (1 - w.thigh_ratio)

    def leg(side: float, ph: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hip = hip_c + np.array([0.0, side * w.hip_width / 2, 0.0])
        a = w.hip_swing * np.sin(ph)
        b = w.knee_flex * np.clip(np.sin(ph + 1.2), 0, None) ** 1.5
        knee = hip + thigh * np.stack([np.sin(a), np.zeros(n), -np.cos(a)], axis=-1)
        ankle = knee + shin * np.stack([np.sin(a - b), np.zeros(n), -np.cos(a - b)], axis=-1)
        return hip, knee, ankle

    l_hip, l_knee, l_ankle = leg(1.0, phase)
    r_hip, r_knee, r_ankle = leg(-1.0, phase + np.pi)
    torso_dir = np.array([np.sin(w.lean), 0.0, np.cos(w.lean)])
    neck = hip_c + w.torso * torso_dir
    head = neck + (w.head * 1.3) * torso_dir

    def arm(side: float, ph: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shoulder = neck + np.array([0.0, side * w.shoulder_width / 2, -0.02])
        g = w.arm_swing * np.sin(ph)
        upper = w.arm * 0.5
        elbow = shoulder + upper * np.stack([np.sin(g), np.zeros(n), -np.cos(g)], axis=-1)
        g2 = g + 0.25 + 0.2 * np.clip(np.sin(ph), 0, None)
        hand = elbow + upper * np.stack([np.sin(g2), np.zeros(n), -np.cos(g2)], axis=-1)
        return shoulder, elbow, hand

    l_sh, l_el, l_hand = arm(1.0, phase + np.pi)
    r_sh, r_el, r_hand = arm(-1.0, phase)
    segs = [
        (l_hip, l_knee, w.thigh_w),
        (l_knee, l_ankle, w.shin_w),
        (r_hip, r_knee, w.thigh_w),
        (r_knee, r_ankle, w.shin_w),
        (hip_c, neck, w.torso_w),
        (l_sh, r_sh, w.arm_w * 1.2),
        (l_sh, l_el, w.arm_w),
        (l_el, l_hand, w.arm_w * 0.85),
        (r_sh, r_el, w.arm_w),
        (r_el, r_hand, w.arm_w * 0.85),
        (neck, head, w.head),
    ]
    # Feet: a short segment forward from each ankle.
    for ankle in (l_ankle, r_ankle):
        toe = ankle + np.array([0.05, 0.0, -0.005])
        segs.append((ankle, toe, w.shin_w * 0.7))
    if condition == "bg":
        # A bag hanging at the hip on the right side, swinging a little with the gait.
        side = -1.0
        top = r_sh + np.array([0.0, side * 0.03, -0.12])
        bag = hip_c + np.stack(
            [0.03 * np.sin(phase), np.full(n, side * (w.hip_width / 2 + 0.06)), np.full(n, -0.02)],
            axis=-1,
        )
        size = float(rng.uniform(0.06, 0.085))
        segs.append((top, bag, 0.012))
        segs.append((bag, bag + np.array([0.0, 0.0, -0.06]), size))
    if condition == "cl":
        # A long coat: a wide panel from the shoulders down over the thighs, thicker sleeves.
        hem = (l_knee + r_knee) / 2 + np.array([0.0, 0.0, 0.06])
        width = w.torso_w * float(rng.uniform(1.45, 1.75))
        segs.append((neck - np.array([0.0, 0.0, 0.03]), hem, width))
        segs.append((l_sh, l_el, w.arm_w * 1.6))
        segs.append((r_sh, r_el, w.arm_w * 1.6))
    starts = np.stack([s[0] for s in segs], axis=1)
    ends = np.stack([s[1] for s in segs], axis=1)
    radii = np.array([s[2] for s in segs], dtype=np.float64)
    return np.stack([starts, ends], axis=2), radii


def _render(
    segments: np.ndarray,
    radii: np.ndarray,
    yaw: float,
    settings: RenderSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """Project the capsules (camera yaw, orthographic) and rasterise binary silhouettes.

    Capsules are drawn with PIL (a thick line plus a disc at each end): C-speed drawing keeps
    the default set's generation well under a minute on a laptop CPU.
    """
    height, width = settings.height, settings.width
    # yaw 90 deg = side view (walking across the image), 0 = walking towards the camera.
    u = segments[..., 0] * np.sin(yaw) + segments[..., 1] * np.cos(yaw)
    v = segments[..., 2]
    scale = height * 0.86  # body height ~1 -> most of the canvas
    cx = width / 2 + u * scale
    cy = height * 0.94 - v * scale
    rad = radii * scale
    frames = np.empty((segments.shape[0], height, width), dtype=bool)
    for i in range(segments.shape[0]):
        canvas = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for s in range(segments.shape[1]):
            x0, y0, x1, y1 = cx[i, s, 0], cy[i, s, 0], cx[i, s, 1], cy[i, s, 1]
            r = rad[s]
            draw.line((x0, y0, x1, y1), fill=1, width=max(1, round(2 * r)))
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=1)
            draw.ellipse((x1 - r, y1 - r, x1 + r, y1 + r), fill=1)
        for _ in range(int(rng.poisson(settings.missing_blobs))):
            hy, hx, hr = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(1.0, 2.5)
            draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), fill=0)
        frames[i] = np.asarray(canvas, dtype=bool)
    frames = _boundary_noise(frames, settings.boundary_noise, rng)
    return frames.astype(np.uint8) * np.uint8(255)


def _boundary_noise(sil: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Flip pixels on the silhouette's border with probability ``prob`` (segmentation noise)."""
    if prob <= 0:
        return sil
    border = np.zeros_like(sil)
    for axis in (1, 2):
        for shift in (1, -1):
            border |= np.roll(sil, shift, axis=axis) != sil
    return sil ^ (border & (rng.random(sil.shape) < prob))
