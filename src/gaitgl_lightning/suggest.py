""" "Did you mean": the nearest existing key for a misspelt override.

Why: Hydra answers ``trainer.max_step=5`` with "Key 'max_step' is not in struct" and the hint
to append it with ``+``, which only moves the error to the Trainer's constructor. For a key whose
parent node exists, the one line names the closest existing key instead.
"""

from __future__ import annotations

import difflib
import re

from omegaconf import DictConfig, OmegaConf

_NOT_IN_STRUCT = re.compile(r"Could not override '([\w./@-]+)'")
_HYDRA_HINT = re.compile(r"\s*To append to your config use \+\S+")


def _composed() -> DictConfig | None:
    """The default composition of ``train.yaml`` (the keys a user can override)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gaitgl_lightning import config_dir

    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return compose("train")
    except Exception:  # a suggestion is a courtesy: never fail the error line over it
        return None


def close_keys(key: str, config: DictConfig) -> list[str]:
    """Existing keys next to ``key`` (same parent) that are spelt almost like it."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    if not isinstance(node, DictConfig):
        return []
    found = difflib.get_close_matches(leaf, [str(k) for k in node], n=2, cutoff=0.75)
    return [f"{parent}.{k}" if parent else k for k in found]


def with_suggestion(line: str) -> str:
    """``line`` with "did you mean ...?" for a misspelt key (Hydra's ``+`` hint dropped)."""
    match = _NOT_IN_STRUCT.search(line)
    if not match:
        return line
    config = _composed()
    found = close_keys(match.group(1), config) if config is not None else []
    if not found:
        return line
    return f"{_HYDRA_HINT.sub('', line)}; did you mean {' or '.join(found)}?"
