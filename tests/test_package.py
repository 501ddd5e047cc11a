"""The package imports and states one version (finding its configs: every config test)."""

from __future__ import annotations

from importlib.metadata import version

import gaitgl_lightning


def test_the_installed_version_is_the_packages() -> None:
    # pyproject.toml and __version__ (written into checkpoints and metrics.json) must agree.
    assert version("gaitgl_lightning") == gaitgl_lightning.__version__
