"""A failure that no collective can carry to the other ranks still ends every rank.

Why: failures inside a training or evaluation step are shared by a collective every rank enters
(``GaitGLModule._share_failure``). Two kinds cannot be shared that way: a failure outside the
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

import os
import sys
import threading
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from gaitgl_lightning.errors import GaitGLError, mark_reported_elsewhere, reported_elsewhere

#: The store key; its value is ``<rank>\t<kind>\t<message>``.
KEY = "gaitgl/rank_failure"
#: ``alone``: written after the failing rank left the collectives; ``sharing``: before it enters
#: the collective that shares it.
ALONE, SHARING = "alone", "sharing"


def describe(err: BaseException) -> str:
    """What other ranks are told of a failure: a family error's message, else type and message."""
    return str(err) if isinstance(err, GaitGLError) else f"{type(err).__name__}: {err}"


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
