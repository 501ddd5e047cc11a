"""The realistic scene of the synthetic ``casia`` preset (docs/data.md, "The casia preset").

What the basic renderer of ``synthetic.py`` leaves out and CASIA-B recordings have: a
perspective camera on a semicircle around a walkway (no two views equivalent), left/right
asymmetries of the body and the gait, per-subject outfits, bags and coats with per-sequence
variation, walking speed and stride that change from sequence to sequence, and the faults of
real segmentations (holes, a missing limb, a shadow at the feet, a frame of partial occlusion,
false-positive blobs, ragged borders).

Every draw comes from a stream keyed by (seed, what, subject[, type, view]) so that a subject's
identity, outfit, bag and coat are the same in every sequence and every view, and adding a view
changes no other sequence's pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from .synthetic_body import Body, build_body

if TYPE_CHECKING:
    from .synthetic import Walker

#: Canvas of the rendered frames (rows, columns) before the pretreatment aligns them.
CANVAS = (128, 176)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on the semicircle around the walkway (lengths in body heights).

    ``view`` is CASIA-B's angle: 0 walks towards the camera, 90 crosses it (the camera on the
    walker's right), 180 walks away.
    """

    view_deg: float
    distance: float = 2.8
    height: float = 0.6
    target_height: float = 0.5
    fill: float = 0.72  # body height / canvas rows at the walkway's centre

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Camera centre and its right / up / forward unit vectors."""
        a = np.deg2rad(self.view_deg)
        centre = np.array([self.distance * np.cos(a), -self.distance * np.sin(a), self.height])
        forward = np.array([0.0, 0.0, self.target_height]) - centre
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
        right /= np.linalg.norm(right)
        return centre, right, np.cross(right, forward), forward

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points [..., 3] -> (column, row, pixels per body height) arrays of shape [...]."""
        centre, right, up, forward = self.basis()
        d = points - centre
        focal = self.fill * CANVAS[0] * self.distance
        scale = focal / (d @ forward)
        return CANVAS[1] / 2 + scale * (d @ right), CANVAS[0] * 0.5 - scale * (d @ up), scale


@dataclass(frozen=True)
class Faults:
    """Per-sequence segmentation faults, drawn once (rates of docs/data.md)."""

    holes_rate: float
    persistent_hole: tuple[int, int, int, float, float] | None  # capsule, start, length, t, r
    missing: tuple[str, int, int] | None  # capsule name, first frame, length
    shadow: tuple[float, float] | None  # light direction (rad), length (body heights)
    occlusion: tuple[int, int, float, float] | None  # first frame, length, centre, width
    blobs_rate: float
    boundary: float

    @classmethod
    def draw(cls, rng: np.random.Generator, n_frames: int, names: list[str]) -> Faults:
        limbs = [n for n in names if n.split("_")[-1] in ("forearm", "shin")]
        run = int(rng.integers(2, 9))
        return cls(
            holes_rate=float(rng.uniform(0.0, 1.5)),
            persistent_hole=(
                int(rng.integers(len(names))),
                int(rng.integers(n_frames)),
                int(rng.integers(3, 11)),
                float(rng.uniform(0, 1)),
                float(rng.uniform(0.02, 0.06)),
            )
            if rng.random() < 0.4
            else None,
            missing=(str(rng.choice(limbs)), int(rng.integers(0, max(1, n_frames - run))), run)
            if rng.random() < 0.3
            else None,
            shadow=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.12, 0.35)))
            if rng.random() < 0.35
            else None,
            occlusion=(
                int(rng.integers(n_frames)),
                int(rng.integers(1, 3)),
                float(rng.uniform(-0.5, 0.5)),
                float(rng.uniform(0.15, 0.35)),
            )
            if rng.random() < 0.2
            else None,
            blobs_rate=float(rng.uniform(0.0, 0.25)),
            boundary=float(rng.uniform(0.05, 0.2)),
        )


def render_sequence(
    body: Body, camera: Camera, faults: Faults, rng: np.random.Generator
) -> np.ndarray:
    """Rasterise a body's frames through ``camera`` with ``faults``: uint8 [T, 128, 176] 0/255."""
    ends = np.stack([np.stack([c.start, c.end], axis=1) for c in body.capsules])  # [C, T, 2, 3]
    col, row, scale = camera.project(ends)
    radius = np.stack([c.radius for c in body.capsules]) * scale  # [C, T, 2]
    frames = np.empty((body.n_frames, *CANVAS), dtype=bool)
    for i in range(body.n_frames):
        canvas = Image.new("1", (CANVAS[1], CANVAS[0]), 0)
        draw = ImageDraw.Draw(canvas)
        for k, cap in enumerate(body.capsules):
            if not _missing(faults, cap.name, i):
                _capsule(draw, col[k, i].tolist(), row[k, i].tolist(), radius[k, i].tolist())
        if faults.shadow is not None:
            _shadow(draw, camera, body, i, *faults.shadow)
        _holes(draw, camera, body, faults, i, rng)
        frames[i] = np.asarray(canvas, dtype=bool)
    _occlude(frames, faults)
    _false_blobs(frames, faults.blobs_rate, rng)
    return _ragged(frames, faults.boundary, rng).astype(np.uint8) * np.uint8(255)


def _missing(faults: Faults, name: str, i: int) -> bool:
    if faults.missing is None:
        return False
    limb, first, length = faults.missing
    return name == limb and first <= i < first + length


def _capsule(
    draw: ImageDraw.ImageDraw, cols: list[float], rows: list[float], radii: list[float]
) -> None:
    """A tapered capsule: two discs and the quadrilateral between their tangents."""
    (x0, x1), (y0, y1), (r0, r1) = cols, rows, radii
    draw.ellipse((x0 - r0, y0 - r0, x0 + r0, y0 + r0), fill=1)
    draw.ellipse((x1 - r1, y1 - r1, x1 + r1, y1 + r1), fill=1)
    dx, dy = x1 - x0, y1 - y0
    norm = (dx * dx + dy * dy) ** 0.5
    if norm > 1e-6:
        nx, ny = -dy / norm, dx / norm
        draw.polygon(
            [
                (x0 + nx * r0, y0 + ny * r0),
                (x1 + nx * r1, y1 + ny * r1),
                (x1 - nx * r1, y1 - ny * r1),
                (x0 - nx * r0, y0 - ny * r0),
            ],
            fill=1,
        )


def _shadow(
    draw: ImageDraw.ImageDraw, camera: Camera, body: Body, i: int, angle: float, length: float
) -> None:
    """A flat region on the floor attached to each foot that touches it (the light's shadow)."""
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    side = np.array([-direction[1], direction[0], 0.0]) * 0.04
    for foot in body.feet[i]:
        if foot[2] > 0.06:
            continue
        base = np.array([foot[0], foot[1], 0.0])
        far = base + length * direction
        quad = np.stack([base + side, far + side, far - side, base - side])
        col, row, _ = camera.project(quad)
        draw.polygon(list(zip(col.tolist(), row.tolist(), strict=True)), fill=1)


def _holes(
    draw: ImageDraw.ImageDraw,
    camera: Camera,
    body: Body,
    faults: Faults,
    i: int,
    rng: np.random.Generator,
) -> None:
    """Holes where the background matches the clothes: random ones, and one that persists."""
    spots: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.poisson(faults.holes_rate))):
        cap = body.capsules[int(rng.integers(len(body.capsules)))]
        t = float(rng.uniform(0, 1))
        spots.append((cap.start[i] * (1 - t) + cap.end[i] * t, float(rng.uniform(0.02, 0.06))))
    if faults.persistent_hole is not None:
        index, first, length, t, radius = faults.persistent_hole
        if first <= i < first + length:
            cap = body.capsules[index]
            spots.append((cap.start[i] * (1 - t) + cap.end[i] * t, radius))
    for point, radius in spots:
        col, row, scale = camera.project(point[None])
        r = radius * float(scale[0])
        x, y = float(col[0]), float(row[0])
        draw.ellipse((x - r, y - r, x + r, y + r), fill=0)


def _occlude(frames: np.ndarray, faults: Faults) -> None:
    """One or two frames with a vertical band across part of the body (a pole, a passer-by)."""
    if faults.occlusion is None:
        return
    first, length, centre, width = faults.occlusion
    for i in range(first, min(first + length, len(frames))):
        cols = np.flatnonzero(frames[i].any(axis=0))
        if cols.size == 0:
            continue
        span = cols[-1] - cols[0] + 1
        mid = (cols[0] + cols[-1]) / 2 + centre * span
        half = max(1.0, width * span / 2)
        frames[i, :, max(0, int(mid - half)) : int(mid + half) + 1] = False


def _false_blobs(frames: np.ndarray, rate: float, rng: np.random.Generator) -> None:
    """False-positive foreground next to the body (moving background, reflections): it moves
    the pretreatment's crop and centring, the way real silhouettes end up misaligned."""
    rows, cols = CANVAS
    for i in range(len(frames)):
        for _ in range(int(rng.poisson(rate))):
            ys, xs = np.nonzero(frames[i])
            if ys.size == 0:
                continue
            y = int(rng.integers(ys.min(), ys.max() + 1))
            x = int(xs.mean() + rng.choice((-1, 1)) * rng.uniform(0.3, 0.9) * (np.ptp(ys) / 2))
            ry, rx = int(rng.integers(1, 5)), int(rng.integers(1, 4))
            frames[i, max(0, y - ry) : min(rows, y + ry), max(0, x - rx) : min(cols, x + rx)] = True


def _ragged(sil: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Flip border pixels with probability ``prob`` (segmentation noise at the contour)."""
    border = np.zeros_like(sil)
    for axis in (1, 2):
        for shift in (1, -1):
            border |= np.roll(sil, shift, axis=axis) != sil
    return sil ^ (border & (rng.random(sil.shape) < prob))


def realistic_sequence(
    keyed_rng: Callable[..., np.random.Generator],
    walker: Walker,
    key: tuple[str, str, str],
    frames: tuple[int, int],
) -> np.ndarray:
    """One sequence ``(subject, type, view)`` of the ``casia`` preset: uint8 [T, 128, 176]."""
    subject, seq_type, view = key
    rng = keyed_rng("sequence", subject, seq_type, view)
    n_frames = int(rng.integers(frames[0], frames[1] + 1))
    condition = seq_type.split("-")[0].lower()
    body = build_body(keyed_rng, walker, subject, condition, n_frames, rng)
    faults = Faults.draw(rng, n_frames, [c.name for c in body.capsules])
    return render_sequence(body, Camera(float(view)), faults, rng)
