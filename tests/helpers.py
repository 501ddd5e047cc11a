"""Composing the real Hydra configs in tests, with every output under a temporary dir."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from gaitgl_lightning import config_dir

#: A tiny but complete run: the ``debug=tiny`` preset (conf/debug/tiny.yaml). Kept as a name so
#: that tests read ``[*TINY, ...]``.
TINY = ("debug=tiny",)
# The journal layout at test width (16 x 12 input), for tests that build GaitGL directly.
TINY_STAGES = [
    {"channels": 4, "local": "mask", "pool": "lta"},
    {"channels": 6, "local": "mask", "pool": "sp"},
    {"channels": 6, "layers": 2, "local": "mask", "last": "B"},
]


def compose_config(overrides: Sequence[str], root: Path) -> DictConfig:
    """Compose ``train.yaml`` as the CLI would, with outputs under ``root``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def model_config(name: str, *overrides: str) -> DictConfig:
    """``model=<name>`` as a run composes it (config extension applied; the ``mask`` group feeds
    ``model.mask``); instantiate it with ``num_classes=``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", *overrides])
    return cfg.model


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: a fresh user's shell, outputs under ``root``.

    ``WANDB_SERVICE`` is dropped: an in-process test that used W&B leaves it in ``os.environ``,
    and a subprocess that inherits it attaches to the pytest process's W&B service instead of
    starting its own. A killed run's stream then stays open in that service, and its resume
    fails with "run ID ... is in use" (seen in CI); a user's resumed run never shares one.
    """
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "GAITGL_ROOT": str(root), "WANDB_MODE": "offline", **extra}


def run_cli(
    args: Sequence[str], root: Path, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gaitgl_lightning`` in a subprocess (DDP and multirun need a real CLI)."""
    root.mkdir(parents=True, exist_ok=True)
    env = cli_env(root, PYTHONUNBUFFERED="1")
    return run_python(["-m", "gaitgl_lightning", *args], root, env, timeout)


def run_python(
    args: Sequence[str], cwd: Path, env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` and wait; its output captured as text, a failure returned (not
    raised) so that the test reads the message the user would see."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit status 1, one ``error:`` line on stderr naming every item in ``names``, no trace."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under ``mask`` (files a run writes must follow the user's umask)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def assert_file_modes(root: Path, mask: int = 0o022) -> int:
    """Every file under ``root`` has the mode ``open`` gives under ``mask``; returns the count."""
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    wrong = {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in files}
    wrong = {k: v for k, v in wrong.items() if v != oct(0o666 & ~mask)}
    assert not wrong, wrong
    return len(files)


def start_cli(
    args: Sequence[str], root: Path, output: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """Start ``python -m gaitgl_lightning`` without waiting (a test that signals or kills it)."""
    root.mkdir(parents=True, exist_ok=True)
    env = cli_env(root)
    return subprocess.Popen(
        [sys.executable, "-m", "gaitgl_lightning", *args],
        cwd=root,
        env=env,
        stdout=output,
        stderr=output,
        text=True,
    )
