"""The command line: ``python -m gaitgl_lightning [overrides]`` (also the ``gaitgl`` script).

This is the only module that uses ``@hydra.main``. It adds what a plain Hydra app lacks for
Lightning: W&B falls back to offline mode when no account is configured, and a multirun sweep
combined with script-relaunching DDP (which re-runs the whole sweep inside every rank, upstream
Lightning #11300 / Hydra #2070) is switched to the safe ``ddp_spawn`` path.

Errors: the package's own failures (``gaitgl_lightning.errors``) and Hydra's configuration
errors end the command with ONE line on stderr that names the file or setting and what to do,
and exit status 1. Anything else is a bug and keeps its full traceback. ``HYDRA_FULL_ERROR=1``
shows the full traceback of every error (Hydra's own switch).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict
from omegaconf.errors import (
    GrammarParseError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from gaitgl_lightning import config_dir, errors
from gaitgl_lightning.errors import ConfigError, GaitGLError, Stopped
from gaitgl_lightning.runtime.resume import remove_empty_run_dir, resume_arguments
from gaitgl_lightning.suggest import with_suggestion

log = logging.getLogger(__name__)

#: Environment variables that mean "the ranks were started by a launcher, not by Lightning".
_EXTERNAL_LAUNCH = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")
#: Hydra's switch for full tracebacks; the CLI also sets it itself (with ``_SHORT_ERRORS``) so
#: that Hydra hands every exception back to it instead of printing a stripped traceback.
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
_SHORT_ERRORS = "GAITGL_SHORT_ERRORS"
#: Configuration errors of OmegaConf raised while a task reads its config.
_CONFIG_ERRORS = (MissingMandatoryValue, InterpolationResolutionError, GrammarParseError)


def wandb_default_offline() -> None:
    """Use ``WANDB_MODE=offline`` when the user has no W&B credentials.

    A run then never blocks on a login prompt; ``wandb sync`` uploads it later.
    """
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def launched_externally() -> bool:
    """True when torchrun / SLURM (srun with one task per device) created the processes."""
    if any(v in os.environ for v in _EXTERNAL_LAUNCH):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def guard_multirun_ddp(cfg: DictConfig) -> None:
    """Make multirun + DDP safe, or stop with a message that says what to use instead.

    Lightning's ``ddp`` starts ranks 1..N-1 by re-executing the command line, which in a
    multirun holds the whole sweep: every child would run the sweep itself. In a multirun job we
    therefore switch to ``ddp_spawn`` (ranks are forked from the job, nothing is re-executed).
    """
    try:
        mode = HydraConfig.get().mode
    except ValueError:  # composed without @hydra.main (tests)
        return
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if mode != RunMode.MULTIRUN or strategy != "ddp" or launched_externally():
        return
    launcher = str(HydraConfig.get().runtime.choices.get("hydra/launcher", "basic"))
    if launcher != "basic":
        raise ConfigError(
            f"multirun with trainer.strategy=ddp and hydra/launcher={launcher}: give the launcher "
            "one task per device (e.g. hydra/launcher=submitit_slurm with tasks_per_node = GPUs "
            "per node) so that it, not Lightning, starts the ranks; see docs/cluster.md"
        )
    log.warning(
        "multirun + trainer.strategy=ddp: Lightning would re-run the whole sweep in every rank; "
        "using strategy=ddp_spawn for this job instead (same result, slower start-up)."
    )
    with open_dict(cfg):
        cfg.trainer.strategy = "ddp_spawn"


class UserExit(SystemExit):
    """Ends the command with the one-line message of an error the user can fix (exit 1);
    ``quiet``: another DDP rank prints it (``errors.reported_elsewhere``)."""

    def __init__(self, line: str, quiet: bool = False) -> None:
        super().__init__(1)
        self.line = line
        self.quiet = quiet


def _multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> Any:
    from gaitgl_lightning.runtime.tasks import run_task  # heavy imports after Hydra parsed the CLI

    guard_multirun_ddp(cfg)
    try:
        result = run_task(cfg)
    except Exception as err:
        # A single run ends here with the one line, before Hydra prints its "Error executing
        # job" header; a multirun job's error goes back to Hydra, which runs the other jobs
        # first and then raises it (main() prints the line then).
        line = None if full_trace_requested() or _multirun() else user_error_line(err)
        if line is None:
            raise
        remove_empty_run_dir(HydraConfig.get().runtime.output_dir)  # a failed start is no run
        raise UserExit(line, quiet=errors.reported_elsewhere(err)) from None
    if isinstance(result, dict):
        final = result.get("final") or result.get("eval") or {}
        summary = final.get("summary") if isinstance(final, dict) else None
        if isinstance(summary, dict) and "rank1" in summary:
            return float(summary["rank1"])
    return None


def _one_line(text: str) -> str:
    """Collapse a multi-line message (Hydra's option lists, OmegaConf's ``full_key`` lines)."""
    out = ""
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith((":", ".")):
            out = f"{out} {line}"
        elif raw[:1].isspace():  # an indented item of a list
            out = f"{out}, {line}"
        else:
            out = f"{out}; {line}"
    return out


def _full_key(text: str) -> str | None:
    match = re.search(r"full_key: *(\S+)", text)
    return match.group(1) if match and match.group(1) else None


def user_error_line(err: BaseException) -> str | None:
    """The one line the CLI prints for an error the user can fix; None for a bug.

    Family errors print their message; Hydra's composition errors (unknown override, missing
    config group option, override syntax) their message and OmegaConf's cause; an error raised
    while Hydra instantiates a config node (a constructor refusing a value) the constructor's
    message and the node. Everything else (a bug) gets None and keeps its traceback.
    """
    if isinstance(err, GaitGLError):
        return _one_line(str(err))
    if _raised_in_spawned_process(err):
        return _spawned_error_line(str(err))
    if isinstance(err, InstantiationException):
        cause = err.__cause__ or err.__context__
        if isinstance(cause, OmegaConfBaseException):
            return user_error_line(cause)
        if cause is not None and not isinstance(cause, GaitGLError | ValueError | TypeError):
            return None  # a constructor failed in a way no setting explains: a bug
        text = _one_line(str(cause if cause is not None else err).split("full_key:")[0])
        where = _full_key(str(err))
        return f"{text} (config node {where})" if where else text
    if isinstance(err, CompactHydraException):
        text = _one_line(str(err)).split("; Config search path:")[0]  # Hydra's internals
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException):
            text = f"{text}: {_one_line(str(cause).split('full_key:')[0])}"
        if isinstance(err, OverrideParseException):
            text = f"override {err.override!r}: {text}"
        return text
    inner = err.__cause__ or err.__context__
    if isinstance(err, OmegaConfBaseException) and isinstance(inner, GaitGLError):
        return _one_line(str(inner))  # raised by a resolver (``${gaitgl.*:...}``)
    if isinstance(err, _CONFIG_ERRORS):
        where = _full_key(str(err))
        text = _one_line(str(err).split("full_key:")[0])
        return f"{where}: {text}" if where and where not in text else text
    return None


def _raised_in_spawned_process(err: BaseException) -> bool:
    """True for torch's ``ProcessRaisedException`` (checked by type; torch is imported by then
    whenever one was raised, so the CLI need not import it for this)."""
    spawn = sys.modules.get("torch.multiprocessing.spawn")
    kind = getattr(spawn, "ProcessRaisedException", None)
    return isinstance(kind, type) and isinstance(err, kind)


def _spawned_error_line(text: str) -> str | None:
    """The line for a rank's error under ``ddp_spawn``.

    A spawned process's exception reaches the parent only as the text of its traceback
    (torch's ``ProcessRaisedException``, recognised by type), so there the family class can only
    be recognised by name, in the exception line that ends the last traceback (and resolved to
    the class in ``errors``); a bug (any other class) keeps the traceback.
    """
    block = text.rsplit("Traceback (most recent call last):", 1)[-1].splitlines()
    rest = [line for line in block if line.strip()]
    start = next((i for i, line in enumerate(rest) if not line.startswith(" ")), None)
    if start is None:
        return None
    match = re.match(r"gaitgl_lightning\.errors\.(\w+): ?(.*)", rest[start])
    family = getattr(errors, match.group(1), None) if match else None
    if not (match and isinstance(family, type) and issubclass(family, GaitGLError)):
        return None
    return _one_line("\n".join([match.group(2), *rest[start + 1 :]]))


def full_trace_requested() -> bool:
    """True when the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(FULL_ERROR_ENV) == "1" and os.environ.get(_SHORT_ERRORS) != "1"


def main() -> None:
    """Entry point of ``python -m gaitgl_lightning`` and of the ``gaitgl`` script."""
    wandb_default_offline()
    os.environ.setdefault("WANDB_START_METHOD", "thread")
    try:  # resume=<run dir>: the run's own overrides first (gaitgl_lightning.runtime.resume)
        sys.argv[1:] = resume_arguments(sys.argv[1:])
    except GaitGLError as err:
        _exit_with(_one_line(str(err)))
    if full_trace_requested():
        _main()
        return
    # Hydra re-raises when HYDRA_FULL_ERROR=1; the marker tells processes started from this one
    # (DDP ranks re-run this command) that the short form is still wanted.
    os.environ[FULL_ERROR_ENV] = os.environ[_SHORT_ERRORS] = "1"
    try:
        _main()
    except Stopped as stop:  # SIGTERM / SIGINT: exit 128 + signal, how to resume
        sys.stderr.write(f"{stop.line}\n")
        raise
    except UserExit as stop:
        _exit_with(stop.line, stop.quiet)
    except Exception as err:
        line = user_error_line(err)
        if line is None:
            raise
        _exit_with(line, errors.reported_elsewhere(err))


def error_line(line: str) -> str:
    """The form of the one line (also printed by a rank that a failure left stuck)."""
    return f"error: {line}  [full trace: {FULL_ERROR_ENV}=1]"


def _exit_with(line: str, quiet: bool = False) -> None:
    """Print the one line on stderr (unless another rank prints it) and exit with status 1."""
    if not quiet:
        line = with_suggestion(line)  # a misspelt key: the nearest existing one
        sys.stderr.write(error_line(line) + "\n")
        sys.stderr.flush()
    raise SystemExit(1) from None
