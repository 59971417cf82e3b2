"""Where the plain mode keeps run leases, run records and usage: two run planes.

A server that speaks only the Assistants API keeps no lease, and the runs the
client completes are no runs of its own. `AssistantsAPIStore(protocol="assistants")`
keeps them in one of two places:

* `LocalRuns`, without an index: in this process (`_plain_ledger`). One active run
  per thread holds among the process's stores; runs and usage end with it.
* `IndexedRuns`, with ``index=``: in the index store, on the thread's entry (its
  lease, its runs and its usage totals, with the index's own transactions). One
  active run per thread then holds across every process that shares the index (one
  SQLite file on a host, a PostgreSQL schema across hosts), and runs are read,
  listed and cancelled from any of them.

Both answer with the server's thread ids; every method is an `Op`, so the store
drives it sync or async like any other operation.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from langchain_retro.errors import (
    RunNotFoundError,
    RunStateError,
    ThreadNotFoundError,
)
from langchain_retro.stores._plain_index import ThreadIndex
from langchain_retro.stores._plain_ledger import Ledger
from langchain_retro.stores._plain_ops import OnIndex, Op
from langchain_retro.stores.base import (
    LastError,
    Lease,
    NewRun,
    Order,
    RunLeaseState,
    RunUpdate,
    RunUsage,
    StoredRun,
    StoredThread,
)

__all__ = ["IndexedRuns", "LocalRuns", "RunPlane"]

T = TypeVar("T")


def _done(value: T) -> Op[T]:
    """An operation that needs no call: its value."""
    yield from ()
    return value


class RunPlane:
    """The run leases, records and usage of the plain mode (see the module)."""

    def knows(self, thread_id: str) -> Op[bool]:
        """Whether the plane holds anything of the thread.

        If not, the store checks that the thread exists before saying "no run".
        """
        raise NotImplementedError

    def acquire(self, thread: StoredThread, owner: str, ttl: float) -> Op[bool]:
        """Take the thread's lease if free, expired or ``owner``'s."""
        raise NotImplementedError

    def release(self, thread_id: str, owner: str) -> Op[None]:
        """Give the lease back if ``owner`` holds it."""
        raise NotImplementedError

    def lease(self, thread_id: str) -> Op[Lease | None]:
        """The thread's lease if held and not expired."""
        raise NotImplementedError

    def begin(
        self,
        thread: StoredThread,
        owner: str,
        ttl: float,
        new: NewRun,
        *,
        resume: bool,
    ) -> Op[tuple[StoredRun, bool] | None]:
        """Take the lease and create (or resume) the run: ``(run, resumed)``."""
        raise NotImplementedError

    def undo(
        self, thread_id: str, owner: str, run: StoredRun, *, resumed: bool
    ) -> Op[None]:
        """Take back a `begin` whose writes to the server failed."""
        raise NotImplementedError

    def run(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        """A run, settled; raises `RunNotFoundError`."""
        raise NotImplementedError

    def finish(
        self, thread_id: str, owner: str, run_id: str, update: RunUpdate | None
    ) -> Op[StoredRun]:
        """Write a run's update (``None``: it was cancelling, so it ends cancelled)."""
        raise NotImplementedError

    def renew(self, thread_id: str, owner: str, ttl: float) -> Op[RunLeaseState]:
        """Renew ``owner``'s lease and say if its run may go on."""
        raise NotImplementedError

    def runs(
        self,
        thread_id: str,
        *,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> Op[list[StoredRun]]:
        """A page of the thread's runs (see `BaseStore.list_runs`)."""
        raise NotImplementedError

    def cancel(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        """Ask a run to stop (`cancel_requested`)."""
        raise NotImplementedError

    def set_metadata(
        self, thread_id: str, run_id: str, metadata: dict[str, str]
    ) -> Op[StoredRun]:
        """Replace a run's metadata."""
        raise NotImplementedError

    def usage(self, thread_id: str) -> Op[RunUsage]:
        """The thread's usage total."""
        raise NotImplementedError


class LocalRuns(RunPlane):
    """Runs in this process: the server's `Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def knows(self, thread_id: str) -> Op[bool]:
        return _done(self.ledger.knows(thread_id))

    def acquire(self, thread: StoredThread, owner: str, ttl: float) -> Op[bool]:
        return _done(self.ledger.acquire(thread.id, owner, ttl))

    def release(self, thread_id: str, owner: str) -> Op[None]:
        self.ledger.release(thread_id, owner)
        return _done(None)

    def lease(self, thread_id: str) -> Op[Lease | None]:
        return _done(self.ledger.lease(thread_id))

    def begin(
        self,
        thread: StoredThread,
        owner: str,
        ttl: float,
        new: NewRun,
        *,
        resume: bool,
    ) -> Op[tuple[StoredRun, bool] | None]:
        began = self.ledger.begin(
            thread.id, dict(thread.metadata), owner, ttl, new, resume
        )
        return _done(began)

    def undo(
        self, thread_id: str, owner: str, run: StoredRun, *, resumed: bool
    ) -> Op[None]:
        self.ledger.undo(thread_id, owner, run, resumed)
        return _done(None)

    def run(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        return _done(self.ledger.run(thread_id, run_id))

    def finish(
        self, thread_id: str, owner: str, run_id: str, update: RunUpdate | None
    ) -> Op[StoredRun]:
        return _done(self.ledger.finish(thread_id, owner, run_id, update))

    def renew(self, thread_id: str, owner: str, ttl: float) -> Op[RunLeaseState]:
        return _done(self.ledger.renew(thread_id, owner, ttl))

    def runs(
        self,
        thread_id: str,
        *,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> Op[list[StoredRun]]:
        runs = self.ledger.runs(thread_id)
        ids = [run.id for run in runs]
        for cursor in (after, before):
            if cursor is not None and cursor not in ids:
                raise RunNotFoundError(
                    cursor, hint=f"(used as a cursor on thread {thread_id!r})"
                )
        low = 0 if after is None else ids.index(after) + 1
        high = len(runs) if before is None else ids.index(before)
        runs = runs[low:high]
        if limit == 0:
            return _done([])
        if order == "desc":
            return _done(runs[::-1][:limit])
        return _done(runs[-limit:] if before is not None else runs[:limit])

    def cancel(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        return _done(self.ledger.cancel(thread_id, run_id))

    def set_metadata(
        self, thread_id: str, run_id: str, metadata: dict[str, str]
    ) -> Op[StoredRun]:
        return _done(self.ledger.set_metadata(thread_id, run_id, metadata))

    def usage(self, thread_id: str) -> Op[RunUsage]:
        return _done(self.ledger.usage(thread_id))


_ABANDONED = LastError(
    code="server_error",
    message="The run's input could not be written to the server; it did not start.",
)


class IndexedRuns(RunPlane):
    """Runs in the index store, on each thread's entry (see the module)."""

    def __init__(self, index: ThreadIndex) -> None:
        self.index = index

    def _entry(self, thread_id: str) -> Op[str | None]:
        entry = yield from self.index.find(thread_id)
        return None if entry is None else entry.id

    def _call(
        self,
        thread_id: str,
        entry: str,
        sync: Callable[[Any], Any],
        asynchronous: Callable[[Any], Any],
    ) -> Generator[OnIndex, Any, Any]:
        """One index call on the thread's ``entry``, its errors naming the thread."""
        try:
            return (yield OnIndex(call=sync, acall=asynchronous))
        except ThreadNotFoundError as exc:
            raise ThreadNotFoundError(thread_id) from exc
        except RunNotFoundError as exc:
            raise RunNotFoundError(
                exc.object_id, hint=f"(not on thread {thread_id!r})"
            ) from exc
        except RunStateError as exc:
            raise RunStateError(
                str(exc).replace(entry, thread_id),
                thread_id=thread_id,
                run_id=exc.run_id,
                status=exc.status,
            ) from exc

    def _known(self, thread_id: str, run_id: str) -> Op[str]:
        entry = yield from self._entry(thread_id)
        if entry is None:
            raise RunNotFoundError(run_id, hint=f"(not on thread {thread_id!r})")
        return entry

    def knows(self, thread_id: str) -> Op[bool]:
        return (yield from self._entry(thread_id)) is not None

    def acquire(self, thread: StoredThread, owner: str, ttl: float) -> Op[bool]:
        entry = yield from self.index.ensure(thread)
        return bool(
            (
                yield from self._call(
                    thread.id,
                    entry,
                    lambda s: s.acquire_lease(entry, owner, ttl),
                    lambda s: s.aacquire_lease(entry, owner, ttl),
                )
            )
        )

    def release(self, thread_id: str, owner: str) -> Op[None]:
        entry = yield from self._entry(thread_id)
        if entry is not None:
            yield from self._call(
                thread_id,
                entry,
                lambda s: s.release_lease(entry, owner),
                lambda s: s.arelease_lease(entry, owner),
            )

    def lease(self, thread_id: str) -> Op[Lease | None]:
        entry = yield from self._entry(thread_id)
        if entry is None:
            return None
        held: Lease | None = yield from self._call(
            thread_id,
            entry,
            lambda s: s.get_lease(entry),
            lambda s: s.aget_lease(entry),
        )
        return (
            None if held is None else held.model_copy(update={"thread_id": thread_id})
        )

    def begin(
        self,
        thread: StoredThread,
        owner: str,
        ttl: float,
        new: NewRun,
        *,
        resume: bool,
    ) -> Op[tuple[StoredRun, bool] | None]:
        entry = yield from self.index.ensure(thread)
        options: dict[str, Any] = {
            "owner": owner,
            "ttl": ttl,
            "run": new,
            "context_limit": 0,
            "resume": resume,
        }
        start = yield from self._call(
            thread.id,
            entry,
            lambda s: s.begin_run(entry, **options),
            lambda s: s.abegin_run(entry, **options),
        )
        if start is None:
            return None
        run = start.run.model_copy(update={"thread_id": thread.id})
        return run, bool(start.resumed)

    def undo(
        self, thread_id: str, owner: str, run: StoredRun, *, resumed: bool
    ) -> Op[None]:
        # An index keeps every run it began: this one ends failed, its lease given back.
        yield from self.finish(
            thread_id, owner, run.id, RunUpdate(status="failed", last_error=_ABANDONED)
        )

    def run(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        entry = yield from self._known(thread_id, run_id)
        run: StoredRun = yield from self._call(
            thread_id,
            entry,
            lambda s: s.get_run(entry, run_id),
            lambda s: s.aget_run(entry, run_id),
        )
        return run.model_copy(update={"thread_id": thread_id})

    def finish(
        self, thread_id: str, owner: str, run_id: str, update: RunUpdate | None
    ) -> Op[StoredRun]:
        entry = yield from self._known(thread_id, run_id)
        options: dict[str, Any] = {
            "owner": owner,
            "run_id": run_id,
            # A cancelling run ends cancelled whatever the update says.
            "update": update or RunUpdate(status="cancelled"),
        }
        saved = yield from self._call(
            thread_id,
            entry,
            lambda s: s.finish_run(entry, **options),
            lambda s: s.afinish_run(entry, **options),
        )
        return saved.run.model_copy(update={"thread_id": thread_id})  # type: ignore[no-any-return]

    def renew(self, thread_id: str, owner: str, ttl: float) -> Op[RunLeaseState]:
        entry = yield from self._entry(thread_id)
        if entry is None:
            return "lost"
        state: RunLeaseState = yield from self._call(
            thread_id,
            entry,
            lambda s: s.renew_run(entry, owner=owner, ttl=ttl),
            lambda s: s.arenew_run(entry, owner=owner, ttl=ttl),
        )
        return state

    def runs(
        self,
        thread_id: str,
        *,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> Op[list[StoredRun]]:
        entry = yield from self._entry(thread_id)
        if entry is None:
            for cursor in (after, before):
                if cursor is not None:
                    raise RunNotFoundError(
                        cursor, hint=f"(used as a cursor on thread {thread_id!r})"
                    )
            return []
        options: dict[str, Any] = {
            "after": after,
            "before": before,
            "order": order,
            "limit": limit,
        }
        runs: list[StoredRun] = yield from self._call(
            thread_id,
            entry,
            lambda s: s.list_runs(entry, **options),
            lambda s: s.alist_runs(entry, **options),
        )
        return [run.model_copy(update={"thread_id": thread_id}) for run in runs]

    def cancel(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        entry = yield from self._known(thread_id, run_id)
        run: StoredRun = yield from self._call(
            thread_id,
            entry,
            lambda s: s.cancel_run(entry, run_id),
            lambda s: s.acancel_run(entry, run_id),
        )
        return run.model_copy(update={"thread_id": thread_id})

    def set_metadata(
        self, thread_id: str, run_id: str, metadata: dict[str, str]
    ) -> Op[StoredRun]:
        entry = yield from self._known(thread_id, run_id)
        run: StoredRun = yield from self._call(
            thread_id,
            entry,
            lambda s: s.update_run_metadata(entry, run_id, metadata),
            lambda s: s.aupdate_run_metadata(entry, run_id, metadata),
        )
        return run.model_copy(update={"thread_id": thread_id})

    def usage(self, thread_id: str) -> Op[RunUsage]:
        entry = yield from self._entry(thread_id)
        if entry is None:
            return RunUsage()
        total: RunUsage = yield from self._call(
            thread_id,
            entry,
            lambda s: s.get_thread_usage(entry),
            lambda s: s.aget_thread_usage(entry),
        )
        return total
