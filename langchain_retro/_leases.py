"""Keeping a run's lease: renewed in the background, and listening for a cancel.

A run holds its thread's lease from `BaseStore.begin_run` to its last
`BaseStore.finish_run`. While it runs, the lease is renewed every third of its time
to live with `BaseStore.renew_run`, so it lapses only when the process holding it is
gone; each renewal also says whether someone asked to cancel the run, which sets
the keeper's ``cancelled`` event.

Sync runs share one daemon thread (`LeaseKeeper`); an async run has a task on its
event loop (`AsyncLeaseKeeper`). Both stop before the run's last write, so no
renewal lands after the lease was given back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from langchain_retro.stores.base import BaseStore, RunLeaseState

__all__ = ["AsyncLeaseKeeper", "HeldLease", "LeaseKeeper", "lease_lost"]

logger = logging.getLogger("langchain_retro.runs")


def lease_lost(thread_id: str) -> None:
    """Warn that a run lost its lease to another run."""
    logger.warning(
        "The run lease of thread %s expired and was taken by another run; two runs "
        "may now answer the same messages. Raise lease_ttl.",
        thread_id,
    )


def _noted(state: RunLeaseState, held: HeldLease) -> None:
    if state == "cancelling":
        held.cancelled.set()
    elif state == "lost" and not held.lost:
        held.lost = True
        lease_lost(held.thread_id)


@dataclass(eq=False)
class HeldLease:
    """A sync run's lease, renewed by `LeaseKeeper` until dropped."""

    store: BaseStore
    thread_id: str
    owner: str
    ttl: float
    due: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when a renewal finds that a cancel was asked."""
    lost: bool = False
    """Whether another run took the lease."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    dropped: bool = False


class LeaseKeeper:
    """One daemon thread renewing the leases of this process's sync runs in flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[HeldLease] = set()
        self._thread: threading.Thread | None = None
        self._wake = float("inf")  # when the loop wakes up next

    def hold(
        self, store: BaseStore, thread_id: str, owner: str, ttl: float
    ) -> HeldLease:
        """Start renewing a lease just taken."""
        held = HeldLease(store, thread_id, owner, ttl, time.monotonic() + ttl / 3)
        with self._cond:
            self._held.add(held)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="langchain-retro-leases", daemon=True
                )
                self._thread.start()
            if held.due < self._wake:  # else the loop wakes in time anyway
                self._cond.notify()
        return held

    def drop(self, held: HeldLease) -> None:
        """Stop renewing; waits for a renewal in flight, so none lands after."""
        with held.lock:
            held.dropped = True
        with self._cond:
            self._held.discard(held)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [h for h in self._held if h.due <= now]
                if not due:
                    self._wake = min((h.due for h in self._held), default=float("inf"))
                    timeout = self._wake - now if self._held else None
                    self._cond.wait(timeout)
                    self._wake = 0.0  # awake: hold() need not notify
                    continue
            for held in due:
                with held.lock:
                    if not held.dropped:
                        _renew(held)
                        held.due = time.monotonic() + held.ttl / 3


def _renew(held: HeldLease) -> None:
    try:
        state = held.store.renew_run(held.thread_id, owner=held.owner, ttl=held.ttl)
    except Exception:
        logger.exception("Cannot renew the run lease of thread %s", held.thread_id)
        return
    _noted(state, held)


KEEPER = LeaseKeeper()
"""The process's keeper of sync runs' leases."""


class AsyncLeaseKeeper:
    """An async run's lease renewals: a task on the run's event loop."""

    def __init__(
        self, store: BaseStore, thread_id: str, owner: str, ttl: float
    ) -> None:
        self.held = HeldLease(store, thread_id, owner, ttl, 0.0)
        self.cancel_event = asyncio.Event()
        """Set, on the run's loop, when a renewal finds that a cancel was asked."""
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._renewals())

    @property
    def cancelled(self) -> threading.Event:
        """Set when a renewal finds that a cancel was asked."""
        return self.held.cancelled

    async def stop(self) -> None:
        """Stop renewing; a renewal in flight lands first."""
        self._stop.set()
        await self._task

    async def _renewals(self) -> None:
        held = self.held
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), held.ttl / 3)
            except TimeoutError:
                pass
            else:
                return
            try:
                state = await held.store.arenew_run(
                    held.thread_id, owner=held.owner, ttl=held.ttl
                )
            except Exception:
                logger.exception(
                    "Cannot renew the run lease of thread %s", held.thread_id
                )
                continue
            _noted(state, held)
            if held.cancelled.is_set():
                self.cancel_event.set()
