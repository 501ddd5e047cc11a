"""The package imports and finds its configs."""

from __future__ import annotations

import gaitgl_lightning


def test_version_is_set() -> None:
    assert gaitgl_lightning.__version__.count(".") == 2
