"""GaitGL (Lin et al., journal version) as a PyTorch Lightning + Hydra experiment package.

The sub-packages are layered: ``models``, ``losses``, ``data`` and ``evaluation`` are plain
torch / numpy and know nothing of Lightning or Hydra; ``module``, ``datamodule`` and ``run`` glue
them; ``cli`` is the only Hydra entry point.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

from gaitgl_lightning import resolvers as _resolvers

_resolvers.register()

__all__ = ["__version__", "config_dir"]


def config_dir() -> Path:
    """Return the directory that holds the Hydra configs.

    A wheel ships ``conf/`` inside the package; an editable install or a checkout reads the
    repository's top-level ``conf/``. Looking in both lets ``python -m gaitgl_lightning`` work
    from either without the user passing ``--config-dir``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"gaitgl_lightning: no Hydra config directory found (looked in {here / 'conf'} and "
        f"{here.parents[1] / 'conf'}); reinstall the package or run from a checkout."
    )
