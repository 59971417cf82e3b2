"""`AssistantThreadChatMessageHistory`: a thread as a LangChain chat message history."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from langchain_retro import _messages
from langchain_retro._metadata import MetadataPatch
from langchain_retro._planning import HWM_KEY
from langchain_retro.errors import (
    RetroValueError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from langchain_retro.records import BaseThread, ChatCompletionThread
from langchain_retro.stores.base import (
    THREAD_ASSISTANT_KEY,
    BaseStore,
    NewMessage,
    StoredThread,
    check_message_id,
)

__all__ = ["AssistantThreadChatMessageHistory"]

"""The metadata entry of a run thread that marks what its runs have answered."""

_HINT = (
    "A history reads an existing thread: create it first (BaseThread.create), or "
    "use AssistantThreadChatMessageHistory.for_session(store, session_id, ...) to "
    "find or create a thread for a free-form session id on first use."
)

_RESETHWM_KEY = MetadataPatch(clear_fields=frozenset({HWM_KEY}))


_OFFLOAD_ROWS = 100
"""Rebuilding more messages than this runs in a worker thread, off the event loop."""


_CACHE = _messages.MessageCache(50_000)
"""Messages rebuilt by any history of this process, shared: a chain reads its whole
history every turn, and only the messages added since need rebuilding.

Readers get shallow copies: a field reassigned on a returned message stays with that
reader. A nested dict or list changed in place would be seen by later reads in this
process (never by the store), as with ``InMemoryChatMessageHistory``, which hands out
its own objects."""


def _rebuild(
    rows: Sequence[tuple[str, str]], newest_first: bool, thread_id: str
) -> list[BaseMessage]:
    ordered = list(reversed(rows)) if newest_first else rows
    return _CACHE.rebuild(ordered, copy=True, thread_id=thread_id)


async def _arebuild(
    rows: Sequence[tuple[str, str]], newest_first: bool, thread_id: str
) -> list[BaseMessage]:
    # Validating thousands of messages takes tens of milliseconds: not on the loop.
    if len(rows) > _OFFLOAD_ROWS:
        return await asyncio.to_thread(_rebuild, rows, newest_first, thread_id)
    return _rebuild(rows, newest_first, thread_id)


def _new(thread_id: str, messages: Sequence[BaseMessage]) -> list[NewMessage]:
    """The rows to append; every message is converted and checked before any write.

    A message keeps its own ``id``; the store assigns ``msg_...`` to those without.
    """
    if isinstance(messages, str | bytes | BaseMessage) or not isinstance(
        messages, Sequence
    ):
        raise RetroValueError(
            f"add_messages takes a sequence of messages, not {messages!r}; use "
            "add_message for one message."
        )
    rows = _messages.to_payloads(messages)
    # An id given twice, or already in the thread, the store refuses before writing.
    return [
        NewMessage(
            role=role,
            payload=payload,
            id=None if message.id is None else check_message_id(message.id, thread_id),
        )
        for message, (role, payload) in zip(messages, rows, strict=True)
    ]


def _is_run_thread(thread: StoredThread) -> bool:
    """Whether runs answer this thread (a `ChatCompletionThread` or subclass)."""
    return THREAD_ASSISTANT_KEY in thread.metadata


def _has_reply(new: Sequence[NewMessage]) -> bool:
    return any(m.role == "assistant" for m in new)


class _not_found_hint:  # noqa: N801 - used as a function: with _not_found_hint(id)
    """Say how to create threads on first use when the history's thread is missing.

    A class rather than a generator context manager: it wraps every read, and
    costs a fraction of one.
    """

    __slots__ = ("thread_id",)

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if (
            isinstance(exc, ThreadNotFoundError)
            and exc.object_id == self.thread_id
            and _HINT not in str(exc)
        ):
            raise ThreadNotFoundError(self.thread_id, hint=_HINT) from exc


_SESSION_WAIT = 10.0
"""Seconds to wait for another process resolving the same new session."""
_SESSION_TTL = 30.0
"""Seconds a candidate's lease lasts: a crashed resolver cannot hold it for longer."""
_SESSION_POLL = 0.05
"""Seconds between tries while another process resolves the same session."""
_SESSION_SETTLE = 0.2
"""Seconds a candidate thread waits for candidates made at the same time to commit."""
_PENDING_KEY = "retro_session_pending"
"""Metadata entry of a candidate thread not yet chosen as its session's thread."""


class _Restart(Exception):  # noqa: N818 - control flow, never raised to callers
    """Our candidate thread was taken for abandoned and deleted: resolve again."""


class _Session:
    """How a history finds, or creates, the thread of a free-form session id.

    The lookup, the fields and the pending marker are worked out once; `resolve` and
    `aresolve` are the I/O, sync and async. Two processes resolving one new session
    end with one thread. Stores keep run leases for threads only, so each creates a
    candidate thread marked pending (which lookups skip) and holds that thread's
    lease, waits for candidates made at the same time to commit, and the oldest live
    candidate becomes the session's thread; the others are deleted unused, as are
    candidates whose resolver died (their lease lapsed).
    """

    def __init__(
        self,
        session_id: str,
        thread_class: type[BaseThread],
        key: str,
        fields: Mapping[str, Any],
    ) -> None:
        self.session_id = session_id
        self.thread_class = thread_class
        self.key = key
        extra = fields.get("metadata") or {}
        if not isinstance(extra, Mapping):
            raise RetroValueError(f"metadata must be a mapping, not {extra!r}.")
        digest = hashlib.sha256(f"{key}\x00{session_id}".encode()).hexdigest()[:32]
        self.marker = f"session_{digest}"
        pending = {**extra, _PENDING_KEY: self.marker}
        if key in thread_class.model_fields:  # a typed field
            self.lookup: dict[str, Any] = {key: session_id}
            self.create_fields = {**fields, key: session_id}
            self.candidate_fields = {**self.create_fields, "metadata": pending}
            self.settle_metadata: dict[str, str | None] = {_PENDING_KEY: None}
        else:
            self.lookup = {"metadata": {key: session_id}}
            self.create_fields = {**fields, "metadata": {**extra, key: session_id}}
            self.candidate_fields = {**fields, "metadata": pending}
            self.settle_metadata = {_PENDING_KEY: None, key: session_id}
        self.pending = {_PENDING_KEY: self.marker}

    def check(self, store: BaseStore) -> None:
        """Validate the thread to create, without writing (raises RetroValueError)."""
        draft = self.thread_class(**self.create_fields)
        draft._encoded_metadata(store.limits)

    def busy(self) -> ThreadBusyError:
        return ThreadBusyError(
            f"Another process has been creating the thread of session "
            f"{self.session_id!r} ({self.key}) for over {_SESSION_WAIT:g} s; it "
            f"gives up within {_SESSION_TTL:g} s. Try again then."
        )

    @staticmethod
    def settled(threads: Sequence[BaseThread]) -> str | None:
        """The oldest thread that is not a pending candidate."""
        return next((t.id for t in threads if _PENDING_KEY not in t.metadata), None)

    # --- sync ----------------------------------------------------------------------

    def find(self, store: BaseStore) -> str | None:
        page = self.thread_class.list(store, order="asc", limit=50, **self.lookup)
        return self.settled(page.data)

    def resolve(self, store: BaseStore) -> str:
        while True:
            found = self.find(store)
            if found is not None:
                return found
            try:
                return self.elect(store, f"session-{uuid.uuid4().hex}")
            except _Restart:
                continue

    @staticmethod
    def drop_if_dead(store: BaseStore, candidate: str, owner: str) -> bool:
        """Delete a candidate whose resolver is gone; whether it is out of the way.

        Its resolver holds its lease while it is pending, and settles it before
        giving the lease back: under the lease, a candidate still pending is
        abandoned. One already settled is left as is (the next lookup finds it).
        """
        try:
            if not store.acquire_lease(candidate, owner, _SESSION_TTL):
                return False
            if _PENDING_KEY not in store.get_thread(candidate).metadata:
                store.release_lease(candidate, owner)
                return False
            store.delete_thread(candidate)
        except ThreadNotFoundError:
            pass  # deleted by another resolver meanwhile
        return True

    def elect(self, store: BaseStore, owner: str) -> str:
        mine = self.thread_class.create(store, **self.candidate_fields)
        try:
            store.acquire_lease(mine.id, owner, _SESSION_TTL)
            time.sleep(_SESSION_SETTLE)
            deadline = time.monotonic() + _SESSION_WAIT
            while True:
                found = self.find(store)
                if found is not None:
                    store.delete_thread(mine.id)
                    return found
                page = self.thread_class.list(
                    store, order="asc", limit=50, metadata=self.pending
                )
                for candidate in page.data:
                    if candidate.id == mine.id:  # the oldest live one
                        mine.update(store, metadata=self.settle_metadata)
                        store.release_lease(mine.id, owner)
                        found = self.find(store) or mine.id
                        if found != mine.id:  # settled at the same time, older
                            store.delete_thread(mine.id)
                        return found
                    if not self.drop_if_dead(store, candidate.id, owner):
                        break  # an older live candidate: wait for it to settle
                if time.monotonic() >= deadline:
                    store.delete_thread(mine.id)
                    raise self.busy()
                time.sleep(_SESSION_POLL)
        except ThreadNotFoundError as exc:
            if exc.object_id == mine.id:
                raise _Restart from exc
            raise

    # --- async ---------------------------------------------------------------------

    async def afind(self, store: BaseStore) -> str | None:
        page = await self.thread_class.alist(
            store, order="asc", limit=50, **self.lookup
        )
        return self.settled(page.data)

    async def aresolve(self, store: BaseStore) -> str:
        while True:
            found = await self.afind(store)
            if found is not None:
                return found
            try:
                return await self.aelect(store, f"session-{uuid.uuid4().hex}")
            except _Restart:
                continue

    @staticmethod
    async def adrop_if_dead(store: BaseStore, candidate: str, owner: str) -> bool:
        """Async twin of `drop_if_dead`."""
        try:
            if not await store.aacquire_lease(candidate, owner, _SESSION_TTL):
                return False
            if _PENDING_KEY not in (await store.aget_thread(candidate)).metadata:
                await store.arelease_lease(candidate, owner)
                return False
            await store.adelete_thread(candidate)
        except ThreadNotFoundError:
            pass
        return True

    async def aelect(self, store: BaseStore, owner: str) -> str:
        mine = await self.thread_class.acreate(store, **self.candidate_fields)
        try:
            await store.aacquire_lease(mine.id, owner, _SESSION_TTL)
            await asyncio.sleep(_SESSION_SETTLE)
            deadline = time.monotonic() + _SESSION_WAIT
            while True:
                found = await self.afind(store)
                if found is not None:
                    await store.adelete_thread(mine.id)
                    return found
                page = await self.thread_class.alist(
                    store, order="asc", limit=50, metadata=self.pending
                )
                for candidate in page.data:
                    if candidate.id == mine.id:
                        await mine.aupdate(store, metadata=self.settle_metadata)
                        await store.arelease_lease(mine.id, owner)
                        found = await self.afind(store) or mine.id
                        if found != mine.id:
                            await store.adelete_thread(mine.id)
                        return found
                    if not await self.adrop_if_dead(store, candidate.id, owner):
                        break
                if time.monotonic() >= deadline:
                    await store.adelete_thread(mine.id)
                    raise self.busy()
                await asyncio.sleep(_SESSION_POLL)
        except ThreadNotFoundError as exc:
            if exc.object_id == mine.id:
                raise _Restart from exc
            raise


class AssistantThreadChatMessageHistory(BaseChatMessageHistory):
    """The messages of one thread, as a LangChain chat message history.

    Works with any store, as the ``get_session_history`` of
    ``RunnableWithMessageHistory`` (sync, async and streaming).

    Setup:
        .. code-block:: python

            from langchain_retro import (
                AssistantThreadChatMessageHistory, BaseThread, SQLiteStore,
            )

            store = SQLiteStore()
            thread = BaseThread.create(store)
            history = AssistantThreadChatMessageHistory(store, thread.id)

    Read and write:
        .. code-block:: python

            history.add_messages([HumanMessage("hi"), AIMessage("hello")])  # atomic
            history.messages        # [HumanMessage(id="msg_..."), AIMessage(...)]
            await history.aget_messages()

    Message ids: a message keeps the ``id`` it comes with (as
    ``InMemoryChatMessageHistory`` does), so code that correlates messages by id keeps
    working; a message without one gets the store's ``msg_...`` id. Ids are unique
    within a thread: adding a message whose id is already in the thread (or twice in
    one batch) raises `MessageIdConflictError` and writes nothing of the batch.

    Run threads: on a thread that runs answer (a `ChatCompletionThread`, whose
    metadata names an ``assistant_id``), adding an assistant reply marks the messages
    before it as answered (moves the thread's ``hwm`` in the same transaction), so a
    `ThreadRunner` on the thread never answers them again.

    An unknown thread id raises `ThreadNotFoundError` (a ``LookupError``) on first use.
    For session ids of your own (``"user-42"``), `for_session` finds or creates the
    session's thread on first use.

    Messages rebuilt from the store are cached per process by id and stored payload,
    so reading a long history again rebuilds only what was added. Reads return
    shallow copies: treat nested dicts and lists as read-only.
    """

    def __init__(
        self, store: BaseStore, thread_id: str, *, window: int | None = None
    ) -> None:
        """Bind a history to a thread.

        Args:
            store: The store holding the thread.
            thread_id: The thread's id.
            window: If set, `messages` returns only the newest ``window`` messages,
                read from the store without touching the rest of the thread.
        """
        if not isinstance(thread_id, str):
            raise RetroValueError(f"thread_id must be a string, not {thread_id!r}")
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise RetroValueError(
                f"window must be a positive number of messages, not {window!r}"
            )
        self.store = store
        self.window = window
        self._thread_id: str | None = thread_id
        self._session: _Session | None = None
        self._run_thread: bool | None = None

    @classmethod
    def for_session(
        cls,
        store: BaseStore,
        session_id: str,
        *,
        thread_class: type[BaseThread] = ChatCompletionThread,
        key: str = "session_id",
        window: int | None = None,
        **thread_fields: Any,
    ) -> Self:
        """A history for a free-form session id, its thread created on first use.

        Use it as the ``get_session_history`` of ``RunnableWithMessageHistory`` when
        session ids are your own (``"user-42"``) rather than thread ids. Making the
        history does no I/O (the factory is called synchronously, even under
        ``ainvoke``); its first use finds the thread whose metadata (or typed field)
        ``key`` is ``session_id``, else creates one, synchronously in sync methods and
        without blocking the event loop in async ones. Two processes using one new
        session at once end with one thread.

        Example:
            .. code-block:: python

                chain = RunnableWithMessageHistory(
                    prompt | llm,
                    lambda session_id: AssistantThreadChatMessageHistory.for_session(
                        store, session_id, assistant_id=assistant.id
                    ),
                    input_messages_key="input",
                    history_messages_key="history",
                )
                config = {"configurable": {"session_id": "user-42"}}
                chain.invoke({"input": "hi"}, config)  # creates the thread
                chain.invoke({"input": "again"}, config)  # finds it

        Args:
            store: The store holding the threads.
            session_id: The session id, stored in the thread's ``key`` entry.
            thread_class: The class of the thread created on first use;
                `ChatCompletionThread` (the default) needs ``assistant_id=...``.
                Use `BaseThread` for a history without runs.
            key: The metadata key (or typed field of ``thread_class``) holding the
                session id.
            window: As in the constructor.
            **thread_fields: The fields of the thread created on first use.

        Raises:
            RetroValueError: If the session id or key is not a non-empty string, or
                the thread it would create does not validate (checked now, nothing
                written).
        """
        for name, value in (("session_id", session_id), ("key", key)):
            if not isinstance(value, str) or not value:
                raise RetroValueError(
                    f"{name} must be a non-empty string, not {value!r}."
                )
        if not (
            isinstance(thread_class, type) and issubclass(thread_class, BaseThread)
        ):
            raise RetroValueError(
                f"thread_class must be BaseThread or a subclass, not {thread_class!r}."
            )
        session = _Session(session_id, thread_class, key, thread_fields)
        session.check(store)
        history = cls(store, "", window=window)
        history._thread_id = None
        history._session = session
        return history

    @property
    def thread_id(self) -> str:
        """The thread's id.

        A history made by `for_session` finds or creates its thread on first read
        of this property or first use, with blocking I/O here: async code should
        await `aget_thread_id` instead.
        """
        if self._thread_id is None:
            assert self._session is not None  # noqa: S101 - set by for_session
            self._thread_id = self._session.resolve(self.store)
        return self._thread_id

    async def aget_thread_id(self) -> str:
        """Async twin of `thread_id`."""
        if self._thread_id is None:
            assert self._session is not None  # noqa: S101 - set by for_session
            self._thread_id = await self._session.aresolve(self.store)
        return self._thread_id

    def __repr__(self) -> str:
        if self._thread_id is None and self._session is not None:
            where = f"session {self._session.key}={self._session.session_id!r}"
            return f"AssistantThreadChatMessageHistory({self.store!r}, {where})"
        return f"AssistantThreadChatMessageHistory({self.store!r}, {self._thread_id!r})"

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The thread's messages, oldest first (the newest ``window`` if set)."""
        thread_id = self.thread_id
        with _not_found_hint(thread_id):
            if self.window is None:
                rows = self.store.list_message_payloads(thread_id)
            else:
                rows = self.store.list_message_payloads(
                    thread_id, order="desc", limit=self.window
                )
        return _rebuild(rows, self.window is not None, thread_id)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of `messages`."""
        thread_id = await self.aget_thread_id()
        with _not_found_hint(thread_id):
            if self.window is None:
                rows = await self.store.alist_message_payloads(thread_id)
            else:
                rows = await self.store.alist_message_payloads(
                    thread_id, order="desc", limit=self.window
                )
        return await _arebuild(rows, self.window is not None, thread_id)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages as one atomic batch: all are stored, or none.

        Raises:
            MessageIdConflictError: If a message's ``id`` is already in the thread.
            MessageConversionError: If a message cannot be stored.
        """
        thread_id = self.thread_id
        new = _new(thread_id, messages)
        reply = _has_reply(new)
        with _not_found_hint(thread_id):
            if reply and self._run_thread is None:
                self._run_thread = _is_run_thread(self.store.get_thread(thread_id))
            if reply and self._run_thread:
                self.store.add_messages(thread_id, new, hwm_key=HWM_KEY)
            else:  # a plain thread has no hwm: leave the store nothing to look up
                self.store.add_messages(thread_id, new)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of `add_messages`."""
        thread_id = await self.aget_thread_id()
        new = _new(thread_id, messages)
        reply = _has_reply(new)
        with _not_found_hint(thread_id):
            if reply and self._run_thread is None:
                thread = await self.store.aget_thread(thread_id)
                self._run_thread = _is_run_thread(thread)
            if reply and self._run_thread:
                await self.store.aadd_messages(thread_id, new, hwm_key=HWM_KEY)
            else:
                await self.store.aadd_messages(thread_id, new)

    def add_message(self, message: BaseMessage) -> None:
        """Append one message."""
        self.add_messages([message])

    def clear(self) -> None:
        """Delete the thread's messages and reset its ``hwm``; the thread stays."""
        thread_id = self.thread_id
        with _not_found_hint(thread_id):
            self.store.clear_messages(thread_id, thread_patch=_RESETHWM_KEY)

    async def aclear(self) -> None:
        """Async twin of `clear`."""
        thread_id = await self.aget_thread_id()
        with _not_found_hint(thread_id):
            await self.store.aclear_messages(thread_id, thread_patch=_RESETHWM_KEY)
