"""Run leases, run records and usage of the plain mode, kept in this process.

A server that speaks only the Assistants API has no lease, and its runs are its
own (it would complete them itself): `AssistantsAPIStore`'s ``assistants``
protocol completes runs on the client, so their records live here, one `Ledger`
per server (base URL) shared by every store of the process. What that means:

* one active run per thread holds among the stores of this process, never across
  processes;
* runs, their statuses and the thread's usage totals are seen by this process
  only, and are gone when it ends (the messages a run wrote are on the server).

Every method takes the ledger's lock for a few dictionary operations and does no
I/O, so it is as safe to call from async code as from threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from langchain_retro.errors import RetroValueError, RunNotFoundError
from langchain_retro.stores._runs import (
    ACTIVE_RUN_STATUSES,
    NewRun,
    RunLeaseState,
    RunUpdate,
    RunUsage,
    StoredRun,
    cancel_requested,
    new_run_row,
    resumed_run,
    settle,
    updated_run,
)
from langchain_retro.stores.base import Lease

__all__ = ["Ledger", "forget_server", "ledger_for"]

_KNOWN_IDS = 100_000
"""How many (thread, message id) -> server id pairs a ledger remembers."""


@dataclass
class _Thread:
    runs: dict[str, StoredRun] = field(default_factory=dict)
    """The thread's runs in creation order."""
    owners: dict[str, str] = field(default_factory=dict)
    """Each run's lease owner."""
    usage: RunUsage = field(default_factory=RunUsage)
    """The running total of its runs' tokens."""


class Ledger:
    """One server's leases, runs and usage, and the message ids seen, in process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[str, float]] = {}
        self._threads: dict[str, _Thread] = {}
        self._run_ids: set[str] = set()
        self._ids: OrderedDict[tuple[str, str], str] = OrderedDict()

    # --- message ids -----------------------------------------------------------------

    def remember(self, thread_id: str, message_id: str, server_id: str) -> None:
        """Remember the server's id of a message the store names ``message_id``."""
        with self._lock:
            self._ids[thread_id, message_id] = server_id
            self._ids.move_to_end((thread_id, message_id))
            while len(self._ids) > _KNOWN_IDS:
                self._ids.popitem(last=False)

    def server_id(self, thread_id: str, message_id: str) -> str | None:
        """The server's id of a message, if this process has seen it."""
        with self._lock:
            return self._ids.get((thread_id, message_id))

    def forget(self, thread_id: str, message_id: str | None = None) -> None:
        """Forget a message's id, or (``None``) a deleted thread's runs and ids."""
        with self._lock:
            if message_id is not None:
                self._ids.pop((thread_id, message_id), None)
                return
            self._leases.pop(thread_id, None)
            gone = self._threads.pop(thread_id, None)
            if gone is not None:
                self._run_ids -= set(gone.runs)
            for key in [key for key in self._ids if key[0] == thread_id]:
                del self._ids[key]

    # --- leases ----------------------------------------------------------------------

    def _take(self, thread_id: str, owner: str, ttl: float, now: float) -> bool:
        held = self._leases.get(thread_id)
        if held is not None and held[0] != owner and held[1] >= now:
            return False
        self._leases[thread_id] = (owner, now + ttl)
        return True

    def acquire(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Take the thread's lease if free, expired or ``owner``'s."""
        with self._lock:
            return self._take(thread_id, owner, ttl, time.time())

    def release(self, thread_id: str, owner: str) -> None:
        """Give the lease back if ``owner`` holds it."""
        with self._lock:
            if self._leases.get(thread_id, ("", 0.0))[0] == owner:
                del self._leases[thread_id]

    def lease(self, thread_id: str) -> Lease | None:
        """The thread's lease if held and not expired."""
        with self._lock:
            held = self._leases.get(thread_id)
        if held is None or held[1] < time.time():
            return None
        return Lease(thread_id=thread_id, owner=held[0], expires_at=held[1])

    # --- runs ------------------------------------------------------------------------

    def knows(self, thread_id: str) -> bool:
        """Whether this process has runs of the thread."""
        with self._lock:
            return thread_id in self._threads

    def _settled(
        self, thread_id: str, run: StoredRun, owner: str, now: float
    ) -> StoredRun:
        held = self._leases.get(thread_id)
        return settle(
            run,
            held=held is not None and held[0] == owner,
            lease_expires_at=None if held is None else held[1],
            now=now,
        )

    def begin(  # noqa: PLR0917 - begin_run's arguments, as given
        self,
        thread_id: str,
        thread_metadata: dict[str, str],
        owner: str,
        ttl: float,
        new: NewRun,
        resume: bool,
    ) -> tuple[StoredRun, bool] | None:
        """Take the lease and create (or resume) the run: ``(run, resumed)``.

        Returns ``None``, with nothing written, if another owner holds the lease.

        Raises:
            RetroValueError: If a new run's id is already a run's.
        """
        now = time.time()
        with self._lock:
            thread = self._threads.get(thread_id) or _Thread()
            newest = next(reversed(thread.runs.values()), None)
            waiting = (
                newest
                if resume and newest and newest.status == "requires_action"
                else None
            )
            if waiting is None and new.id in self._run_ids:
                raise RetroValueError(
                    f"A run with id {new.id!r} already exists in this store, so a "
                    f"new run on thread {thread_id!r} cannot take it; nothing was "
                    "written and the thread's lease was not taken."
                )
            if not self._take(thread_id, owner, ttl, now):
                return None
            self._threads[thread_id] = thread
            for run_id, run in thread.runs.items():
                if run.status in ACTIVE_RUN_STATUSES and thread.owners[run_id] != owner:
                    thread.runs[run_id] = settle(
                        run, held=False, lease_expires_at=None, now=now
                    )
            if waiting is not None:
                started = resumed_run(waiting, int(now))
            else:
                started = new_run_row(new, thread_id, thread_metadata, int(now))
                self._run_ids.add(started.id)
            thread.runs[started.id] = started
            thread.owners[started.id] = owner
            run = settle(started, held=True, lease_expires_at=now + ttl, now=now)
        return run, waiting is not None

    def undo(self, thread_id: str, owner: str, run: StoredRun, resumed: bool) -> None:
        """Take back a `begin` whose server writes failed."""
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is not None and not resumed:
                thread.runs.pop(run.id, None)
                thread.owners.pop(run.id, None)
                self._run_ids.discard(run.id)
            if self._leases.get(thread_id, ("", 0.0))[0] == owner:
                del self._leases[thread_id]

    def run(self, thread_id: str, run_id: str) -> StoredRun:
        """A run, settled.

        Raises:
            RunNotFoundError: If this process has no such run on the thread.
        """
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is None or run_id not in thread.runs:
                raise RunNotFoundError(run_id, hint=f"(not on thread {thread_id!r})")
            return self._settled(
                thread_id, thread.runs[run_id], thread.owners[run_id], time.time()
            )

    def runs(self, thread_id: str) -> list[StoredRun]:
        """The thread's runs, oldest first, settled."""
        now = time.time()
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                return []
            return [
                self._settled(thread_id, run, thread.owners[run_id], now)
                for run_id, run in thread.runs.items()
            ]

    def cancelling(self, thread_id: str, run_id: str) -> bool:
        """Whether a cancel came for the run (its writes are then dropped)."""
        return self.run(thread_id, run_id).status in ("cancelling", "cancelled")

    def finish(
        self, thread_id: str, owner: str, run_id: str, update: RunUpdate | None
    ) -> StoredRun:
        """Write a run's update (``None``: it was cancelling, so it ends cancelled).

        The lease is given back when the run ended and ``owner`` holds it.
        """
        now = time.time()
        with self._lock:
            thread = self._threads[thread_id]
            stored = thread.runs[run_id]
            if update is None:
                ended = (
                    stored
                    if stored.status == "cancelled"
                    else updated_run(stored, RunUpdate(status="cancelled"), int(now))
                )
            else:
                ended = updated_run(stored, update, int(now))
                if update.usage is not None:
                    thread.usage = thread.usage + update.usage
            thread.runs[run_id] = ended
            held = self._leases.get(thread_id)
            if (
                held is not None
                and held[0] == owner
                and ended.status not in ACTIVE_RUN_STATUSES
            ):
                del self._leases[thread_id]
            return self._settled(thread_id, ended, thread.owners[run_id], now)

    def renew(self, thread_id: str, owner: str, ttl: float) -> RunLeaseState:
        """Renew ``owner``'s lease and say if its run may go on."""
        now = time.time()
        with self._lock:
            held = self._leases.get(thread_id)
            if held is None or held[0] != owner:
                return "lost"
            self._leases[thread_id] = (owner, now + ttl)
            thread = self._threads.get(thread_id) or _Thread()
            status = next(
                (
                    run.status
                    for run_id, run in reversed(thread.runs.items())
                    if thread.owners[run_id] == owner
                ),
                None,
            )
            if status == "expired":
                del self._leases[thread_id]
                return "lost"
        return "cancelling" if status in ("cancelling", "cancelled") else "held"

    def cancel(self, thread_id: str, run_id: str) -> StoredRun:
        """Ask a run to stop (`cancel_requested`); the lapsed status is written."""
        settled = self.run(thread_id, run_id)
        with self._lock:
            self._threads[thread_id].runs[run_id] = settled
            cancelled = cancel_requested(settled, int(time.time()))
            self._threads[thread_id].runs[run_id] = cancelled
        return cancelled

    def set_metadata(
        self, thread_id: str, run_id: str, metadata: dict[str, str]
    ) -> StoredRun:
        """Replace a run's metadata."""
        settled = self.run(thread_id, run_id)
        updated = settled.model_copy(update={"metadata": metadata})
        with self._lock:
            self._threads[thread_id].runs[run_id] = updated
        return updated

    def usage(self, thread_id: str) -> RunUsage:
        """The thread's usage total in this process."""
        with self._lock:
            thread = self._threads.get(thread_id)
            return RunUsage() if thread is None else thread.usage


_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


def ledger_for(base_url: str) -> Ledger:
    """The process's ledger of the server at ``base_url``."""
    with _ledgers_lock:
        return _ledgers.setdefault(base_url.rstrip("/"), Ledger())


def forget_server(base_url: str) -> None:
    """Drop the process's leases, runs and ids of a server (its data was reset)."""
    with _ledgers_lock:
        _ledgers.pop(base_url.rstrip("/"), None)
