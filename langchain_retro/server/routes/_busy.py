"""One active run per thread: refusing what a busy thread does not take.

OpenAI refused a second run on a thread with an active run, and a new message on
it, with a 400 naming the run. Here the thread's run lease in the store (the one
every run takes, on any worker) is the arbiter:

* a run is started by the engine, which takes the lease or finds it taken;
* a message is written by the store's `BaseStore.add_messages_if_idle`, which checks
  in the write's own transaction that no run holds the lease and that the newest
  run does not wait for tool outputs; so no run starts (or resumes) between the
  check and the write, on any worker (`message_busy` turns its refusal into the
  400).

A run that finds the lease held by something other than a run (a store's default
`add_messages_if_idle` holds it for a few milliseconds) waits for it (`LeaseWait`)
rather than being refused; only an active run is a 400.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from langchain_retro.errors import ThreadBusyError
from langchain_retro.server.errors import InvalidRequestError, RateLimitError
from langchain_retro.stores.base import BUSY_RUN_STATUSES, BaseStore, StoredRun

__all__ = [
    "LeaseWait",
    "active_run",
    "busy_run",
    "message_busy",
    "message_refused",
    "run_refused",
]

_FIRST_DELAY = 0.002
_MAX_DELAY = 0.05
_PATIENCE = 5.0
"""Seconds a request waits for other requests' message writes to let go."""


def run_refused(thread_id: str, run_id: str) -> InvalidRequestError:
    """OpenAI's 400 for a run asked on a thread with an active run."""
    return InvalidRequestError(
        f"Thread {thread_id} already has an active run {run_id}.",
        code="thread_busy",
    )


def message_refused(thread_id: str, run_id: str) -> InvalidRequestError:
    """OpenAI's 400 for a message added to a thread with an active run."""
    return InvalidRequestError(
        f"Can't add messages to {thread_id} while a run {run_id} is active."
    )


async def active_run(
    store: BaseStore, thread_id: str, statuses: frozenset[str] = BUSY_RUN_STATUSES
) -> StoredRun | None:
    """The thread's newest run if it is active or waiting for tool outputs.

    Args:
        store: The store.
        thread_id: The thread.
        statuses: The statuses that count as active.
    """
    newest = await store.alist_runs(thread_id, limit=1)
    return busy_run(newest[0] if newest else None, statuses)


def busy_run(
    newest: StoredRun | None, statuses: frozenset[str] = BUSY_RUN_STATUSES
) -> StoredRun | None:
    """The thread's newest run if it is active or waiting for tool outputs.

    Args:
        newest: The thread's newest run, if it has one.
        statuses: The statuses that count as active.
    """
    return newest if newest is not None and newest.status in statuses else None


class LeaseWait:
    """Waiting, after finding a thread's lease taken, for it to be free.

    Args:
        store: The store.
        thread_id: The thread.
        refused: The 400 to raise, given the active run's id, if a run holds it.
        statuses: The statuses of a run that holds it (a run resuming from
            ``requires_action`` waits for other writes, not for itself).
    """

    def __init__(
        self,
        store: BaseStore,
        thread_id: str,
        refused: Callable[[str, str], InvalidRequestError],
        statuses: frozenset[str] = BUSY_RUN_STATUSES,
    ) -> None:
        self.store = store
        self.thread_id = thread_id
        self.refused = refused
        self.statuses = statuses
        self._deadline = time.monotonic() + _PATIENCE
        self._delay = _FIRST_DELAY

    async def wait(self) -> None:
        """Sleep a little before trying again, unless a run holds the thread.

        Raises:
            InvalidRequestError: ``refused``, if the thread has an active run.
            RateLimitError: If other writes held it for ``_PATIENCE`` seconds.
        """
        run = await active_run(self.store, self.thread_id, self.statuses)
        if run is not None:
            raise self.refused(self.thread_id, run.id)
        if time.monotonic() >= self._deadline:
            raise RateLimitError(
                f"Thread {self.thread_id} is busy with other writes; retry shortly.",
                retry_after=0.5,
            )
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, _MAX_DELAY)


def message_busy(exc: ThreadBusyError) -> InvalidRequestError | RateLimitError:
    """The answer to a message the store refused: a 400 naming the run, else a 429.

    Args:
        exc: What `BaseStore.add_messages_if_idle` raised.
    """
    if exc.run_id is None or exc.thread_id is None:
        return RateLimitError(
            f"Thread {exc.thread_id} is busy with other writes; retry shortly.",
            retry_after=0.5,
        )
    return message_refused(exc.thread_id, exc.run_id)
