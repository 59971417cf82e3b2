"""One active run per thread: refusing what a busy thread does not take.

OpenAI refused a second run on a thread with an active run, and a new message on
it, with a 400 naming the run. Here the thread's run lease in the store (the one
every run takes, on any worker) is the arbiter:

* a run is started by the engine, which takes the lease or finds it taken;
* a message is written holding the lease (`idle_thread`), after checking, under
  it, that the thread's newest run is not waiting for tool outputs; so no run
  starts (or resumes) between the check and the write, on any worker.

A message write holds the lease for a few milliseconds: a run or another message
that finds the lease taken by one waits for it (`LeaseWait`) rather than being
refused; only an active run is a 400.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from langchain_retro._ids import new_id
from langchain_retro.server.context import Context
from langchain_retro.server.errors import InvalidRequestError, RateLimitError
from langchain_retro.stores.base import ACTIVE_RUN_STATUSES, BaseStore, StoredRun

__all__ = [
    "BUSY_STATUSES",
    "LeaseWait",
    "active_run",
    "idle_thread",
    "message_refused",
    "run_refused",
]

BUSY_STATUSES = ACTIVE_RUN_STATUSES | {"requires_action"}
"""Statuses of a run that keeps its thread from taking another run or a message."""

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
    store: BaseStore, thread_id: str, statuses: frozenset[str] = BUSY_STATUSES
) -> StoredRun | None:
    """The thread's newest run if it is active or waiting for tool outputs.

    Args:
        store: The store.
        thread_id: The thread.
        statuses: The statuses that count as active.
    """
    newest = await store.alist_runs(thread_id, limit=1)
    if newest and newest[0].status in statuses:
        return newest[0]
    return None


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
        statuses: frozenset[str] = BUSY_STATUSES,
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


@asynccontextmanager
async def idle_thread(ctx: Context, thread_id: str) -> AsyncIterator[None]:
    """Hold the thread's run lease, no run being active, while the block writes.

    Raises:
        InvalidRequestError: `message_refused`, naming the thread's active run.
        RateLimitError: If other message writes held the thread for seconds.
    """
    store = ctx.store
    owner = new_id("write")
    waiting = LeaseWait(store, thread_id, message_refused)
    while not await store.aacquire_lease(
        thread_id, owner, ctx.state.settings.lease_ttl
    ):
        await waiting.wait()
    try:
        # Under the lease no run starts or resumes: this read holds until release.
        run = await active_run(store, thread_id)
        if run is not None:
            raise message_refused(thread_id, run.id)
        yield
    finally:
        await store.arelease_lease(thread_id, owner)
