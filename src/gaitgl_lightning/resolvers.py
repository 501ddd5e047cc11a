"""OmegaConf resolvers the configs use (registered when the package is imported).

``${gaitgl.synthetic_classes:<size>}``: the number of training identities of a synthetic preset,
read from the generator's own presets so that the config can never disagree with the data.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from gaitgl_lightning.errors import ConfigError


def synthetic_classes(size: str) -> int:
    """Training identities of the synthetic preset ``size``."""
    from gaitgl_lightning.data.synthetic import SIZES

    if size not in SIZES:
        raise ConfigError(f"synthetic dataset size {size!r} is not one of {sorted(SIZES)}")
    return int(SIZES[size]["train_subjects"])  # type: ignore[call-overload]


def register() -> None:
    """Register the resolvers once (idempotent)."""
    if not OmegaConf.has_resolver("gaitgl.synthetic_classes"):
        OmegaConf.register_new_resolver("gaitgl.synthetic_classes", synthetic_classes)
