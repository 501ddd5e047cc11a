"""The walking body of the synthetic ``casia`` preset: who a subject is, what they wear and
carry, and how one sequence's walk differs from the next (docs/data.md, "The casia preset").

A body is a list of 3-D capsules per frame (lengths in body heights; x is the walking
direction, y the walker's left, z up, the floor at z = 0). ``synthetic_scene`` projects and
rasterises them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .synthetic import Walker

BAGS = ("backpack", "shoulder", "handbag", "crossbody")
TROUSERS = (1.0, 1.2, 1.45)  # fitted, regular, loose: leg width factors
HAIR = ("short", "long", "tied")
COAT_LENGTHS = (0.0, 0.5, 1.0, 1.35)  # hip, mid-thigh, knee, below the knee (along the leg)


@dataclass(frozen=True)
class Capsule:
    """One body part over the frames: end points [T, 3] and radii [T, 2] (start, end)."""

    name: str
    start: np.ndarray
    end: np.ndarray
    radius: np.ndarray


@dataclass(frozen=True)
class Body:
    """Every capsule of a sequence, and where the feet are (for the shadow at the feet)."""

    capsules: list[Capsule]
    feet: np.ndarray  # [T, 2, 3]

    @property
    def n_frames(self) -> int:
        return int(self.feet.shape[0])


@dataclass(frozen=True)
class Physique:
    """What the basic ``Walker`` lacks (fixed per subject): build, torso depth, posture and the
    left/right asymmetries people have."""

    build: float  # scales every limb width and the torso
    torso_depth: float
    arm_asym: float  # left arm swings (1 + a), right (1 - a)
    step_asym: float  # left hip swings (1 + s), right (1 - s)
    shoulder_tilt: float
    toe_out: tuple[float, float]  # radians, left and right
    abduction: float  # signed: one arm held away from the body
    head_forward: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Physique:
        return cls(
            build=float(rng.uniform(0.85, 1.25)),
            torso_depth=float(rng.uniform(0.05, 0.07)),
            arm_asym=float(rng.uniform(-0.25, 0.25)),
            step_asym=float(rng.uniform(-0.08, 0.08)),
            shoulder_tilt=float(rng.uniform(-0.015, 0.015)),
            toe_out=(float(rng.uniform(0.0, 0.35)), float(rng.uniform(0.0, 0.35))),
            abduction=float(rng.choice((-1, 1)) * rng.uniform(0.0, 0.12)),
            head_forward=float(rng.uniform(0.0, 0.03)),
        )


@dataclass(frozen=True)
class Wardrobe:
    """A subject's everyday outfit, bag and coat (the same in every sequence and view)."""

    trousers: float
    loose_top: bool
    hair: str
    bag: str
    bag_size: float
    coat_length: float
    coat_width: float
    sleeve: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Wardrobe:
        return cls(
            trousers=float(rng.choice(TROUSERS) * rng.uniform(0.95, 1.05)),
            loose_top=bool(rng.random() < 0.4),
            hair=str(rng.choice(HAIR)),
            bag=str(rng.choice(BAGS)),
            bag_size=float(rng.uniform(0.055, 0.085)),
            coat_length=float(rng.choice(COAT_LENGTHS)),
            coat_width=float(rng.uniform(1.2, 1.9)),
            sleeve=float(rng.uniform(1.3, 1.8)),
        )


@dataclass(frozen=True)
class Pace:
    """How this sequence's walk differs from the subject's usual one."""

    cadence: float
    hip_swing: float
    knee_flex: float
    arm_swing: float
    phase0: float
    offset: float  # where along the walkway the clip is centred

    @classmethod
    def sample(cls, walker: Walker, rng: np.random.Generator) -> Pace:
        s = float(rng.normal(0.0, 0.06))  # faster walking: shorter cycles and longer steps
        return cls(
            cadence=walker.cadence * float(np.exp(-s)) * (1 + float(rng.normal(0, 0.02))),
            hip_swing=walker.hip_swing * float(np.exp(0.6 * s)) * (1 + float(rng.normal(0, 0.03))),
            knee_flex=walker.knee_flex * (1 + float(rng.normal(0, 0.06))),
            arm_swing=walker.arm_swing * (1 + float(rng.normal(0, 0.12))),
            phase0=float(rng.uniform(0, 2 * np.pi)),
            offset=float(rng.uniform(-0.15, 0.15)),
        )


def _along(u: float, angle: np.ndarray, side: np.ndarray | float = 0.0) -> np.ndarray:
    """Unit vectors [T, 3] in the sagittal plane at ``angle`` from straight down (+ a lateral part)."""
    lateral = np.broadcast_to(np.asarray(side, dtype=np.float64), angle.shape)
    return np.stack([np.sin(angle), lateral, -np.cos(angle)], axis=-1) * u


class _Builder:
    """Collects capsules; constant radii broadcast over the frames."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.capsules: list[Capsule] = []

    def add(
        self, name: str, a: np.ndarray, b: np.ndarray, r0: float, r1: float | None = None
    ) -> None:
        a = np.broadcast_to(a, (self.n, 3))
        b = np.broadcast_to(b, (self.n, 3))
        radius = np.empty((self.n, 2))
        radius[:, 0], radius[:, 1] = r0, r0 if r1 is None else r1
        self.capsules.append(Capsule(name, a, b, radius))


def build_body(
    keyed_rng: Callable[..., np.random.Generator],
    walker: Walker,
    subject: str,
    condition: str,
    n_frames: int,
    rng: np.random.Generator,
) -> Body:
    """The capsules of one sequence of ``subject`` walking in ``condition`` (nm / bg / cl)."""
    phys = Physique.sample(keyed_rng("physique", subject))
    wear = Wardrobe.sample(keyed_rng("wardrobe", subject))
    pace = Pace.sample(walker, rng)
    bag_side = float(rng.choice((-1.0, 1.0)))
    bag_scale, bag_drop = float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.0, 0.04))
    coat_width = wear.coat_width * float(rng.uniform(0.9, 1.1))

    n, w, b = n_frames, walker, phys.build
    t = np.arange(n, dtype=np.float64)
    phase = pace.phase0 + 2 * np.pi * t / pace.cadence
    speed = 4 * w.leg * np.sin(pace.hip_swing) / pace.cadence
    x = pace.offset + speed * (t - n / 2)
    hip_c = np.stack([x, w.sway * np.sin(phase), w.leg + w.bob * np.cos(2 * phase)], axis=-1)
    thigh, shin = w.leg * w.thigh_ratio, w.leg * (1 - w.thigh_ratio)
    out = _Builder(n)

    legs = {}
    for tag, side, ph, asym, toe in (
        ("l", 1.0, phase, 1 + phys.step_asym, phys.toe_out[0]),
        ("r", -1.0, phase + np.pi, 1 - phys.step_asym, phys.toe_out[1]),
    ):
        hip = hip_c + np.array([0.0, side * w.hip_width / 2, 0.0])
        a = pace.hip_swing * asym * np.sin(ph)
        bend = pace.knee_flex * np.clip(np.sin(ph + 1.2), 0, None) ** 1.5
        knee = hip + _along(thigh, a)
        ankle = knee + _along(shin, a - bend)
        toe_end = ankle + 0.055 * np.array([np.cos(toe), side * np.sin(toe), -0.1])
        out.add(f"{tag}_thigh", hip, knee, w.thigh_w * b * wear.trousers)
        out.add(f"{tag}_shin", knee, ankle, w.shin_w * b * wear.trousers * 0.9, w.shin_w * b)
        out.add(f"{tag}_foot", ankle, toe_end, w.shin_w * b * 0.7)
        legs[tag] = (hip, knee, ankle, toe_end)
    feet = np.stack([(legs[k][2] + legs[k][3]) / 2 for k in ("l", "r")], axis=1)

    lean = np.array([np.sin(w.lean), 0.0, np.cos(w.lean)])
    neck = hip_c + w.torso * lean
    torso_r = phys.torso_depth * b * (1.12 if wear.loose_top else 1.0)
    hem_drop = np.array([0.0, 0.0, -0.04 if wear.loose_top else 0.0])
    shoulders = {}
    for tag, side in (("l", 1.0), ("r", -1.0)):
        low = hip_c + np.array([0.0, side * w.hip_width * 0.45, 0.02]) + hem_drop
        high = neck + np.array([0.0, side * w.shoulder_width * 0.35, -0.04])
        out.add(f"torso_{tag}", low, high, torso_r)
        shoulders[tag] = neck + np.array(
            [0.0, side * w.shoulder_width / 2, -0.02 + side * phys.shoulder_tilt]
        )
    head_c = neck + (w.head * 1.3) * lean + np.array([phys.head_forward, 0.0, 0.0])
    out.add("neck_head", neck, head_c, w.head * 0.55, w.head)
    _hair(out, wear.hair, head_c, w.head)

    bag_arm = bag_side if condition == "bg" and wear.bag == "handbag" else 0.0
    hands = {}
    for tag, side, ph, asym in (
        ("l", 1.0, phase + np.pi, 1 + phys.arm_asym),
        ("r", -1.0, phase, 1 - phys.arm_asym),
    ):
        swing = pace.arm_swing * asym * (0.35 if side == bag_arm else 1.0)
        g = swing * np.sin(ph)
        abduct = side * max(0.0, side * phys.abduction) + side * 0.03
        upper = w.arm * 0.5
        elbow = shoulders[tag] + _along(upper, g, abduct)
        g2 = g + 0.25 + 0.2 * np.clip(np.sin(ph), 0, None) + (0.4 if side == bag_arm else 0.0)
        hand = elbow + _along(upper, g2, abduct)
        sleeve = wear.sleeve if condition == "cl" else 1.0
        out.add(f"{tag}_upperarm", shoulders[tag], elbow, w.arm_w * b * sleeve)
        out.add(f"{tag}_forearm", elbow, hand, w.arm_w * b * 0.85 * sleeve, w.arm_w * b * 0.8)
        hands[tag] = hand

    if condition == "bg":
        _bag(
            out,
            wear,
            bag_side,
            wear.bag_size * bag_scale,
            bag_drop,
            hip_c,
            neck,
            shoulders,
            hands,
            phase,
            w,
            torso_r,
        )
    if condition == "cl":
        _coat(out, wear.coat_length, coat_width, legs, hip_c, neck, w, torso_r)
    return Body(out.capsules, feet)


def _hair(out: _Builder, hair: str, head_c: np.ndarray, head: float) -> None:
    if hair == "long":
        out.add(
            "hair",
            head_c - np.array([0.02, 0.0, 0.0]),
            head_c - np.array([0.05, 0.0, 0.13]),
            head * 0.85,
            head * 0.6,
        )
    elif hair == "tied":
        out.add(
            "hair",
            head_c - np.array([head * 0.8, 0.0, 0.0]),
            head_c - np.array([head * 1.6, 0.0, 0.04]),
            head * 0.35,
        )


def _bag(
    out: _Builder,
    wear: Wardrobe,
    side: float,
    size: float,
    drop: float,
    hip_c: np.ndarray,
    neck: np.ndarray,
    shoulders: dict[str, np.ndarray],
    hands: dict[str, np.ndarray],
    phase: np.ndarray,
    w: Walker,
    torso_r: float,
) -> None:
    """The subject's bag on this sequence's side, swinging a little with the gait."""
    tag = "l" if side > 0 else "r"
    n = len(phase)
    swing = np.stack([0.02 * np.sin(phase), np.zeros(n), np.zeros(n)], axis=-1)
    if wear.bag == "backpack":
        top = neck + np.array([-(torso_r + size), 0.0, -0.03])
        out.add("bag", top, top + np.array([0.0, 0.0, -0.16 - drop]), size * 1.1)
    elif wear.bag == "shoulder":
        bag = hip_c + swing + np.array([0.0, side * (w.hip_width / 2 + 0.07), -0.02 - drop])
        out.add("bag_strap", shoulders[tag], bag, 0.008)
        out.add("bag", bag, bag + np.array([0.0, 0.0, -0.06]), size)
    elif wear.bag == "handbag":
        hand = hands[tag]
        out.add(
            "bag",
            hand - np.array([0.0, 0.0, 0.02]),
            hand - np.array([0.0, 0.0, 0.08 + drop]),
            size * 0.9,
        )
    else:  # crossbody: strap over one shoulder, the bag at the other hip, in front
        bag = hip_c + swing + np.array([0.06, -side * (w.hip_width / 2 + 0.02), -0.03 - drop])
        out.add("bag_strap", shoulders[tag], bag, 0.008)
        out.add("bag", bag, bag + np.array([0.0, 0.0, -0.05]), size * 0.9)


def _coat(
    out: _Builder,
    length: float,
    width: float,
    legs: Mapping[str, tuple[np.ndarray, ...]],
    hip_c: np.ndarray,
    neck: np.ndarray,
    w: Walker,
    torso_r: float,
) -> None:
    """The subject's coat: two panels from the shoulders to a hem that swings with the legs."""
    for tag, side in (("l", 1.0), ("r", -1.0)):
        hip, knee, ankle, _ = legs[tag]
        point = hip + length * (knee - hip) if length <= 1 else knee + (length - 1) * (ankle - knee)
        below_hip = hip_c + np.array([0.0, side * w.hip_width * 0.5, 0.0])
        below_hip = below_hip + np.stack(
            [np.zeros(len(point)), np.zeros(len(point)), point[:, 2] - below_hip[:, 2]], axis=-1
        )
        hem = 0.5 * point + 0.5 * below_hip
        top = neck + np.array([0.0, side * w.shoulder_width * 0.3, -0.03])
        out.add(f"coat_{tag}", top, hem, torso_r * width * 0.85, w.thigh_w * width * 1.1)
