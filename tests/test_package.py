"""The package imports, finds its configs, and states one version."""

from __future__ import annotations

from importlib.metadata import version

import gaitgl_lightning


def test_the_installed_version_is_the_packages() -> None:
    # pyproject.toml and __version__ (written into checkpoints and metrics.json) must agree.
    assert version("gaitgl_lightning") == gaitgl_lightning.__version__


def test_configs_are_found() -> None:
    assert (gaitgl_lightning.config_dir() / "train.yaml").is_file()
