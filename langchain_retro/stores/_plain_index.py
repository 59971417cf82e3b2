"""The local thread index of the plain mode, for servers that do not list threads.

OpenAI's Assistants API has no ``GET /v1/threads``. Given ``index=`` (any
`BaseStore`, e.g. a `SQLiteStore` file), `AssistantsAPIStore` keeps there one
entry per server thread: the thread's metadata and three keys of its own
(`WIRE_ID`, `CREATED`, `STATE`), and lists threads from it with the store's
filters and cursors.

Two stores cannot be written in one transaction, so the writes are ordered to
make a crash between them harmless, and readers finish what a crash left:

* create: an entry ``creating`` (no server id yet), then the server's thread, then
  the entry ``ok`` with the thread's id. A crash before the server write leaves an
  entry nobody lists (it is removed after `CREATING_GRACE`); a crash after it
  leaves a server thread whose id was never returned to anyone, and is not listed.
* update and delete: the entry ``pending`` first, then the server write, then the
  entry ``ok`` (update) or removed (delete). Before every listing the reader reads
  each ``pending`` entry's thread from the server: gone, the entry is removed;
  there, the entry takes its metadata and is ``ok`` again.

So a listing never names a thread that does not exist (every entry it reads is
``ok``, and a delete makes its entry ``pending`` before the server deletes), nor
hides one that does and was returned to its creator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from langchain_retro._metadata import MetadataPatch
from langchain_retro.errors import ThreadNotFoundError
from langchain_retro.stores._plain_ops import OnIndex, Op
from langchain_retro.stores.base import BaseStore, StoredThread, ThreadQuery

__all__ = ["CREATED", "CREATING_GRACE", "STATE", "WIRE_ID", "ThreadIndex"]

WIRE_ID = "retro_wire_id"
"""The index metadata key holding the server's thread id."""
CREATED = "retro_wire_created"
"""The index metadata key holding the server thread's ``created_at``."""
STATE = "retro_wire_state"
"""``creating``, ``pending`` or ``ok``: where the entry's two writes are."""
CREATING_GRACE = 300.0
"""Seconds after which a ``creating`` entry is a crash's leftover and is removed."""

_OWN = (WIRE_ID, CREATED, STATE)


def _create(metadata: Mapping[str, str]) -> OnIndex:
    return OnIndex(
        call=lambda s: s.create_thread(metadata),
        acall=lambda s: s.acreate_thread(metadata),
    )


def _update(entry_id: str, patch: MetadataPatch) -> OnIndex:
    return OnIndex(
        call=lambda s: s.update_thread(entry_id, patch),
        acall=lambda s: s.aupdate_thread(entry_id, patch),
    )


def _delete(entry_id: str) -> OnIndex:
    return OnIndex(
        call=lambda s: s.delete_thread(entry_id),
        acall=lambda s: s.adelete_thread(entry_id),
    )


def _list(query: ThreadQuery) -> OnIndex:
    return OnIndex(
        call=lambda s: s.list_threads(query),
        acall=lambda s: s.alist_threads(query),
    )


def _entry_metadata(thread: StoredThread) -> dict[str, str]:
    return {
        **thread.metadata,
        WIRE_ID: thread.id,
        CREATED: str(thread.created_at),
        STATE: "ok",
    }


def _thread(entry: StoredThread) -> StoredThread:
    metadata = {k: v for k, v in entry.metadata.items() if k not in _OWN}
    return StoredThread(
        id=entry.metadata[WIRE_ID],
        created_at=int(entry.metadata.get(CREATED, entry.created_at)),
        metadata=metadata,
    )


class ThreadIndex:
    """The entries of one index store (see the module docstring)."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    def find(self, thread_id: str) -> Op[StoredThread | None]:
        """The thread's entry, if it has one."""
        found = yield _list(ThreadQuery(metadata={WIRE_ID: thread_id}, limit=1))
        return found[0] if found else None

    def begin_create(self, metadata: Mapping[str, str]) -> Op[str]:
        """Write the ``creating`` entry of a thread about to be made; its id."""
        entry = yield _create({**metadata, STATE: "creating"})
        return str(entry.id)

    def end_create(self, entry_id: str, thread: StoredThread) -> Op[None]:
        """Make the entry ``ok``, with the server's id for the thread."""
        metadata = _entry_metadata(thread)
        yield _update(entry_id, MetadataPatch(set=metadata))

    def pending(self, thread_id: str) -> Op[None]:
        """Mark a thread's entry ``pending`` before the server changes the thread."""
        entry = yield from self.find(thread_id)
        if entry is not None:
            yield _update(entry.id, MetadataPatch(set={STATE: "pending"}))

    def confirm(self, thread: StoredThread) -> Op[str]:
        """Write the thread as the server now has it, ``ok``; the entry's id."""
        entry = yield from self.find(thread.id)
        metadata = _entry_metadata(thread)
        if entry is None:
            made = yield _create(metadata)
            return str(made.id)
        stale = frozenset(entry.metadata) - set(metadata)
        yield _update(entry.id, MetadataPatch(set=metadata, remove=stale))
        return entry.id

    def ensure(self, thread: StoredThread) -> Op[str]:
        """The thread's entry id; written first for a thread made without it."""
        entry = yield from self.find(thread.id)
        if entry is not None:
            return entry.id
        return (yield from self.confirm(thread))

    def remove(self, thread_id: str) -> Op[None]:
        """Remove a deleted thread's entry."""
        entry = yield from self.find(thread_id)
        if entry is not None:
            yield _delete(entry.id)

    def _reconcile(self, fetch: Callable[[str], Op[StoredThread | None]]) -> Op[None]:
        """Finish what a crash (or a writer still at work) left undone."""
        for state in ("creating", "pending"):
            entries = yield _list(ThreadQuery(metadata={STATE: state}, limit=10_000))
            for entry in entries:
                if state == "creating":
                    if time.time() - entry.created_at > CREATING_GRACE:
                        yield _delete(entry.id)
                    continue
                thread = yield from fetch(entry.metadata[WIRE_ID])
                if thread is None:
                    yield _delete(entry.id)
                else:
                    yield from self.confirm(thread)

    def _entry_id(self, thread_id: str | None) -> Op[str | None]:
        if thread_id is None:
            return None
        entry = yield from self.find(thread_id)
        if entry is None:
            raise ThreadNotFoundError(thread_id, hint="(used as a cursor)")
        return entry.id

    def list(
        self,
        query: ThreadQuery,
        fetch: Callable[[str], Op[StoredThread | None]],
    ) -> Op[list[StoredThread]]:
        """The threads a query lists, read from the index once it is reconciled."""
        yield from self._reconcile(fetch)
        after = yield from self._entry_id(query.after)
        before = yield from self._entry_id(query.before)
        entries = yield _list(
            query.model_copy(
                update={
                    "metadata": {**query.metadata, STATE: "ok"},
                    "after": after,
                    "before": before,
                }
            )
        )
        return [_thread(entry) for entry in entries]
