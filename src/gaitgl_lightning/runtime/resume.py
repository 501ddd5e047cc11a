"""Resuming a run from its run dir alone: ``resume=<run dir>`` (or ``ckpt_path=last
hydra.run.dir=<run dir>``).

Why: the natural command names the run and nothing else, but a Hydra app composes the defaults,
so a resume without the run's own overrides built another network (a size mismatch after the
run's curves and config were already overwritten). Before Hydra composes anything, the command
line is rewritten: the overrides the run was started with (its ``.hydra/overrides.yaml``) come
first, the ones given now apply on top (a key given now replaces the run's), then the run dir and
``ckpt_path=last``. Hydra writes none of its files into the run dir for a resume
(``hydra.output_subdir=null``), so the run's ``.hydra/config.yaml`` and ``overrides.yaml`` stay as
they were; the task records the resume in ``.hydra/resume-<n>/`` once the checkpoint fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import ListConfig, OmegaConf

from gaitgl_lightning.errors import ConfigError

#: Keys the rewriting sets itself (a run's recorded value of these is dropped).
_OWN = ("resume", "ckpt_path", "hydra.run.dir", "hydra.output_subdir")


def override_key(override: str) -> str:
    """``trainer.max_steps`` of ``+trainer.max_steps=5``, ``model`` of ``model=tiny``."""
    return override.split("=", 1)[0].lstrip("+~")


def _values(overrides: Sequence[str]) -> dict[str, str]:
    return {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}


def recorded_overrides(run_dir: Path) -> list[str] | None:
    """The overrides a run was started with (Hydra's ``.hydra/overrides.yaml``), or None."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        overrides = OmegaConf.load(path)
    except Exception as err:  # yaml's and OmegaConf's parse errors
        raise ConfigError(f"{path}: not readable YAML ({err}); resume with the overrides") from err
    if not isinstance(overrides, ListConfig):
        raise ConfigError(f"{path}: not a list of overrides; resume with the overrides")
    return [str(o) for o in overrides]


def resume_arguments(args: Sequence[str]) -> list[str]:
    """The command-line arguments with a resume spelled out (unchanged when not a resume)."""
    if any(a in ("-m", "--multirun") for a in args):
        return list(args)
    flags = [a for a in args if a.startswith("-")]
    given = [a for a in args if not a.startswith("-")]
    values = _values(given)
    run_value = values.get("resume")
    if run_value in (None, "", "null"):
        if values.get("ckpt_path") != "last" or not values.get("hydra.run.dir"):
            return list(args)
        run_value = values["hydra.run.dir"]
    elif values.get("hydra.run.dir") not in (None, run_value):
        raise ConfigError(
            f"resume={run_value} and hydra.run.dir={values['hydra.run.dir']}: give one run dir"
        )
    run_dir = Path(run_value).expanduser().absolute()
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_value}: no such run dir")
    recorded = recorded_overrides(run_dir)
    if recorded is None:
        if "resume" in values:
            raise ConfigError(
                f"resume={run_value}: not a run dir of this package (no .hydra/overrides.yaml); "
                "give ckpt_path=<file> with the run's overrides instead"
            )
        return list(args)  # a dir without Hydra's record: resume with the overrides given
    now = {override_key(o) for o in given}
    kept = [o for o in recorded if override_key(o) not in now and override_key(o) not in _OWN]
    extra = [o for o in given if override_key(o) not in _OWN]
    own = [
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
        f"resume={run_dir}",
        "hydra.output_subdir=null",
    ]
    return [*flags, *kept, *extra, *own]


def remove_empty_run_dir(run_dir: str | Path) -> bool:
    """Remove a run dir that holds nothing but Hydra's record and the log of a command that
    failed before it wrote anything (a bad setting found when the task starts): such a dir is
    no run, and a user's outputs would fill with them. Returns whether it was removed."""
    import shutil

    root = Path(run_dir)
    if not root.is_dir():
        return False
    for path in root.rglob("*"):
        where = path.relative_to(root).parts
        if path.is_dir():
            continue
        if not (where[0] == ".hydra" or (len(where) == 1 and path.suffix == ".log")):
            return False
    shutil.rmtree(root, ignore_errors=True)
    return True
