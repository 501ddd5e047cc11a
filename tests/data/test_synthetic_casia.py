"""The ``casia`` synthetic preset: CASIA-B's shape, a perspective scene, per-subject wardrobes,
per-sequence variation and segmentation faults (docs/data.md, "The casia preset")."""

from __future__ import annotations

import numpy as np
import pytest

from gaitgl_lightning.data.pretreatment import align_sequence
from gaitgl_lightning.data.synthetic import SyntheticGait, _rng
from gaitgl_lightning.data.synthetic_body import Wardrobe, build_body
from gaitgl_lightning.data.synthetic_scene import Camera, Faults


@pytest.fixture(scope="module")
def gen() -> SyntheticGait:
    return SyntheticGait.preset("casia", seed=3)


def test_shape_is_casia_b(gen: SyntheticGait) -> None:
    part = gen.partition()
    assert (len(part["TRAIN_SET"]), len(part["TEST_SET"])) == (74, 50)
    assert gen.views == tuple(f"{v:03d}" for v in range(0, 181, 18))
    assert len(gen) == 124 * 11 * 10 == 13640


def test_same_seed_same_pixels_and_seed_matters(gen: SyntheticGait) -> None:
    a = gen.sequence("075", "bg-02", "054")
    assert np.array_equal(a, SyntheticGait.preset("casia", seed=3).sequence("075", "bg-02", "054"))
    other = SyntheticGait.preset("casia", seed=4).sequence("075", "bg-02", "054")
    assert a.shape != other.shape or not np.array_equal(a, other)


@pytest.mark.parametrize("height", [32, 64])
def test_frames_survive_the_pretreatment(gen: SyntheticGait, height: int) -> None:
    for key in [("001", "nm-01", "000"), ("010", "cl-02", "090"), ("100", "bg-01", "180")]:
        raw = gen.sequence(*key)
        assert raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255}
        aligned = align_sequence(raw, height)
        assert aligned.shape[1:] == (height, height)
        assert len(aligned) >= len(raw) - 2  # at most an occluded frame or two dropped


def _projected_heights(view: float) -> np.ndarray:
    """Rows the body spans per frame through the camera at ``view`` (no faults)."""
    gen = SyntheticGait.preset("casia", seed=0)
    keyed = lambda *keys: _rng(0, *keys)  # noqa: E731
    body = build_body(keyed, gen.walker("001"), "001", "nm", 40, np.random.default_rng(1))
    ends = np.stack([np.stack([c.start, c.end], axis=1) for c in body.capsules])
    _, row, _ = Camera(view).project(ends)
    return row.max(axis=(0, 2)) - row.min(axis=(0, 2))


def test_perspective_makes_mirror_views_differ() -> None:
    """Walking towards the camera the body grows in the image, walking away it shrinks: views
    18 and 162 (equivalent under the basic preset's orthographic camera) are not equivalent."""
    towards, away = _projected_heights(18.0), _projected_heights(162.0)
    assert towards[-1] > towards[0] * 1.1
    assert away[-1] < away[0] / 1.1


def test_wardrobe_is_the_subjects_own() -> None:
    """The same subject wears the same outfit and brings the same bag in every sequence; the
    population has every kind of bag."""
    assert Wardrobe.sample(_rng(0, "wardrobe", "007")) == Wardrobe.sample(
        _rng(0, "wardrobe", "007")
    )
    bags = {Wardrobe.sample(_rng(0, "wardrobe", f"{i:03d}")).bag for i in range(1, 125)}
    assert bags == {"backpack", "shoulder", "handbag", "crossbody"}


def test_fault_rates_are_as_designed() -> None:
    """Missing limb 30 %, shadow 35 %, occlusion 20 % of sequences (docs/data.md)."""
    rng = np.random.default_rng(0)
    names = ["l_forearm", "r_forearm", "l_shin", "r_shin", "torso_l"]
    draws = [Faults.draw(rng, 40, names) for _ in range(3000)]
    rate = lambda attr: np.mean([getattr(f, attr) is not None for f in draws])  # noqa: E731
    assert abs(rate("missing") - 0.30) < 0.03
    assert abs(rate("shadow") - 0.35) < 0.03
    assert abs(rate("occlusion") - 0.20) < 0.03
    assert all(f.missing is None or f.missing[0] != "torso_l" for f in draws)


def test_covariates_change_the_silhouette(gen: SyntheticGait) -> None:
    """A coat and a bag change the side view's mean silhouette more than a second NM walk does."""
    gei = {
        t: align_sequence(gen.sequence("090", t, "090"), 32).mean(axis=0)
        for t in ("nm-01", "nm-02", "cl-01")
    }
    nm = np.abs(gei["nm-01"] - gei["nm-02"]).mean()
    assert np.abs(gei["nm-01"] - gei["cl-01"]).mean() > nm
