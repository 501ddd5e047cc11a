"""A failure on one rank ends every rank: the one place where failures cross ranks.

Failures inside a training or evaluation step are shared by a collective every rank enters
(:func:`share_failure`, :func:`failures_shared`): when any rank failed, every rank raises, the
failing rank its own exception, the others :class:`~gaitgl_lightning.errors.RankFailure` with its
message, and during ``fit`` a checkpoint of the step is saved first, so no training is lost.

Two kinds cannot be shared that way: a failure outside the
step (a data-loader worker's, raised when the rank fetches its next batch) and one that leaves
the other ranks inside a collective the failing rank never enters (SyncBN's all-gather in the
forward pass, while the failing rank waits in the sharing all-reduce). The other ranks then wait
until the process group's timeout (30 min on gloo, 10 min on NCCL), or are killed without a word.

So every failing rank also writes its message into the process group's key-value store (the one
``torch.distributed`` rendezvoused through, reachable without a collective), and every rank runs
a small watcher thread (:class:`FailureWatch`) that reads it:

* written from ``on_exception`` (the failing rank left the collectives for good): the other
  ranks end at once, with exit status 1 and no line of their own;
* written before the sharing collective: the ordinary path (every rank raises together, a
  checkpoint is saved) gets ``grace_s`` seconds; a rank still running after that is stuck in a
  collective and ends, the failing rank printing its message.

The line is printed once, by the rank that failed (``errors.reported_elsewhere`` tells the
command line to stay silent on the ranks that only relay it).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from gaitgl_lightning.errors import (
    GaitGLError,
    RankFailure,
    mark_reported_elsewhere,
    reported_elsewhere,
)
from gaitgl_lightning.runtime.checkpoints import save_failure_checkpoint

log = logging.getLogger(__name__)

#: The store key; its value is ``<rank>\t<kind>\t<message>``.
KEY = "gaitgl/rank_failure"
#: ``alone``: written after the failing rank left the collectives; ``sharing``: before it enters
#: the collective that shares it.
ALONE, SHARING = "alone", "sharing"


def describe(err: BaseException) -> str:
    """What other ranks are told of a failure: a family error's message, else type and message."""
    return str(err) if isinstance(err, GaitGLError) else f"{type(err).__name__}: {err}"


def failure_message(err: BaseException | None) -> str | None:
    """:func:`describe` of a failure, None for none (what a rank sends when all went well)."""
    return None if err is None else describe(err)


def _store() -> Any:
    """The default process group's store, or None (one process, no process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError):  # pragma: no cover - a group without a store
        return None


def announce(message: str, kind: str) -> bool:
    """Write this rank's failure for the other ranks' watchers; False when there is nobody to
    tell or another failure was written first (that one is the failure being reported)."""
    store = _store()
    if store is None:
        return False
    value = f"{dist.get_rank()}\t{kind}\t{message}"
    try:
        written = store.compare_set(KEY, "", value)
    except RuntimeError:  # the store's host (rank 0) is gone
        return False
    return bytes(written).decode() == value


class FailureWatch(Callback):
    """Runs the watcher thread while a Trainer call runs on more than one process; announces
    a failure that reaches Lightning's ``on_exception`` unshared.

    Args:
        grace_s: how long a rank may take to end by itself after a failure was announced before
            the sharing collective (saving the failure checkpoint included).
        poll_s: how often the watcher reads the store.
    """

    def __init__(self, grace_s: float = 60.0, poll_s: float = 0.2) -> None:
        self.grace_s = float(grace_s)
        self.poll_s = float(poll_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        """ddp_spawn pickles the trainer's callbacks into each rank: an Event (it holds a lock)
        and a thread cannot travel, and each rank starts its own watcher in ``setup``."""
        state = dict(self.__dict__)
        state["_stop"], state["_thread"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stop = threading.Event()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        store = _store()
        if store is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch,
            args=(store, dist.get_rank()),
            name="gaitgl-rank-failure",
            daemon=True,
        )
        self._thread.start()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The Trainer call ended (normally, or with an exception this rank raises itself)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.poll_s)
            self._thread = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """A failure that was not shared: tell the other ranks, then leave them a moment to
        read it before this rank (and the store it may host) goes away. Either way this rank
        is on its way out by itself: its watcher stops (Lightning calls no ``teardown`` hook
        of callbacks after an exception)."""
        unshared = not (reported_elsewhere(exception) or getattr(exception, "gaitgl_shared", False))
        if unshared and announce(describe(exception), ALONE):
            self._stop.wait(5 * self.poll_s)
        self._stop.set()
        self._thread = None

    # ----------------------------------------------------------------------------- thread
    def _watch(self, store: Any, rank: int) -> None:
        seen: tuple[int, str, str] | None = None
        deadline = 0.0
        clock = threading.Event()
        while not self._stop.is_set():
            clock.wait(self.poll_s)
            if self._stop.is_set():
                return
            try:
                if seen is None and store.check([KEY]):
                    source, kind, message = bytes(store.get(KEY)).decode().split("\t", 2)
                    seen = (int(source), kind, message)
                    if kind == ALONE and seen[0] == rank:
                        return  # this rank's own failure: it is on its way out, printing it
                    deadline = self.grace_s if kind == SHARING else 0.0
            except (RuntimeError, ValueError):
                if seen is None:
                    return  # the store's host ended without a failure: nothing to act on
            if seen is None:
                continue
            if deadline > 0:
                deadline -= self.poll_s
                continue
            self._end(rank, *seen)

    def _end(self, rank: int, source: int, kind: str, message: str) -> None:
        """End this process: it is stuck in a collective (or will be) since rank ``source``
        failed. Only the failing rank prints; exit status 1 everywhere."""
        if rank == source and kind == SHARING:
            from gaitgl_lightning.cli import error_line

            sys.stderr.write(error_line(message) + "\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


def shared(err: BaseException, quiet: bool) -> BaseException:
    """Mark ``err`` as shared with every rank by a collective (no watcher needs to act); with
    ``quiet`` the command line prints nothing for it on this rank (another rank reports it)."""
    err.gaitgl_shared = True  # type: ignore[attr-defined]
    if quiet:
        mark_reported_elsewhere(err)
    return err


# --------------------------------------------------------------------------------- collectives
def _all_gather_object(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (just ``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def share_failure(trainer: L.Trainer, failure: Exception | None, where: str) -> None:
    """A collective every rank enters: when any rank failed, every rank raises.

    One boolean all-reduce when all is well; the messages are gathered only on failure.
    A failing rank first writes its message where the other ranks' watchers read it
    (:class:`FailureWatch`): a rank held in another collective (SyncBN) still ends."""
    if failure is not None:
        announce(describe(failure), SHARING)
    if trainer.strategy.reduce_boolean_decision(failure is None, all=True):
        return
    raise_if_failed(trainer, _all_gather_object(failure_message(failure)), failure, where)


@contextmanager
def failures_shared(trainer: L.Trainer, where: str) -> Iterator[None]:
    """Run the block on every rank, then :func:`share_failure` what it raised (or nothing)."""
    failure: Exception | None = None
    try:
        yield
    except Exception as err:  # shared below, before any later collective
        failure = err
    share_failure(trainer, failure, where)


def raise_if_failed(
    trainer: L.Trainer, messages: list[str | None], own: Exception | None, where: str
) -> None:
    """Raise on every rank when any message (indexed by rank) reports a failure: the failing
    rank its own exception, the others ``RankFailure`` with its message. During ``fit`` a
    checkpoint is saved first (every rank takes part), so no training is lost."""
    failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
    if not failed:
        return
    saved = save_failure_checkpoint(trainer)
    rank, message = failed[0]
    note = f"; saved {saved}: fix the cause and resume with ckpt_path=last" if saved else ""
    # The line is printed once: by the lowest rank that failed with it.
    me = trainer.global_rank
    printed_below = any(m == failure_message(own) for r, m in failed if r < me)
    if own is not None and not isinstance(own, GaitGLError):
        log.error("rank %d failed %s: %s%s", me, where, describe(own), note)
        raise shared(own, quiet=printed_below)  # a bug: keep its traceback
    if own is not None:
        own.args = (f"{own}{note}",)
        raise shared(own, quiet=printed_below)
    raise shared(RankFailure(f"rank {rank} failed {where}: {message}{note}"), quiet=True)
