"""The package's own failures: one small family of exception types.

Why a family: the command line prints any of these as one line (the message names the file or
the setting and what to do) instead of a traceback, and lets every other exception, a bug,
keep its traceback. Every layer may import this module; it imports nothing of the package.

The types also derive from the built-in type that callers caught before the family existed
(``ValueError`` / ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class GaitGLError(Exception):
    """A failure the user can fix: the message says what is wrong, where, and what to do."""


class ConfigError(GaitGLError, ValueError):
    """A setting that cannot work (names the setting and a value that would)."""


class BatchError(ConfigError):
    """A batch that cannot be drawn: P x K against the identities and the world size."""


class DataError(GaitGLError, ValueError):
    """A data file or folder that is not what its layout promises (names the file)."""


class MissingDataError(GaitGLError, FileNotFoundError):
    """Data, a store or a partition that is not where the configuration points."""


class StoreError(DataError):
    """A packed store that is missing, incomplete or damaged (names the file and the damage)."""


class CheckpointError(GaitGLError, ValueError):
    """A checkpoint that cannot be used: missing, truncated, foreign (names the file)."""


class MissingCheckpointError(CheckpointError):
    """``ckpt_path`` points at no file (kept apart so callers can offer ``ckpt_path=last``)."""


class EvaluationError(GaitGLError, ValueError):
    """An evaluation that cannot be computed on this data (no probe, an empty gallery...)."""


class TrainingError(GaitGLError, RuntimeError):
    """Training stopped on purpose (a non-finite loss, a failed evaluation) after saving."""


class RankFailure(GaitGLError, RuntimeError):
    """Another DDP rank failed: this rank stops too, with that rank's message.

    The failing rank prints the message; this one ends without printing it again."""

    reported_elsewhere = True


class PrepareIncomplete(DataError):
    """``dataset.strict=true``: prepare skipped items (the report file lists every one)."""


def reported_elsewhere(err: BaseException) -> bool:
    """True when another DDP rank prints this failure's line (the command line stays silent)."""
    return bool(getattr(err, "reported_elsewhere", False))


def mark_reported_elsewhere(err: BaseException) -> BaseException:
    """Mark ``err`` as printed by another rank (several ranks failed with the same message)."""
    err.reported_elsewhere = True  # type: ignore[attr-defined]
    return err


class Stopped(SystemExit):
    """A run stopped by SIGTERM / SIGINT after saving its step (``stopping.StopOnSignal``): exit
    status 128 + the signal; ``line`` says how to resume. Not a ``GaitGLError``: no ``error:``."""

    def __init__(self, signum: int, line: str) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.line = line
